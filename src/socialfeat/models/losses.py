"""Losses and validation metrics of the heads: pure functions of tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -1  # pseudo label of an item masked from a classification target (e.g. no comments)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity, averaged: only the direction of a factor vector matters for ranking."""
    return (1.0 - F.cosine_similarity(pred.float(), target.float(), dim=1, eps=1e-8)).mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per dimension."""
    return F.mse_loss(pred.float(), target.float())


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled rows; zero (not NaN) when a batch has none, so a step never breaks."""
    keep = labels != IGNORE
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep].float(), labels[keep].long())


def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per tag over the rows with at least one tag (an untagged item says nothing about which
    tags it lacks); zero when a batch has none."""
    keep = labels.sum(1) > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[keep].float(), labels[keep].float())


def top1_tag(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Validation: share of tagged rows whose highest-scored tag is one of theirs (NaN when none is tagged)."""
    keep = labels.sum(1) > 0
    if not bool(keep.any()):
        return float("nan")
    best = logits[keep].argmax(1)
    return float(labels[keep].gather(1, best[:, None]).float().mean())


def audience_loss(pred: torch.Tensor, target: torch.Tensor, user_root: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the scores u·v that all users would give the item, divided by the mean squared score
    of a zero prediction's error scale (tr M): with M = E[u uᵀ] = L Lᵀ, E_u[(u·(v̂ − v))²] = ‖(v̂ − v) L‖². Errors
    in the directions users' tastes vary along (and in popularity, the mean user) cost most; the rest is free."""
    err = (pred.float() - target.float()) @ user_root.float()
    return err.pow(2).sum(1).mean() / user_root.float().pow(2).sum().clamp_min(1e-12)


def user_moment_root(user_factors: torch.Tensor) -> torch.Tensor:
    """L with L Lᵀ = E[u uᵀ] over users (symmetric square root: defined even when the moment is singular)."""
    u = user_factors.double()
    moment = u.T @ u / max(len(u), 1)
    values, vectors = torch.linalg.eigh(moment)
    return (vectors * values.clamp_min(0).sqrt()).float()


def regression_loss(
    kind: str, pred: torch.Tensor, target: torch.Tensor, user_root: torch.Tensor | None = None
) -> torch.Tensor:
    """The configured regression loss: ``cosine``, ``mse`` or ``audience`` (needs ``user_root``)."""
    if kind == "audience":
        assert user_root is not None, "the audience loss needs the users' factor moment"
        return audience_loss(pred, target, user_root)
    return cosine_loss(pred, target) if kind == "cosine" else mse_loss(pred, target)


def mean_cosine(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Validation: mean cosine similarity of predicted and true factors."""
    return float(F.cosine_similarity(pred.float(), target.float(), dim=1, eps=1e-8).mean())


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Validation: top-1 accuracy over labelled rows (NaN when none are labelled)."""
    keep = labels != IGNORE
    if not bool(keep.any()):
        return float("nan")
    return float((logits[keep].argmax(1) == labels[keep]).float().mean())


# ---------------------------------------------------------------------------------------------- ranking
def _user_logits(users: torch.Tensor, items: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """users U×f, items B×f → U×B scores u·v / τ."""
    return users.float() @ items.float().T / tau


def rank_temperature(users: torch.Tensor, teacher_items: torch.Tensor, scale: float) -> torch.Tensor:
    """τ on the teacher's own score scale: ``scale`` × the spread of u·v over the batch (detached), so one
    setting suits raw and normalised factors alike."""
    scores = users.float() @ teacher_items.float().T
    return (scale * scores.detach().std()).clamp_min(1e-6)


def listwise_kl_loss(
    pred: torch.Tensor, teacher: torch.Tensor, users: torch.Tensor, tau: torch.Tensor | float
) -> torch.Tensor:
    """Mean over users of KL(softmax(u·v/τ) ‖ softmax(u·v̂/τ)) over the batch's items: each user's ranking of the
    batch, as the ALS teacher scores it, is what the image must reproduce — not each score on its own."""
    target = F.log_softmax(_user_logits(users, teacher, tau), dim=1)
    logq = F.log_softmax(_user_logits(users, pred, tau), dim=1)
    return (target.exp() * (target - logq)).sum(1).mean()


def listwise_softmax_loss(
    pred: torch.Tensor, users: torch.Tensor, positives: torch.Tensor, tau: torch.Tensor | float
) -> torch.Tensor:
    """Sampled softmax over the batch's items: for each user with at least one real interaction among them, the
    mean −log p(item | user) of those items, p = softmax(u·v̂/τ). Users without one are skipped; zero (not NaN)
    when none has."""
    pos = positives.float()
    counts = pos.sum(1)
    keep = counts > 0
    if not bool(keep.any()):
        return pred.sum() * 0.0
    logp = F.log_softmax(_user_logits(users[keep], pred, tau), dim=1)
    return (-(logp * pos[keep]).sum(1) / counts[keep]).mean()


# ---------------------------------------------------------------------------------------------- preservation
def feature_distillation(features: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Mean over images of ‖f(x) − f₀(x)‖² / ‖f₀(x)‖²: how far the pooled features moved from the frozen starting
    backbone's, relative to their size (so the weight means the same for any backbone width)."""
    f, f0 = features.float(), start.float()
    return ((f - f0).pow(2).sum(1) / f0.pow(2).sum(1).clamp_min(1e-12)).mean()


def l2sp_penalty(params: list[torch.Tensor], start: list[torch.Tensor]) -> torch.Tensor:
    """L2-SP (Li et al., 2018): ½ Σ‖w − w₀‖² over the fine-tuned backbone weights — a pull toward the starting
    weights instead of weight decay's pull toward zero, which would forget what the start knew."""
    if not params:
        return torch.zeros(())
    return 0.5 * sum((p.float() - p0.float()).pow(2).sum() for p, p0 in zip(params, start, strict=True))
