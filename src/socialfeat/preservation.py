"""Knowledge preservation while fine-tuning on a small, noisy catalogue: keep what the starting backbone knew.

Two pulls toward the start, each a ``train`` switch measured alone and together (bench/quality_movielens.py):
- **feature distillation** (``train.distill``): the pooled features stay near those of a frozen copy of the
  starting backbone, f₀(x). With a fixed crop (no augmentation) f₀ is computed once per image and cached;
- **L2-SP** (``train.l2sp``): the fine-tuned weights stay near the starting weights, not near zero — so AdamW's
  decay toward zero is switched off for them.

``train.batchnorm: frozen`` (``FeatureModel.frozen_batchnorm``) keeps BatchNorm statistics at the start's, so
that at step 0 the model computes exactly f₀ and the distillation term is zero (tested).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from socialfeat.models.heads import FeatureModel
from socialfeat.models.losses import feature_distillation, l2sp_penalty


class Teacher:
    """The frozen starting backbone. ``features(images, index)`` gives f₀ for a batch; with ``cache`` on (fixed
    crops) each training image is run through it once and the result is kept by dataset index."""

    def __init__(self, model: FeatureModel, cache: bool) -> None:
        self.net = copy.deepcopy(model.backbone).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.cache_on = cache
        self.cached: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def _run(self, images: torch.Tensor) -> torch.Tensor:
        from socialfeat.models.backbones import preprocess

        return self.net(preprocess(images)).float()

    def features(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if not self.cache_on:
            return self._run(images)
        keys = [int(i) for i in index]
        todo = [j for j, k in enumerate(keys) if k not in self.cached]
        if todo:
            fresh = self._run(images[todo])
            for j, row in zip(todo, fresh, strict=True):
                self.cached[keys[j]] = row
        return torch.stack([self.cached[k] for k in keys])

    def to(self, device: torch.device) -> Teacher:
        self.net.to(device)
        return self

    def loss(self, pooled: torch.Tensor, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return feature_distillation(pooled, self.features(images, index).to(pooled.device))


class StartingPoint:
    """A copy of the fine-tuned backbone weights as they were at the start, for the L2-SP penalty."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.start = [p.detach().clone() for p in params]

    def penalty(self) -> torch.Tensor:
        return l2sp_penalty(list(self.params), self.start)
