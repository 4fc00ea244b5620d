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
