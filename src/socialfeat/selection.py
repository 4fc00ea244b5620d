"""Epoch selection by the metric that matters: cold-start AUC on the split's *valid* cold items.

At the untrained start (epoch 0) and after every epoch, the model embeds a seeded sub-sample of warm items and
every valid cold item; a ridge from the warm items' pooled features to their ALS factors (``evaluate``'s protocol,
λ chosen on valid) predicts the valid items' factors, and every user's score u·v̂ is ranked against the valid
items' hidden interactions. The best epoch becomes ``run/model``. The test items are never read: their truth is
dropped on loading.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from socialfeat.errors import UserError
from socialfeat.evaluate.coldstart import ColdStartData, load_coldstart, ridge_predictions
from socialfeat.evaluate.metrics import ridge_path, standardizer
from socialfeat.features import embed_rows
from socialfeat.models.heads import FeatureModel

log = logging.getLogger(__name__)

METRIC = "valid_cold_auc"


@dataclasses.dataclass
class Selector:
    """What one selection score needs: cache rows to embed, their item_idx, and the split without its test truth."""

    cache_path: Path
    rows: np.ndarray  # cache rows: the fit sub-sample of warm items, then the valid cold items that have an image
    item_idx: np.ndarray  # item_idx of each row
    data: ColdStartData  # ``train`` narrowed to the fit sub-sample; test truth emptied
    lambdas: list[float]
    batch_size: int
    fit_features: np.ndarray | None = None  # pooled features of the fit items at the last score

    @property
    def summary(self) -> dict[str, int]:
        return {"fit_items": len(self.data.train), "valid_items": len(self.data.valid), "embedded": len(self.rows)}

    @torch.no_grad()
    def score(self, model: FeatureModel, device: torch.device) -> dict[str, Any]:
        """Valid cold-start AUC of the model's pooled features (and the λ chosen); the model's mode is restored."""
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            out = embed_rows(model, self.cache_path, self.rows, self.batch_size, 0, device)
        finally:
            model.train(was_training)
        features = np.zeros((self.data.n_items, out["features"].shape[1]), np.float32)
        has = np.zeros(self.data.n_items, dtype=bool)
        features[self.item_idx] = out["features"]
        self.fit_features = out["features"][: len(self.data.train)]
        has[self.item_idx] = True
        _, info = ridge_predictions(features, has, self.data, self.lambdas)
        return {
            METRIC: float(info["valid_auc"]),
            "select_lambda": info["lambda"],
            "select_seconds": time.perf_counter() - t0,
        }


def make_selector(
    run: Path,
    mode: str,
    cache_path: Path,
    cache_rows: dict[Any, int],
    fit_items: int,
    lambdas: list[float],
    batch_size: int,
    seed: int,
) -> Selector | None:
    """The selector for ``train.select``; ``auto`` without valid cold items (or ``last``) gives None."""
    if mode == "last":
        return None
    try:
        data = load_coldstart(run)
    except UserError:
        if mode == "valid-auc":
            raise UserError(
                "train.select",
                "valid-auc needs cold valid items in the split (factorize with --cold-items FILE or "
                "--cold-fraction); use select: last",
            ) from None
        log.info("no cold valid items in the split: keeping the last epoch")
        return None
    has_image = np.array([data.item_ids[i] in cache_rows for i in range(data.n_items)], dtype=bool)
    warm = data.train[has_image[data.train]]
    rng = np.random.default_rng(seed + 29)
    chosen = np.sort(rng.choice(len(warm), size=min(fit_items, len(warm)), replace=False)) if len(warm) else []
    fit_idx = warm[chosen]
    position = {int(i): p for p, i in enumerate(data.train)}
    factors = data.item_factors[[position[int(i)] for i in fit_idx]]
    valid_idx = data.valid[has_image[data.valid]]
    if len(fit_idx) < 2 or len(valid_idx) == 0:
        raise UserError("train.select", "too few warm or valid cold items with an image to select an epoch; use last")
    empty = sp.csr_matrix(data.test_truth.shape, dtype=np.float32)
    narrowed = dataclasses.replace(data, train=fit_idx, item_factors=factors, test_truth=empty, test=data.test[:0])
    item_idx = np.concatenate([fit_idx, valid_idx]).astype(np.int64)
    rows = np.array([cache_rows[data.item_ids[i]] for i in item_idx], dtype=np.int64)
    return Selector(Path(cache_path), rows, item_idx, narrowed, list(lambdas), batch_size)


def ridge_head(features: np.ndarray, targets: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(weight out × in, bias) of a linear head that computes evaluate's ridge at λ — standardise, map, add the
    mean — on raw pooled features: LP-FT's linear probe in closed form, so fine-tuning starts from the best linear
    head instead of sending a random head's gradients into the backbone."""
    mean_x, std_x = standardizer(features)
    mean_v = targets.mean(axis=0)
    w = ridge_path((features - mean_x) / std_x, targets - mean_v, [lam])[0] / std_x[:, None]
    return w.T.astype(np.float32), (mean_v - mean_x @ w).astype(np.float32)


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record with the highest valid cold AUC; the earliest wins a tie (the start beats an equal epoch)."""
    scored = [h for h in history if isinstance(h.get(METRIC), int | float) and np.isfinite(h[METRIC])]
    if not scored:
        return None
    return max(scored, key=lambda h: (h[METRIC], -h["epoch"]))
