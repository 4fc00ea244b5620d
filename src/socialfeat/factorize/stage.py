"""``factorize``: the run's dataset → user and item factors, with held-out ranking metrics.

Order of work: cold items are removed from training entirely (kept for the cold-start evaluation);
per-user leave-k-out on the rest measures the model against popularity and random baselines (after
an optional grid sweep on a separate validation hold-out); then the final model is fit on every
warm interaction and written.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from pydantic import ValidationError

from socialfeat.artifacts import parquet_fingerprints, read_schema, read_table
from socialfeat.atomic import atomic_dir, write_json, write_text
from socialfeat.config import Config, FactorizeConfig, SplitConfig, dump_config, provenance
from socialfeat.data.splits import SPLITS, TRAIN, item_splits, leave_k_out
from socialfeat.errors import UserError
from socialfeat.factorize import create_factorizer
from socialfeat.factorize.base import Factors, FitDiverged
from socialfeat.factorize.metrics import evaluate_ranking, popularity_scores, random_scores
from socialfeat.resources import check_memory
from socialfeat.runlock import writes_run

log = logging.getLogger(__name__)

# (label, iteration done, total iterations, loss or None): the CLI draws this as a progress bar
Progress = Callable[[str, int, int, "float | None"], None]
SWEEP_KEYS = {
    "factors": int,
    "alpha": float,
    "regularization": float,
    "reg": float,
    "iterations": int,
    "epsilon": float,
}


@dataclass
class Interactions:
    """The dataset's pairs as arrays, plus the ids behind the indices."""

    users: np.ndarray
    items: np.ndarray
    weight: np.ndarray
    times: np.ndarray | None
    user_ids: pa.Array
    item_ids: pa.Array
    source: str = "dataset/interactions.parquet"  # the file the weights came from: errors about them name it

    def times_of(self, rows: np.ndarray) -> np.ndarray | None:
        """Timestamps of the given pairs, or None when the log had none."""
        return None if self.times is None else self.times[rows]


@dataclass
class FactorizeResult:
    """Where the factors went and how well they rank held-out interactions.

    Attributes:
        out: The factors folder, ``RUN/factors``.
        metrics: What ``metrics.json`` records: the item split, held-out ranking metrics, sweep results, fit time.
    """

    out: Path
    metrics: dict[str, Any]


def confidence(weight: np.ndarray, cfg: FactorizeConfig) -> np.ndarray:
    """c = 1 + α·w (linear) or 1 + α·log(1 + w/ε) (log): confidence grows with the interaction weight."""
    w = weight.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked by checked_confidence
        if cfg.confidence == "log":
            return (1.0 + cfg.alpha * np.log1p(w / cfg.epsilon)).astype(np.float32)
        return (1.0 + cfg.alpha * w).astype(np.float32)


def checked_confidence(weight: np.ndarray, cfg: FactorizeConfig, source: str) -> np.ndarray:
    """:func:`confidence`, refused with the dataset named when any is not finite: float32 overflows past 3.4e38
    (a huge weight times α), and a log confidence of a weight below −ε is not a number."""
    c = confidence(weight, cfg)
    bad = ~np.isfinite(c)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise UserError(
            source,
            f"{int(bad.sum())} weights give a confidence that is not finite (weight {float(weight[first]):g} → "
            f"{c[first]} with factorize.confidence={cfg.confidence}, alpha={cfg.alpha:g}); lower factorize.alpha "
            "or the event weights",
        )
    return c


def read_dataset(run: Path) -> Interactions:
    """Load the columns factorize needs from ``run/dataset``; a missing dataset is a user error."""
    dataset = run / "dataset"
    for name in ("interactions.parquet", "users.parquet", "items.parquet"):
        if not (dataset / name).is_file():
            raise UserError(str(run), f"no {dataset.name}/{name}; run `socialfeat ingest --out {dataset}` first")
    schema = read_schema(dataset / "interactions.parquet", run=run)  # each file checked against stats.json first
    columns = ["user_idx", "item_idx", "weight"] + (["last_ts"] if "last_ts" in schema.names else [])
    table = read_table(dataset / "interactions.parquet", columns=columns, run=run)
    weight = table.column("weight").to_numpy().astype(np.float32, copy=False)
    source = str(dataset / "interactions.parquet")
    if not np.isfinite(weight).all():  # ingest refuses them; a dataset made before it did, or edited, may hold some
        row = int(np.flatnonzero(~np.isfinite(weight))[0])
        raise UserError(
            source,
            f"row {row + 1}, column 'weight': not a finite number ({weight[row]}); ALS needs finite weights: "
            "ingest the log again (ingest now refuses non-finite values)",
        )
    times = None
    if "last_ts" in columns:
        ts = table.column("last_ts").to_numpy(zero_copy_only=False).astype("datetime64[us]")
        raw = ts.astype(np.int64)
        times = np.where(np.isnat(ts), raw[~np.isnat(ts)].min(initial=0) - 1, raw)
    return Interactions(
        users=table.column("user_idx").to_numpy().astype(np.int32, copy=False),
        items=table.column("item_idx").to_numpy().astype(np.int32, copy=False),
        weight=weight,
        times=times,
        user_ids=read_table(dataset / "users.parquet", columns=["user_id"], run=run).column("user_id").combine_chunks(),
        item_ids=read_table(dataset / "items.parquet", columns=["item_id"], run=run).column("item_id").combine_chunks(),
        source=source,
    )


def matrix(users: np.ndarray, items: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """users × items CSR of unique pairs.

    Pairs sorted by user — as ingest writes them — become the CSR arrays directly, without the several
    full-size temporaries of a COO conversion (that matters at hundreds of millions of pairs).
    """
    values = values.astype(np.float32, copy=False)
    if len(users) and not np.all(users[1:] >= users[:-1]):
        return sp.csr_matrix((values, (users, items)), shape=shape, dtype=np.float32)
    index = np.int32 if len(users) < 2**31 else np.int64
    indptr = np.zeros(shape[0] + 1, dtype=index)
    np.cumsum(np.bincount(users, minlength=shape[0]), out=indptr[1:])
    result = sp.csr_matrix((values, items.astype(index, copy=False), indptr), shape=shape)
    result.sort_indices()  # a no-op when items are already in order within each user
    return result


def fit(
    cfg: FactorizeConfig,
    seed: int,
    conf: sp.csr_matrix,
    label: str,
    progress: Progress | None,
    source: str = "dataset/interactions.parquet",
) -> tuple[Factors, float]:
    """Fit one model, reporting each iteration; returns the factors and the seconds it took.

    A fit that diverges (NaN factors) is a user error naming ``source``, the dataset whose weights caused it.
    """
    factorizer = create_factorizer(cfg, seed)
    if progress:
        progress(label, 0, cfg.iterations, None)

    def on_iteration(iteration: int, _seconds: float, loss: float | None) -> None:
        if progress:
            progress(label, iteration + 1, cfg.iterations, loss)

    top = float(conf.data.max()) if conf.nnz else 1.0
    if cfg.regularization > SHRINK_LIMIT * max(top, 1.0):
        raise too_much_regularization(cfg, top, "would shrink every factor to zero")
    started = time.perf_counter()
    try:
        factors = factorizer.fit(conf, callback=on_iteration)
    except FitDiverged:
        if cfg.regularization > top:  # λ, not the confidences, overflowed the float32 solve
            raise too_much_regularization(cfg, top, "overflowed the solver's float32 arithmetic") from None
        raise UserError(
            source,
            f"ALS diverged (NaN factors) on confidences up to {top:.3g}; lower factorize.alpha, set "
            "factorize.confidence=log, or raise factorize.regularization",
        ) from None
    largest = max((float(np.abs(a).max()) for a in (factors.users, factors.items) if a.size), default=1.0)
    if largest < COLLAPSED:
        raise too_much_regularization(cfg, top, f"collapsed every factor to zero (largest {largest:.1g})")
    return factors, time.perf_counter() - started


SHRINK_LIMIT = 1e9  # λ beyond this many times the largest confidence leaves nothing of the data in the factors
COLLAPSED = 1e-10  # factors all below this in magnitude rank every item alike: the fit learned nothing


def too_much_regularization(cfg: FactorizeConfig, top: float, what: str) -> UserError:
    """The one line for a λ so large that it, not the data, decides the factors."""
    return UserError(
        "factorize.regularization",
        f"λ={cfg.regularization:g} is too large for confidences up to {top:.3g}: it {what}; lower "
        "factorize.regularization (--reg; the default is 20)",
    )


def _eval_users(test: sp.csr_matrix, cfg: FactorizeConfig, seed: int) -> np.ndarray:
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if cfg.eval_users and len(users) > cfg.eval_users:
        users = np.sort(np.random.default_rng(seed).choice(users, cfg.eval_users, replace=False))
    return users


def heldout_metrics(
    factors: Factors, train: sp.csr_matrix, test: sp.csr_matrix, cfg: FactorizeConfig, seed: int
) -> dict[str, dict[str, float]]:
    """Ranking of each user's held-out items among all unseen items: the model, popularity and random."""
    users = _eval_users(test, cfg, seed)
    batch = eval_batch_size(train.shape[1])
    return {
        "model": evaluate_ranking(factors.scores, train, test, cfg.k, users, batch),
        "popularity": evaluate_ranking(popularity_scores(train), train, test, cfg.k, users, batch),
        "random": evaluate_ranking(random_scores(train.shape[1], seed), train, test, cfg.k, users, batch),
    }


def eval_batch_size(n_items: int, budget: int = 16_000_000) -> int:
    """Users scored at once: about ``budget`` scores per batch (~128 MB in float64) whatever the catalogue size.
    At 100M scores (0.8 GB per array, on two threads) factorize peaked at 5.7 GB at 423K items; at 16M, 2.2 GB,
    and the ranking there took 192 s instead of 225 s (bench/scale_diagnose.py ranking-batch; the same at 100K)."""
    return max(1, min(256, budget // max(n_items, 1)))


def parse_sweep(terms: list[str]) -> dict[str, list[float]]:
    """``factors=32,64 alpha=1,10 reg=0.01,0.1`` → a grid; names the bad term on a mistake."""
    grid: dict[str, list[float]] = {}
    for term in terms:
        key, sep, values = term.partition("=")
        key = "regularization" if key == "reg" else key
        if not sep or key not in SWEEP_KEYS:
            raise UserError(f"--sweep {term}", f"expected NAME=V1,V2,... with NAME one of {', '.join(SWEEP_KEYS)}")
        try:
            grid[key] = [SWEEP_KEYS[key](float(v)) for v in values.split(",") if v.strip()]
        except (ValueError, OverflowError):  # int(float("inf")) overflows
            raise UserError(f"--sweep {term}", "values must be finite numbers separated by commas") from None
        if not grid[key]:
            raise UserError(f"--sweep {term}", "give at least one value")
    return grid


def sweep_trials(cfg: FactorizeConfig) -> tuple[list[str], list[FactorizeConfig]]:
    """The swept keys and one validated config per grid point, checked before any fit: an unknown key or a value
    out of range (``alpha=0``) is a user error naming ``factorize.sweep``, not a failure after the first fits."""
    grid: dict[str, list[float]] = {}
    for key, values in cfg.sweep.items():
        name = "regularization" if key == "reg" else key
        if name not in SWEEP_KEYS:
            raise UserError("factorize.sweep", f"unknown key '{key}'; expected one of {', '.join(SWEEP_KEYS)}")
        try:
            grid[name] = [SWEEP_KEYS[name](x) for x in values]
        except (ValueError, OverflowError):
            raise UserError("factorize.sweep", f"{key}: {values} are not all finite numbers") from None
    keys = list(grid)
    trials = []
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = dict(zip(keys, values, strict=True))
        try:
            trials.append(FactorizeConfig.model_validate({**cfg.model_dump(), **setting}))
        except ValidationError as exc:
            err = exc.errors()[0]
            bad = ".".join(str(p) for p in err["loc"])
            raise UserError("factorize.sweep", f"{bad}={err.get('input')!r}: {err['msg'].lower()}") from None
    return keys, trials


def sweep(
    cfg: FactorizeConfig,
    seed: int,
    data: Interactions,
    train_mask: np.ndarray,
    shape: tuple[int, int],
    progress: Progress | None,
) -> tuple[FactorizeConfig, list[dict[str, Any]], dict[str, float]]:
    """Grid search on a validation hold-out carved from the training pairs; the best NDCG@k wins.

    Returns the config with the best setting, every trial's metrics, and the best setting itself.
    """
    keys, trials = sweep_trials(cfg)
    idx = np.flatnonzero(train_mask)
    valid = leave_k_out(
        data.users[idx], data.items[idx], data.times_of(idx), SplitConfig(leave_out=1, min_train=2), seed + 17
    )
    fit_idx, valid_idx = idx[~valid], idx[valid]
    test = matrix(data.users[valid_idx], data.items[valid_idx], np.ones(len(valid_idx), np.float32), shape)
    users = _eval_users(test, cfg, seed)  # the same users judge every setting
    rows: list[dict[str, Any]] = []
    for trial in trials:
        values = [getattr(trial, k) for k in keys]
        conf_values = checked_confidence(data.weight[fit_idx], trial, data.source)
        conf = matrix(data.users[fit_idx], data.items[fit_idx], conf_values, shape)
        label = "sweep " + " ".join(f"{k}={v:g}" for k, v in zip(keys, values, strict=True))
        factors, seconds = fit(trial, seed, conf, label, progress, data.source)
        scores = evaluate_ranking(factors.scores, conf, test, cfg.k, users, eval_batch_size(shape[1]))
        rows.append({**dict(zip(keys, values, strict=True)), **scores, "seconds": seconds})
    best = max(rows, key=lambda r: (r["ndcg"], r["recall"]))
    chosen = {k: best[k] for k in keys}
    return FactorizeConfig.model_validate({**cfg.model_dump(), **chosen}), rows, chosen


MIN_WARM_ITEMS = 2  # fewer warm items with interactions leave nothing to rank: every metric is undefined


def check_warm_items(config: Config, warm: int, items: int) -> None:
    """Refuse a split that leaves fewer than two warm items with interactions; warn when fewer warm items remain
    than factors to learn (the factors then describe a handful of items)."""
    split = config.split
    key = "split.cold_items" if split.cold_items is not None else "split.cold_fraction"
    where = config.given_by(key, "--cold-items" if split.cold_items is not None else "--cold-fraction")
    how = f"{split.cold_items}" if split.cold_items is not None else f"cold fraction {split.cold_fraction:g}"
    if warm < MIN_WARM_ITEMS:
        raise UserError(
            where,
            f"{how} leaves {warm} of {items:,} items warm (trained on); factorize needs at least {MIN_WARM_ITEMS}: "
            f"make fewer items cold ({key})",
        )
    if warm < max(config.factorize.factors, 10):
        log.warning(
            "%s leaves only %d of %s items warm (trained on): the factors and their metrics rest on these alone; "
            "make fewer items cold (%s)",
            how, warm, f"{items:,}", key,
        )  # fmt: skip


def factor_memory(factors: int, users: int, items: int) -> int:
    """Bytes one ALS fit needs, as assumed here: float32 user and item factors three times over (implicit's
    random start and its scaled copy, then the copies written to Parquet) plus the conjugate-gradient solver's
    factors × factors Gram (YᵀY) — the allocation that fails first at a very large ``factors``. The held-out
    and final fits run one after the other, so one fit is the peak."""
    return 4 * (3 * factors * (users + items) + factors * factors)


def check_factor_memory(config: Config, shape: tuple[int, int]) -> None:
    """Refuse, before any fit, a ``factors`` (or a swept one) whose factor matrices do not fit in memory."""
    cfg = config.factorize
    swept = [int(v) for v in cfg.sweep.get("factors", []) if v == v and abs(v) < 2**62]
    factors = max([cfg.factors, *swept])
    key = "factorize.sweep" if factors > cfg.factors else "factorize.factors"
    check_memory(
        factor_memory(factors, *shape),
        config.given_by(key, key),
        f"{factors:,} factors for {shape[0]:,} users and {shape[1]:,} items (float32 factors, their working copies "
        f"and the solver's {factors:,}² Gram)",
        f"lower {key}" + (" (--factors)" if key == "factorize.factors" else ""),
    )


@writes_run()
def factorize(config: Config, run: str | os.PathLike[str], progress: Progress | None = None) -> FactorizeResult:
    """Factorize ``run/dataset`` into user and item factors in ``run/factors``, measured on held-out interactions.

    Cold items stay out of the fit, so that evaluation can predict them from images alone.

    Args:
        config: The run's configuration; reads ``factorize``, ``split`` and ``seed``.
        run: The run folder, holding ``dataset/``.
        progress: Hears ``(fit, iteration, iterations, loss)`` after each ALS iteration; loss may be None.

    Returns:
        The factors folder and its metrics.

    Raises:
        UserError: No current dataset, too little memory for the factors, no warm items, or a fit that
            diverges.
    """
    run = Path(run)
    cfg, seed = config.factorize, config.seed
    started = time.perf_counter()
    data = read_dataset(run)
    shape = (len(data.user_ids), len(data.item_ids))
    check_factor_memory(config, shape)
    split_codes, split_info = item_splits(data.item_ids.to_pylist(), config.split, seed)
    warm = split_codes[data.items] == TRAIN
    check_warm_items(config, np.unique(data.items[warm]).size, shape[1])
    if cfg.sweep and not cfg.evaluate:
        off = config.given_by("factorize.evaluate", "factorize.evaluate: false")
        off = "--no-evaluate" if off == "--evaluate" else off  # the flag pair is recorded by its first name
        raise UserError(
            config.given_by("factorize.sweep", "factorize.sweep"),
            f"the sweep needs the held-out evaluation, which {off} turns off; drop one of them",
        )
    metrics: dict[str, Any] = {"items": split_info, "pairs": {"warm": int(warm.sum()), "cold": int((~warm).sum())}}

    if cfg.evaluate:
        idx = np.flatnonzero(warm)
        whole = len(idx) == len(warm)  # no cold items: use the arrays as they are, without copies
        held = leave_k_out(
            data.users if whole else data.users[idx],
            data.items if whole else data.items[idx],
            data.times if whole else data.times_of(idx),
            config.split,
            seed,
        )
        test_idx = idx[held]
        del idx, held
        train_mask = warm.copy()
        train_mask[test_idx] = False
        if cfg.sweep:
            cfg, metrics["sweep"], metrics["sweep_best"] = sweep(cfg, seed, data, train_mask, shape, progress)
        train_conf = checked_confidence(data.weight[train_mask], cfg, data.source)
        train = matrix(data.users[train_mask], data.items[train_mask], train_conf, shape)
        test = matrix(data.users[test_idx], data.items[test_idx], np.ones(len(test_idx), np.float32), shape)
        factors, seconds = fit(cfg, seed, train, "held-out fit", progress, data.source)
        metrics["heldout"] = {
            "k": cfg.k,
            "held_out_pairs": len(test_idx),
            **heldout_metrics(factors, train, test, cfg, seed),
        }
        metrics["heldout"]["fit_seconds"] = seconds
        del train, test, factors, train_mask  # free the held-out model before the final fit

    conf = matrix(data.users[warm], data.items[warm], checked_confidence(data.weight[warm], cfg, data.source), shape)
    factors, seconds = fit(cfg, seed, conf, "final fit", progress, data.source)
    metrics["fit_seconds"] = seconds
    metrics["backend"] = cfg.backend
    metrics["params"] = {
        k: getattr(cfg, k) for k in ("factors", "regularization", "iterations", "confidence", "alpha", "epsilon")
    }
    with atomic_dir(run / "factors", "factors") as tmp:
        _write_factors(tmp, data, factors, conf, split_codes)
        metrics["seconds"] = time.perf_counter() - started
        write_json(tmp / "metrics.json", {**metrics, **parquet_fingerprints(tmp)})  # checked at every open
        final = config.model_copy(update={"factorize": cfg})
        write_json(tmp / "manifest.json", provenance(final, "factorize"))
        write_text(tmp / "config.yaml", dump_config(final))
    return FactorizeResult(out=run / "factors", metrics=metrics)


def _vectors(array: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(array.astype(np.float32).ravel()), array.shape[1])


def _write_factors(
    out: Path, data: Interactions, factors: Factors, conf: sp.csr_matrix, split_codes: np.ndarray
) -> None:
    """Factors keyed by the original ids; users and items without training data are left out."""
    user_rows = np.flatnonzero(np.diff(conf.indptr) > 0)
    item_rows = np.flatnonzero(np.bincount(conf.indices, minlength=conf.shape[1]) > 0)
    pq.write_table(
        pa.table(
            {
                "user_id": data.user_ids.take(user_rows),
                "user_idx": user_rows.astype(np.int32),
                "factors": _vectors(factors.users[user_rows]),
            }
        ),
        out / "user_factors.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": data.item_ids.take(item_rows),
                "item_idx": item_rows.astype(np.int32),
                "factors": _vectors(factors.items[item_rows]),
            }
        ),
        out / "item_factors.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": data.item_ids,
                "item_idx": np.arange(len(split_codes), dtype=np.int32),
                "split": pa.array([SPLITS[c] for c in split_codes]),
            }
        ),
        out / "item_split.parquet",
    )
    cold = split_codes[data.items] != TRAIN
    pq.write_table(
        pa.table({"user_idx": data.users[cold], "item_idx": data.items[cold], "weight": data.weight[cold]}),
        out / "cold_interactions.parquet",
    )
