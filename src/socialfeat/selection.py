"""Epoch selection by the metric that matters: cold-start AUC on the split's *valid* cold items.

At the untrained start (epoch 0) and after every epoch, the model embeds a seeded sub-sample of warm items and a
seeded sample of valid cold items (``train.select_valid_items``); a ridge from the warm items' pooled features to
their ALS factors (``evaluate``'s protocol, λ chosen on valid) predicts the valid items' factors, and a seeded sample
of users (``train.select_users``, :func:`~socialfeat.measures.coldstart.sampled`, as ``evaluate`` draws them) is
ranked against the valid items' hidden interactions. Every rank embeds its share of the rows, one gather joins them,
rank 0 ranks and every rank gets its answer, so each selection costs the same at any catalogue size and every rank
agrees on the best epoch. The best epoch becomes ``run/model``. The test items are never read: their truth is
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
import torch.distributed as dist

from socialfeat.config import TrainConfig
from socialfeat.errors import UserError
from socialfeat.features import embed_rows
from socialfeat.measures.coldstart import ColdStartData, eligible_users, fit_ridge_map, load_coldstart, sampled
from socialfeat.measures.metrics import ridge_path, standardizer
from socialfeat.models.heads import FeatureModel, head_key
from socialfeat.runtime import Dist

log = logging.getLogger(__name__)

METRIC = "valid_cold_auc"


@dataclasses.dataclass
class Selector:
    """What one selection score needs: the cache rows to embed and the split narrowed to the selection's sample
    (the fit items, then the sampled valid cold items; the sampled users; no test truth)."""

    cache_path: Path
    rows: np.ndarray  # cache rows of the items of ``data`` that have an image, in ``data``'s item order
    has: np.ndarray  # by ``data``'s item_idx: the item has a row in ``rows`` (a valid item without one: the mean)
    data: ColdStartData  # compact: train = the fit items, valid = the sampled valid items, users = the sample
    lambdas: list[float]
    batch_size: int
    sample: dict[str, int]  # what the AUC is averaged over, and out of how many
    fit_features: np.ndarray | None = None  # pooled features of the fit items at the last score

    @property
    def summary(self) -> dict[str, int]:
        return {
            "fit_items": len(self.data.train),
            "valid_items": len(self.data.valid),
            "embedded": len(self.rows),
            **self.sample,
        }

    @torch.no_grad()
    def score(self, model: FeatureModel, device: torch.device, d: Dist | None = None) -> dict[str, Any]:
        """Valid cold-start AUC of the model's pooled features (and the λ chosen); the model's mode is restored.
        Under torchrun every rank must call it: each embeds its share of the rows, rank 0 ranks, all get the
        answer."""
        d = d or Dist()
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            share = np.array_split(self.rows, d.world)[d.rank]
            pooled = gather_rows(embed_rows(model, self.cache_path, share, self.batch_size, 0, device)["features"], d)
        finally:
            model.train(was_training)
        self.fit_features = pooled[: len(self.data.train)]  # every fit item has an image: they come first
        scored = self.rank(pooled) if d.main else None
        return {**from_rank0(scored, d), "select_seconds": time.perf_counter() - t0}

    def rank(self, pooled: np.ndarray) -> dict[str, Any]:
        """The ridge on the fit items' features (λ by valid AUC) and the valid AUC it reaches: ``pooled`` holds
        every row's features, in row order."""
        features = np.zeros((self.data.n_items, pooled.shape[1]), np.float32)
        features[self.has] = pooled
        _, info = fit_ridge_map(features, self.has, self.data, self.lambdas)
        return {METRIC: float(info["valid_auc"]), "select_lambda": info["lambda"]}


def gather_rows(part: np.ndarray, d: Dist) -> np.ndarray:
    """Every rank's consecutive share of the rows, joined in rank order on every rank (one all-gather)."""
    if d.world == 1:
        return part
    parts: list[Any] = [None] * d.world
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)


def from_rank0(value: Any, d: Dist) -> Any:
    """Rank 0's ``value`` on every rank: one choice, whatever the ranks' floating point would have said."""
    if d.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def make_selector(
    run: Path,
    cfg: TrainConfig,
    cache_path: Path,
    cache_rows: dict[Any, int],
    lambdas: list[float],
    batch_size: int,
    seed: int,
) -> Selector | None:
    """The selector for ``train.select``; ``auto`` without valid cold items (or ``last``) gives None. Every rank
    builds the same one: the samples are seeded."""
    if cfg.select == "last":
        return None
    try:
        data = load_coldstart(run)
    except UserError:
        if cfg.select == "valid-auc":
            raise UserError(
                "train.select",
                "valid-auc needs cold valid items in the split (factorize with --cold-items FILE or "
                "--cold-fraction); use select: last",
            ) from None
        log.info("no cold valid items in the split: keeping the last epoch")
        return None
    has_image = np.array([data.item_ids[i] in cache_rows for i in range(data.n_items)], dtype=bool)
    warm = data.train[has_image[data.train]]
    fit_idx = warm[seeded_subset(len(warm), cfg.select_items, seed + 29)]
    valid_pos = seeded_subset(len(data.valid), cfg.select_valid_items, seed + 31)
    valid_idx = data.valid[valid_pos]
    if len(fit_idx) < 2 or not has_image[valid_idx].any():
        raise UserError("train.select", "too few warm or valid cold items with an image to select an epoch; use last")
    position = {int(i): p for p, i in enumerate(data.train)}
    factors = data.item_factors[[position[int(i)] for i in fit_idx]]
    truth = data.valid_truth[:, valid_pos]
    # the users as evaluate draws them: eligible (a positive and a negative) among the sampled valid items
    no_test = sp.csr_matrix((data.valid_truth.shape[0], 0), dtype=np.float32)
    users = sampled(dataclasses.replace(data, valid_truth=truth, test_truth=no_test), 0, cfg.select_users, seed)
    if len(users.valid_users) == 0:
        why = (
            f"no user has both a positive and a negative among the {len(valid_idx):,} valid cold item(s), so the "
            "valid cold-start AUC cannot be computed"
        )
        if cfg.select == "valid-auc":
            raise UserError(
                "train.select", f"{why}; factorize with more cold items (--cold-fraction) or use select: last"
            )
        log.warning("%s: keeping the last epoch (train.select: last)", why)
        return None
    compact = _compact(data, fit_idx, valid_idx, factors, truth, users.valid_users)
    has = np.concatenate([np.ones(len(fit_idx), dtype=bool), has_image[valid_idx]])
    rows = np.array([cache_rows[compact.item_ids[i]] for i in np.flatnonzero(has)], dtype=np.int64)
    sample = {
        "select_users": len(users.valid_users),
        "select_users_of": len(eligible_users(truth)),
        "select_valid_items": len(valid_idx),
        "select_valid_items_of": len(data.valid),
    }
    return Selector(Path(cache_path), rows, has, compact, list(lambdas), batch_size, sample)


def seeded_subset(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of ``size`` of ``n`` (all of them when ``size`` is 0 or not fewer)."""
    if not size or n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _compact(
    data: ColdStartData,
    fit_idx: np.ndarray,
    valid_idx: np.ndarray,
    factors: np.ndarray,
    truth: sp.csr_matrix,
    users: np.ndarray,
) -> ColdStartData:
    """The split cut down to what one selection reads — the fit items, the sampled valid items, the sampled users —
    so that neither the ranking nor the feature matrix grows with the catalogue."""
    n_fit, n_valid = len(fit_idx), len(valid_idx)
    return ColdStartData(
        item_ids=[data.item_ids[i] for i in np.concatenate([fit_idx, valid_idx])],
        split=np.array(["train"] * n_fit + ["valid"] * n_valid),
        train=np.arange(n_fit, dtype=np.int64),
        valid=np.arange(n_fit, n_fit + n_valid, dtype=np.int64),
        test=np.zeros(0, dtype=np.int64),
        item_factors=factors,
        user_factors=data.user_factors[users],
        valid_truth=truth[users],
        test_truth=sp.csr_matrix((len(users), 0), dtype=np.float32),
        normalize=data.normalize,
        test_users=np.zeros(0, dtype=np.int64),
        valid_users=np.arange(len(users), dtype=np.int64),
    )


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


def ridge_init(model: FeatureModel, selector: Selector, item_ids: list, targets: np.ndarray, lam: float) -> None:
    """Set the factors head to the ridge map the selection fit on the starting features (its fit items' training
    ``targets``, aligned with ``item_ids``, so a normalisation of the targets is respected)."""
    position = {item: i for i, item in enumerate(item_ids)}
    ids = [selector.data.item_ids[i] for i in selector.data.train]
    keep = np.array([i in position for i in ids], dtype=bool)
    fit_targets = targets[[position[i] for i, k in zip(ids, keep, strict=True) if k]]
    assert selector.fit_features is not None
    weight, bias = ridge_head(selector.fit_features[keep], fit_targets, lam)
    head = model.heads[head_key("factors")]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))


def keep_best(
    model: FeatureModel, selector: Selector | None, best: dict[str, torch.Tensor] | None, history: list[dict]
) -> dict[str, Any]:
    """Load the best epoch's weights into ``model`` and describe the choice; one line when the start won."""
    if selector is None:
        return {"selection": "last", "selected_epoch": len([h for h in history if h["epoch"] >= 0])}
    chosen = best_epoch(history)
    if chosen is None or best is None:  # every score NaN (features that do not fit a ridge): keep what trained
        log.warning("no epoch could be scored on valid cold-start AUC (every score is not a number): keeping the last")
        return {"selection": "last", "selected_epoch": len([h for h in history if h["epoch"] >= 0])}
    model.load_state_dict(best)
    selected = int(chosen["epoch"]) + 1
    start = next(h for h in history if h["epoch"] < 0)[METRIC]
    if selected == 0:
        log.info(
            "no epoch beat the untrained start on valid cold-start AUC (%.4f): run/model is the starting network, "
            "no win from training",
            start,
        )
    return {
        "selection": "valid-auc",
        "selected_epoch": selected,
        METRIC: chosen[METRIC],
        f"{METRIC}_start": start,
        **selector.summary,
    }
