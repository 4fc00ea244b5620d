"""The ranking and knowledge-preserving losses against naive loops, and the distillation term's zero start."""

from __future__ import annotations

import math

import pytest
import torch

from socialfeat.models.backbones import create_backbone
from socialfeat.models.heads import FeatureModel, apply_finetune
from socialfeat.models.losses import (
    feature_distillation,
    l2sp_penalty,
    listwise_kl_loss,
    listwise_softmax_loss,
    rank_temperature,
)
from socialfeat.preservation import StartingPoint, Teacher


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def test_listwise_kl_matches_a_loop_over_users_and_items() -> None:
    g = torch.Generator().manual_seed(1)
    users, pred, teacher = (
        torch.randn(7, 3, generator=g),
        torch.randn(5, 3, generator=g),
        torch.randn(5, 3, generator=g),
    )
    tau = 0.7
    total = 0.0
    for u in users:
        p = _softmax([float(u @ v) / tau for v in teacher])
        q = _softmax([float(u @ v) / tau for v in pred])
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert float(listwise_kl_loss(pred, teacher, users, tau)) == pytest.approx(total / len(users), rel=1e-5)
    assert float(listwise_kl_loss(teacher, teacher, users, tau)) == pytest.approx(0.0, abs=1e-6)  # its own teacher


def test_listwise_softmax_matches_a_loop_and_skips_users_without_positives() -> None:
    g = torch.Generator().manual_seed(2)
    users, pred = torch.randn(4, 3, generator=g), torch.randn(6, 3, generator=g)
    positives = torch.tensor(
        [[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool
    )
    tau = 0.5
    per_user = []
    for u, pos in zip(users, positives, strict=True):
        if not pos.any():
            continue
        p = _softmax([float(u @ v) / tau for v in pred])
        chosen = [math.log(p[j]) for j in range(len(pred)) if pos[j]]
        per_user.append(-sum(chosen) / len(chosen))
    got = float(listwise_softmax_loss(pred, users, positives, tau))
    assert got == pytest.approx(sum(per_user) / len(per_user), rel=1e-5)
    none = listwise_softmax_loss(pred.requires_grad_(), users, torch.zeros_like(positives), tau)
    assert float(none.detach()) == 0.0 and none.requires_grad  # a batch with no interaction still steps


def test_rank_temperature_follows_the_teacher_score_scale() -> None:
    g = torch.Generator().manual_seed(3)
    users, items = torch.randn(20, 4, generator=g), torch.randn(8, 4, generator=g)
    tau = rank_temperature(users, items, 0.5)
    assert float(tau) == pytest.approx(0.5 * float((users @ items.T).std()), rel=1e-6)
    assert float(rank_temperature(users * 10, items, 0.5)) == pytest.approx(10 * float(tau), rel=1e-5)


def test_distillation_and_l2sp_match_loops() -> None:
    g = torch.Generator().manual_seed(4)
    f, f0 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    naive = sum(float(((a - b) ** 2).sum() / (b**2).sum()) for a, b in zip(f, f0, strict=True)) / 3
    assert float(feature_distillation(f, f0)) == pytest.approx(naive, rel=1e-5)
    w = [torch.randn(4, 3, generator=g), torch.randn(2, generator=g)]
    w0 = [torch.randn(4, 3, generator=g), torch.randn(2, generator=g)]
    naive = 0.5 * sum(float(((a - b) ** 2).sum()) for a, b in zip(w, w0, strict=True))
    assert float(l2sp_penalty(w, w0)) == pytest.approx(naive, rel=1e-5)


@pytest.mark.parametrize("cache", [False, True])
def test_distillation_is_zero_at_the_start_with_frozen_batchnorm(cache: bool) -> None:
    """A BatchNorm backbone in train mode: with frozen statistics the model computes the teacher's features exactly
    (term 0); with training statistics it does not — so the zero is the BatchNorm handling, not a test artefact."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    index = torch.arange(4)
    terms = {}
    for bn in ("frozen", "train"):
        model = FeatureModel(create_backbone("tf_efficientnet_lite0", "random"), {"factors": 4}, 0.5)
        apply_finetune(model, "last-2")
        model.frozen_batchnorm = bn == "frozen"
        teacher = Teacher(model, cache=cache)
        model.train()
        pooled, _ = model(images)
        terms[bn] = float(teacher.loss(pooled, images, index).detach())
        anchor = StartingPoint([p for p in model.backbone.parameters() if p.requires_grad])
        assert float(anchor.penalty().detach()) == 0.0
    assert terms["frozen"] == 0.0
    assert terms["train"] > 1e-4
