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


def regression_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The configured regression loss: ``cosine`` or ``mse``."""
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
