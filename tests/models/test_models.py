"""Backbones (packaged ImageNet weights, tiny test net, fine-tuning choices), heads and losses."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from environment import need

from socialfeat.data.images import load_image
from socialfeat.models.backbones import create_backbone, imagenet_classifier, preprocess
from socialfeat.models.heads import FeatureModel, apply_finetune
from socialfeat.models.losses import (
    IGNORE,
    audience_loss,
    cosine_loss,
    masked_cross_entropy,
    mean_cosine,
    mse_loss,
    top1,
    user_moment_root,
)

IMAGENET_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imagenet-sample"


def test_packaged_imagenet_weights_classify_the_sample() -> None:
    """The packaged Lite0 weights, mapped into timm's model, recognise the ImageNet sample photos."""
    need((IMAGENET_SAMPLE / "labels.csv").is_file(), f"no ImageNet sample at {IMAGENET_SAMPLE} (../shared/data)")
    with open(IMAGENET_SAMPLE / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = np.stack([load_image(IMAGENET_SAMPLE / r["file"], 224) for r in rows])
    labels = torch.tensor([int(r["class_index"]) for r in rows])
    with torch.no_grad():
        predicted = imagenet_classifier()(preprocess(torch.from_numpy(images))).argmax(1)
    accuracy = float((predicted == labels).float().mean())
    assert accuracy >= 0.85, accuracy  # measured: 0.88


def test_preprocess_maps_uint8_nhwc_to_centred_nchw() -> None:
    x = torch.tensor([[[[0, 127, 255]]]], dtype=torch.uint8)  # 1×1×1×3
    y = preprocess(x)
    assert y.shape == (1, 3, 1, 1)
    assert torch.allclose(y.flatten(), torch.tensor([-127 / 128, 0.0, 1.0]))


def test_tiny_backbone_is_registered_with_timm() -> None:
    import timm

    model = create_backbone("socialfeat_tiny", "random")
    assert timm.is_model("socialfeat_tiny") and model.num_features == 64
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


@pytest.mark.parametrize(("spec", "trainable_blocks"), [("all", 3), ("head", 0), ("last-1", 1), ("last-2", 2)])
def test_finetune_freezes_what_it_says(spec: str, trainable_blocks: int) -> None:
    model = FeatureModel(create_backbone("socialfeat_tiny", "random"), {"factors": 4}, 0.0)
    apply_finetune(model, spec)
    blocks = list(model.backbone.blocks)
    trains = [all(p.requires_grad for p in b.parameters()) for b in blocks]
    assert trains == [False] * (3 - trainable_blocks) + [True] * trainable_blocks
    assert all(p.requires_grad for p in model.heads.parameters())
    assert all(p.requires_grad == (spec == "all") for p in model.backbone.stem.parameters())


def test_frozen_batchnorm_keeps_its_statistics() -> None:
    model = FeatureModel(create_backbone("tf_efficientnet_lite0", "random"), {"factors": 4}, 0.0)
    apply_finetune(model, "last-1")
    model.train()
    stem_bn = model.backbone.bn1
    before = stem_bn.running_mean.clone()
    model(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8))
    assert not stem_bn.training and torch.equal(before, stem_bn.running_mean)
    assert model.backbone.bn2.training  # after the last block: trained, so in train mode


def test_losses_and_metrics_against_hand_values() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    assert cosine_loss(a, b).item() == pytest.approx(0.5)  # cosines 1 and 0
    assert mean_cosine(a, b) == pytest.approx(0.5)
    assert mse_loss(a, b).item() == pytest.approx((1 + 0 + 1 + 4) / 4)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, IGNORE])
    expected = (torch.nn.functional.cross_entropy(logits[:2], labels[:2])).item()
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(expected)
    assert top1(logits, labels) == pytest.approx(0.5)
    all_masked = torch.full((3,), IGNORE)
    loss = masked_cross_entropy(logits.requires_grad_(), all_masked)
    assert loss.item() == 0.0 and loss.requires_grad  # a batch without labels still steps
    assert np.isnan(top1(logits, all_masked))


def test_hold_backbone_freezes_then_restores_the_finetune_choice() -> None:
    model = FeatureModel(create_backbone("socialfeat_tiny", "random"), {"factors": 4}, 0.0)
    apply_finetune(model, "last-1")
    chosen = [p.requires_grad for p in model.backbone.parameters()]
    model.hold_backbone(True)
    model.train()
    assert not any(p.requires_grad for p in model.backbone.parameters()) and not model.backbone.training
    assert all(p.requires_grad for p in model.heads.parameters())
    model.hold_backbone(False)
    model.train()
    assert [p.requires_grad for p in model.backbone.parameters()] == chosen and model.backbone.blocks[-1].training


def test_audience_loss_is_the_mean_squared_score_error_over_users() -> None:
    """E_i E_u (u·(v̂ᵢ − vᵢ))² / E_u ‖u‖², computed naively user by user, item by item."""
    g = torch.Generator().manual_seed(0)
    users = torch.randn(50, 4, generator=g) + torch.tensor([2.0, 0.0, 0.0, 0.0])  # a strong mean (popularity) user
    pred, truth = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    naive = sum(float(u @ (p - t)) ** 2 for u in users for p, t in zip(pred, truth, strict=True))
    naive /= len(users) * len(pred) * float((users**2).sum(1).mean())
    root = user_moment_root(users)
    assert float(audience_loss(pred, truth, root)) == pytest.approx(naive, rel=1e-4)
    # an error along a direction no user varies in costs nothing
    flat = torch.cat([users[:, :3], torch.zeros(50, 1)], 1)
    err = torch.zeros(1, 4)
    err[0, 3] = 5.0
    assert float(audience_loss(err, torch.zeros(1, 4), user_moment_root(flat))) == pytest.approx(0.0, abs=1e-6)


def test_block_stats_append_mean_and_std_of_the_last_blocks() -> None:
    torch.manual_seed(0)
    model = FeatureModel(create_backbone("tf_efficientnet_lite0", "random"), {"factors": 4}, 0.0).eval()
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        pooled, heads = model(images)
        model.block_stats = 2
        richer, heads2 = model(images)
        blocks = list(model.backbone.blocks)
        seen: list[torch.Tensor] = []
        hooks = [b.register_forward_hook(lambda _m, _i, o: seen.append(o)) for b in blocks[-2:]]
        model.backbone(preprocess(images))
        for h in hooks:
            h.remove()
    naive = torch.cat(
        [torch.cat([o.flatten(2).mean(-1), o.flatten(2).std(-1)], dim=1) for o in seen], dim=1
    )  # (batch, 2 × channels of each block)
    assert richer.shape == (2, model.num_features + naive.shape[1])
    assert naive.shape[1] == 2 * sum(o.shape[1] for o in seen) and naive.shape[1] > 0
    assert torch.equal(richer[:, : model.num_features], pooled)  # the pooled features come first, unchanged
    assert torch.allclose(richer[:, model.num_features :], naive, atol=1e-5)
    assert torch.equal(heads["factors"], heads2["factors"])  # the heads still read the pooled features only
