"""``content``: a new item's audience from everything it arrives with — its image, title and text, tags, numeric
columns such as a year — not from its pixels alone.

Each source is a block of features for every item, cold ones included (``features/<source>.parquet``: the image
sources ``learned`` and ``imagenet`` from ``embed``; ``text``, ``tags`` and ``numeric`` written here). Two content
models are fit and the valid cold items pick one: late fusion (one ridge map per block, each λ chosen on valid, their
predictions averaged with weights chosen on valid; a missing block's weight goes to the others) and the joint ridge
(one ridge over every block, a λ per block, under source dropout, with a fallback per block for an item that lacks
it; see :class:`~socialfeat.content.joint.JointMap`). One λ for all blocks concatenated does worse than either. Both
are solved from the blocks' Gram matrices, built once (:class:`~socialfeat.content.gram.Grams`). Written to
``RUN/content/`` as safetensors + JSON, with every item's predicted factors.

Every choice is made on the same seeded sample of valid users as ``evaluate``'s λ, and every row is scored on the
same sample of test users as ``evaluate``'s rows (``evaluate.users``, ``evaluate.valid_users``, the run's seed), so
the two tables are comparable user for user. ``content/metrics.json`` scores every single source, every pair and the
full models on the test cold items with ``evaluate``'s protocol, each with a paired bootstrap 95% interval over the
users and the test items (the same resamples as ``evaluate``), the differences the headline states with theirs, and the chosen model
with each of its sources withheld, so each source's share of the gain is on the table.
"""

from __future__ import annotations

import itertools
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
from threadpoolctl import threadpool_limits

from socialfeat.artifacts import fingerprints
from socialfeat.atomic import atomic_dir, atomic_file, write_json
from socialfeat.config import Config, ContentConfig, provenance
from socialfeat.content.gram import Grams, valid_auc
from socialfeat.content.joint import JointFitter, JointMap
from socialfeat.content.sources import IMAGE_SOURCES, ITEM_SOURCES, Block, compact, image_block, item_blocks
from socialfeat.errors import UserError
from socialfeat.features import vectors_column
from socialfeat.freshness import check_current, feature_product
from socialfeat.measures.bootstrap import difference, interval, two_way_means
from socialfeat.measures.bootstrap import settings as bootstrap_settings
from socialfeat.measures.coldstart import (
    ColdStartData,
    Ranked,
    RidgeMap,
    factor_scores,
    load_coldstart,
    sampled,
    score_users,
    user_sample,
)
from socialfeat.measures.metrics import select_best
from socialfeat.runlock import writes_run
from socialfeat.tensor_io import write_safetensors

FORMAT = 1
EMPTY_SOURCES = "no content source to fit: name at least one of learned, imagenet, text, tags, numeric"
ITEM_CHUNK = 65_536  # items predicted at once when every item's factors are written


# ------------------------------------------------------------------------------------------------ late fusion
def fuse(
    predictions: dict[str, np.ndarray],
    has: dict[str, np.ndarray],
    weights: dict[str, float],
    mean: np.ndarray | None = None,
) -> np.ndarray:
    """Σ w_b v̂_b over the blocks each item has, the weights renormalised per item: a missing source degrades the
    prediction to the others instead of dragging it to the mean. An item with none of them gets ``mean`` (default:
    the mean of the first block's predictions)."""
    names = [b for b, w in weights.items() if w > 0]
    total = sum(weights[b] * has[b].astype(np.float64) for b in names)
    fused = sum(weights[b] * has[b][:, None] * predictions[b] for b in names)
    if mean is None:
        mean = next(iter(predictions.values())).mean(axis=0)
    out = np.where(total[:, None] > 0, fused / np.maximum(total, 1e-12)[:, None], mean)
    return out.astype(np.float32)


class FusionScores:
    """Valid AUC of a late fusion by its weights, each distinct fusion scored once: a pair's trials come back in
    every larger combination's forward selection, and each source alone in every combination it is part of."""

    def __init__(self, predictions: dict[str, np.ndarray], has: dict[str, np.ndarray], mean: np.ndarray,
                 data: ColdStartData) -> None:  # fmt: skip
        self.predictions, self.has, self.mean, self.data = predictions, has, mean, data
        self.scored: dict[tuple[tuple[str, float], ...], float] = {}

    def __call__(self, weights: dict[str, float]) -> float:
        key = tuple(sorted((b, round(float(w), 12)) for b, w in weights.items() if w > 0))
        if key not in self.scored:
            self.scored[key] = valid_auc(fuse(self.predictions, self.has, weights, self.mean), self.data)
        return self.scored[key]


def choose_weights(
    names: list[str], score: Callable[[dict[str, float]], float], step: float
) -> tuple[dict[str, float], float]:
    """Late-fusion weights by forward selection on the valid cold items: start from the best block, then add the
    block and mixing weight α (on a grid of ``step``) that raise valid AUC (``score``) most, while any does."""
    alone = {b: score({b: 1.0}) for b in names}
    first = max(names, key=lambda b: alone[b])
    weights, best = {first: 1.0}, alone[first]
    grid = np.arange(step, 1.0, step)
    while len(weights) < len(names):
        trial: tuple[float, str, float] | None = None
        for b in (n for n in names if n not in weights):
            for a in grid:
                w = {k: v * (1 - a) for k, v in weights.items()} | {b: float(a)}
                s = score(w)
                if trial is None or s > trial[0]:
                    trial = (s, b, float(a))
        if trial is None or trial[0] <= best:
            break
        best, b, a = trial
        weights = {k: v * (1 - a) for k, v in weights.items()} | {b: a}
    return {b: weights.get(b, 0.0) for b in names}, best


def block_map(
    grams: Grams, name: str, data: ColdStartData, lambdas: list[float]
) -> tuple[RidgeMap, dict[str, Any], np.ndarray]:
    """One block's ridge map to the item factors, λ chosen by valid AUC over the valid-user sample, solved from the
    block's Gram (every λ's valid predictions from one pass over the valid rows); the map, the choice made (as
    :func:`~socialfeat.measures.coldstart.fit_ridge_map` reports it) and the valid items' predictions at that λ."""
    weights = grams.ridge_path(name, lambdas)
    s, mean = grams.blocks[name], grams.mean_has[name]
    f, lacking = len(mean), ~s.has[data.valid]
    projected = s.project(data.valid, np.hstack(weights))
    valid: list[np.ndarray] = []
    for j in range(len(weights)):
        v = (mean + projected[:, j * f : (j + 1) * f]).astype(np.float32)
        v[lacking] = mean  # no features: the mean factor vector, so every source ranks the same items
        valid.append(v)
    aucs = [valid_auc(v, data) for v in valid]
    best, v_auc = select_best(lambdas, aucs)
    info = {
        "lambda": float(lambdas[best]),
        "valid_auc": v_auc,
        "valid_auc_by_lambda": {str(lam): a for lam, a in zip(lambdas, aucs, strict=True)},
        "fit_items": grams.fit_items[name],
    }
    return RidgeMap(s.mean, s.std, weights[best], mean), info, valid[best]


def map_predictions(grams: Grams, name: str, ridge: RidgeMap, items: np.ndarray) -> np.ndarray:
    """A block map's predicted factors of ``items`` (float32); an item without the block gets the map's mean."""
    s = grams.blocks[name]
    v = (ridge.mean_v + s.project(items, ridge.weight)).astype(np.float32)
    v[~s.has[items]] = np.asarray(ridge.mean_v, np.float32)
    return v


# ------------------------------------------------------------------------------------------------ the search
@dataclass
class Fitted:
    """What the search fit and scored: the content table's rows with each row's per-user test AUC (aligned with
    ``data.test_users``) and each test item's influence on it, each block's own map, the chosen model and how it
    degrades with a source withheld."""

    rows: list[dict[str, Any]]
    per_user: list[np.ndarray]
    per_item: list[np.ndarray | None]  # None where fit without influences (no bootstrap)
    fits: dict[str, dict[str, Any]]
    maps: dict[str, RidgeMap]
    chosen: dict[str, Any]
    withheld: list[dict[str, Any]]
    fulls: list[tuple[str, ...]]
    grams: Grams
    joint: JointFitter | None


def scored(v_test: np.ndarray, data: ColdStartData, k: int, influence: bool = True) -> tuple[dict[str, Any], Ranked]:
    """AUC, recall@k and NDCG@k of predicted factors of the test cold items (aligned with ``data.test``) over the
    test-user sample, and the ranking whose per-user AUCs (and item influences, when ``influence``) the bootstrap
    resamples."""
    ranked = score_users(
        factor_scores(data.user_factors, v_test), data.test_truth, k, data.test_users, influence=influence
    )
    return ranked.summary(), ranked


def fit_models(
    blocks: list[Block],
    data: ColdStartData,
    cc: ContentConfig,
    lambdas: list[float],
    k: int,
    say: Callable[[str], None] = lambda _m: None,
    influence: bool = True,
) -> Fitted:
    """Fit one ridge map per block, score every source alone, in pairs and together (late fusion; the joint ridge
    for the full models), and pick the full model valid AUC prefers: the stage without its files."""
    say("Gram matrices")
    grams = Grams(blocks, data)
    names = [b.name for b in blocks]
    has = {b.name: b.has for b in blocks}
    at_valid = {n: has[n][data.valid] for n in names}
    at_test = {n: has[n][data.test] for n in names}
    maps: dict[str, RidgeMap] = {}
    fits: dict[str, dict[str, Any]] = {}
    valid: dict[str, np.ndarray] = {}
    test: dict[str, np.ndarray] = {}
    for n in names:
        say(f"{n}: ridge map")
        maps[n], fits[n], valid[n] = block_map(grams, n, data, lambdas)
        test[n] = map_predictions(grams, n, maps[n], data.test)
    item_sources = [n for n in names if n in ITEM_SOURCES]
    combos: list[tuple[str, ...]] = [(n,) for n in names] + list(itertools.combinations(names, 2))
    fulls: list[tuple[str, ...]] = []  # every item source, with each image source and with none: the models
    for image in [n for n in names if n in IMAGE_SOURCES] + [None]:
        full = tuple(([image] if image else []) + item_sources)
        if len(full) > 1:
            fulls.append(full)
        if len(full) > 2:
            combos.append(full)
    model_sources = [cc.image, *item_sources] if cc.image in names else item_sources
    joint = JointFitter(blocks, data, grams) if cc.joint else None
    grid = sorted(set(lambdas) | {f["lambda"] for f in fits.values()})
    fusion = FusionScores(valid, at_valid, grams.mean_v, data)
    rows: list[dict[str, Any]] = []
    per_user: list[np.ndarray] = []
    per_item: list[np.ndarray | None] = []
    candidates: list[tuple[float, dict[str, Any]]] = []  # (valid AUC, the model) for the full sources

    def add(row: dict[str, Any], v_test: np.ndarray) -> int:
        summary, ranked = scored(v_test, data, k, influence)
        rows.append({"sources": row.pop("sources"), "model": row.pop("model"), "valid_auc": row.pop("valid_auc"),
                     **summary, "test_items_missing_a_source": row.pop("lacking"), **row})  # fmt: skip
        per_user.append(ranked.auc.astype(np.float32))
        per_item.append(ranked.item_influence)
        return len(rows) - 1

    for combo in dict.fromkeys(combos):
        say(f"fusing {' + '.join(combo)}")
        weights, v_auc = choose_weights(list(combo), fusion, cc.fusion_step)
        lacking = int(sum(~at_test[n] for n in combo).astype(bool).sum())
        variant = "ridge" if len(combo) == 1 else "late fusion"
        fused = fuse(test, at_test, weights, grams.mean_v)
        j = add({"sources": list(combo), "model": variant, "valid_auc": v_auc, "lacking": lacking,
                 "weights": weights}, fused)  # fmt: skip
        full = set(combo) == set(model_sources) and len(combo) == len(model_sources)
        if full:
            candidates.append((v_auc, {"kind": "fusion", "weights": weights, "row": j}))
        if joint is not None and combo in fulls:  # the joint search costs ~10× a fusion: the models only
            say(f"joint ridge {' + '.join(combo)}")
            with threadpool_limits(1):  # bench/content_joint.py: 1.3× faster idle, 2.3× beside a busy process
                jm, j_auc = joint.search(list(combo), {b: fits[b]["lambda"] for b in combo}, grid)
            j = add({"sources": list(combo), "model": "joint", "valid_auc": j_auc, "lacking": lacking,
                     "lambdas": jm.lambdas, "dropout": jm.dropout, "shares": joint.shares(jm)},
                    joint.predict(jm, data.test))  # fmt: skip
            if full:
                candidates.append((j_auc, {"kind": "joint", "joint": jm, "row": j}))
    if not candidates:
        candidates.append((0.0, {"kind": "fusion", "weights": choose_weights(names, fusion, cc.fusion_step)[0],
                                 "row": None}))  # fmt: skip
    chosen = max(candidates, key=lambda c: c[0])[1]  # fusion first: a tie keeps the simpler model
    withheld = []
    sources = chosen["joint"].blocks if chosen["kind"] == "joint" else [b for b, w in chosen["weights"].items() if w]
    for source in sources if len(sources) > 1 else []:  # as if every test item had arrived without it
        if chosen["kind"] == "joint":
            assert joint is not None
            v = joint.predict(chosen["joint"], data.test, withheld=source)
        else:
            v = fuse(test, at_test | {source: np.zeros_like(at_test[source])}, chosen["weights"], grams.mean_v)
        withheld.append({"withheld": source, **scored(v, data, k, influence=False)[0]})
    return Fitted(rows, per_user, per_item, fits, maps, chosen, withheld, fulls, grams, joint)


def chosen_factors(fitted: Fitted, data: ColdStartData) -> np.ndarray:
    """Every item's predicted factors under the chosen model (by item_idx, float32), a chunk of items at a time."""
    chosen, grams = fitted.chosen, fitted.grams
    out = np.empty((data.n_items, len(grams.mean_v)), np.float32)
    for i in range(0, data.n_items, ITEM_CHUNK):
        items = np.arange(i, min(i + ITEM_CHUNK, data.n_items))
        if chosen["kind"] == "joint":
            assert fitted.joint is not None
            out[items] = fitted.joint.predict(chosen["joint"], items)
        else:
            used = [b for b, w in chosen["weights"].items() if w > 0]
            predictions = {b: map_predictions(grams, b, fitted.maps[b], items) for b in used}
            at = {b: grams.blocks[b].has[items] for b in used}
            out[items] = fuse(predictions, at, chosen["weights"], grams.mean_v)
    return out


# ------------------------------------------------------------------------------------------------ intervals
def row_name(row: dict[str, Any]) -> str:
    """``learned + text + tags · joint``: a row's sources, and how they were combined when there are several."""
    joined = " + ".join(row["sources"])
    return joined if len(row["sources"]) == 1 else f"{joined} · {row['model']}"


def _best(rows: list[dict[str, Any]], where: Callable[[dict[str, Any]], bool]) -> int | None:
    """The row valid AUC prefers among those ``where`` accepts (selection without peeking at the test items)."""
    ok = [j for j, r in enumerate(rows) if where(r) and isinstance(r.get("valid_auc"), int | float)]
    ok = [j for j in ok if np.isfinite(rows[j]["valid_auc"])]
    return max(ok, key=lambda j: rows[j]["valid_auc"]) if ok else None


def intervals(
    fitted: Fitted, peer: dict[str, Any] | None, peer_ranked: Ranked | None, resamples: int, seed: int
) -> list[dict[str, Any]]:
    """Set each row's (and the paired peer's) ``auc_ci`` (users and items) and ``auc_ci_users`` from a paired
    bootstrap over the test-user sample and the test items — the same resamples as ``evaluate`` (seed [seed, 2]
    over the same users and items) — and return the differences the headline states: the chosen full model − the
    best model without the image, the full model with the learned image − the one with the ImageNet image, and the
    full model − LightFM."""
    rows = fitted.rows
    with_peer = peer is not None and peer_ranked is not None
    columns = list(fitted.per_user) + ([peer_ranked.auc.astype(np.float32)] if with_peer else [])
    influences = list(fitted.per_item) + ([peer_ranked.item_influence] if with_peer else [])
    per_item = None if any(i is None for i in influences) else np.stack(influences, axis=1)
    point = [r["auc"] for r in rows] + ([peer["auc"]] if with_peer else [])
    means, users = (None, None)
    if resamples and columns:
        means, users = two_way_means(np.stack(columns, axis=1), per_item, resamples, [seed, 2])
    if means is not None and users is not None:
        for j, r in enumerate(rows):
            r["auc_ci"], r["auc_ci_users"] = interval(means[:, j]), interval(users[:, j])
        if with_peer:
            peer["auc_ci"] = interval(means[:, len(rows)])
            peer["auc_ci_users"] = interval(users[:, len(rows)])
    out: list[dict[str, Any]] = []

    def entry(a: int, b: int, label: str, b_name: str | None = None) -> None:
        names = {"a": row_name(rows[a]), "b": b_name or row_name(rows[b])}
        out.append(names | {"label": label, **difference(means, point, a, b, users=users)})

    chosen = fitted.chosen.get("row")
    image = set(IMAGE_SOURCES)
    if chosen is not None and image & set(rows[chosen]["sources"]):
        without = _best(rows, lambda r: not image & set(r["sources"]))
        if without is not None:
            entry(chosen, without, "full model − best without the image")
    by_image = {}
    for full in fitted.fulls:
        sources = [s for s in full if s in IMAGE_SOURCES]
        if len(sources) == 1 and len(full) > 1:
            by_image[sources[0]] = _best(rows, lambda r, full=full: tuple(r["sources"]) == full)
    if by_image.get("learned") is not None and by_image.get("imagenet") is not None:
        entry(by_image["learned"], by_image["imagenet"], "learned − ImageNet (full models)")
    if chosen is not None and with_peer:
        entry(chosen, len(rows), "full model − LightFM", str(peer.get("name", "LightFM")).split(",")[0])
    return out


# ------------------------------------------------------------------------------------------------ the stage
@dataclass
class ContentResult:
    """Where the content model went and how each of its sources scored.

    Attributes:
        out: The content model's folder, ``RUN/content``.
        metrics: Each source's cold-start rows alone, in pairs and together, the chosen model, intervals and notes.
    """

    out: Path
    metrics: dict[str, Any]


def _peer(run: Path, config: Config, blocks: list[Block], data: ColdStartData, notes: list[str],
          say: Callable[[str], None]) -> tuple[dict[str, Any] | None, Ranked | None]:  # fmt: skip
    """The LightFM row on the same test-user sample (so it pairs with the content rows), or why it is skipped."""
    cc = config.content
    item_sources = [b.name for b in blocks if b.name in ITEM_SOURCES]
    if not cc.lightfm or not item_sources:
        return None, None
    from socialfeat.content.lightfm_peer import lightfm_missing, lightfm_row

    name = f"LightFM (WARP), item features: {' + '.join(item_sources)} (dense blocks: 32 principal components)"
    missing = lightfm_missing()
    if missing:
        notes.append(f"LightFM row skipped: {missing}")
        return {"name": name, "skipped": missing}, None
    say("LightFM peer")
    side = sp.hstack([compact(b.features) for b in blocks if b.name in item_sources], format="csr")
    threads = cc.lightfm_threads or os.cpu_count() or 1
    row, ranked = lightfm_row(run, data, side, config.evaluate.k, config.seed, threads=threads)
    return {"name": name, **row}, ranked


@writes_run()
def content(config: Config, run: str | os.PathLike[str], step: Any = None) -> ContentResult:
    """Fit the content model: a new item's factors from its image, title, text, tags and numbers.

    One ridge map per source is fit and scored alone, in pairs and together. Fusion weights come from the valid
    items and AUC from the test items, on evaluate's user samples. Writes ``features/<source>.parquet`` per item
    source, and the model to ``RUN/content/``.

    Args:
        config: The run's configuration; reads ``content``, ``evaluate`` and ``seed``.
        run: The run folder, holding ``factors/`` and the image sources' features.
        step: Hears the name of each phase as it starts.

    Returns:
        The content folder and its metrics.

    Raises:
        UserError: No or unknown sources, stale factors or features, or no source that could be built.
    """
    run = Path(run)
    say = step or (lambda _m: None)
    t0 = time.perf_counter()
    cc, ec = config.content, config.evaluate
    if not cc.sources:
        raise UserError(config.given_by("content.sources", "content.sources"), EMPTY_SOURCES)
    unknown = [s for s in cc.sources if s not in (*IMAGE_SOURCES, *ITEM_SOURCES)]
    if unknown:
        choices = ", ".join((*IMAGE_SOURCES, *ITEM_SOURCES))
        raise UserError("content.sources", f"unknown source(s) {', '.join(unknown)}; choose from {choices}")
    check_current(run, ["factors", *(feature_product(s) for s in IMAGE_SOURCES if s in cc.sources)])
    data = sampled(load_coldstart(run), ec.users, ec.valid_users, config.seed)
    lambdas = sorted(float(x) for x in ec.ridge_lambdas)
    blocks, notes = item_blocks(config, run, data, say)
    for source in (s for s in IMAGE_SOURCES if s in cc.sources):
        found = image_block(run, source, data)
        if found is None:
            notes.append(f"{source}: no features/{source}.parquet (run embed --source {source}); skipped")
        else:
            blocks.insert(0, found)
    if not blocks:
        raise UserError(str(run), "no content source to fit: " + "; ".join(notes))
    fitted = fit_models(blocks, data, cc, lambdas, ec.k, say, influence=ec.bootstrap > 0)
    factors = chosen_factors(fitted, data)
    peer, peer_ranked = _peer(run, config, blocks, data, notes, say)
    if ec.bootstrap:
        say(f"bootstrap ({ec.bootstrap:,} resamples of {len(data.test_users):,} users and {len(data.test):,} items)")
    differences = intervals(fitted, peer, peer_ranked, ec.bootstrap, config.seed)
    metrics = {
        "rows": fitted.rows,
        "fits": fitted.fits,
        "model": _describe(fitted.chosen),
        "withheld": fitted.withheld,
        "peer": peer,
        "differences": differences,
        "notes": notes,
        "split": {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)},
        "sample": user_sample(data, config.seed),
        "bootstrap": bootstrap_settings(ec.bootstrap, len(data.test), config.seed),
        "seconds": time.perf_counter() - t0,
    }
    _write(config, run, blocks, fitted.maps, fitted.chosen | {"factors": factors}, metrics, data)
    return ContentResult(run / "content", metrics)


def _describe(chosen: dict[str, Any]) -> dict[str, Any]:
    if chosen["kind"] == "joint":
        jm: JointMap = chosen["joint"]
        return {"kind": "joint", "sources": jm.blocks, "lambdas": jm.lambdas, "dropout": jm.dropout}
    return {"kind": "fusion", "sources": [b for b, w in chosen["weights"].items() if w > 0],
            "weights": chosen["weights"]}  # fmt: skip


def _write_features(path: Path, block: Block, data: ColdStartData) -> int:
    """``features/<source>.parquet`` of the items that have the block, a row group per chunk (a sparse block is
    densified a chunk at a time, never whole)."""
    rows = np.flatnonzero(block.has)
    step = max(1, 4_000_000 // max(block.features.shape[1], 1))
    with atomic_file(path, "wb") as fh:
        writer = None
        for i in range(0, max(len(rows), 1), step):
            part = rows[i : i + step]
            x = block.features[part]
            x = x.toarray() if sp.issparse(x) else x
            table = pa.table({"item_id": [data.item_ids[j] for j in part], "features": vectors_column(x)})
            if writer is None:
                writer = pq.ParquetWriter(fh, table.schema)
            writer.write_table(table)
        assert writer is not None
        writer.close()
    return len(rows)


def _write(
    config: Config,
    run: Path,
    blocks: list[Block],
    maps: dict[str, RidgeMap],
    chosen: dict[str, Any],
    metrics: dict[str, Any],
    data: ColdStartData,
) -> None:
    for b in blocks:
        if b.name in ITEM_SOURCES:
            items = _write_features(run / "features" / f"{b.name}.parquet", b, data)
            write_json(run / "features" / f"{b.name}.json", {"source": b.name, "dimension": int(b.features.shape[1]),
                       "items": items, **fingerprints(run / "features", f"{b.name}.parquet"),
                       "provenance": provenance(config, "content")})  # fmt: skip
    tensors = {}
    for name, m in maps.items():
        for part in ("mean_x", "std_x", "weight", "mean_v"):
            tensors[f"{name}.{part}"] = np.ascontiguousarray(getattr(m, part), dtype=np.float32)
    weights = chosen.get("weights", {b.name: 0.0 for b in blocks})
    joint_meta = None
    if chosen["kind"] == "joint":
        jm: JointMap = chosen["joint"]
        for b in jm.blocks:
            for part in ("mean_x", "std_x", "weight"):
                tensors[f"joint.{b}.{part}"] = np.ascontiguousarray(getattr(jm, part)[b], dtype=np.float32)
        for missing, fallback in jm.fallbacks.items():
            for b in fallback.blocks:
                tensors[f"joint-without-{missing}.{b}.weight"] = np.ascontiguousarray(fallback.weight[b], np.float32)
        tensors["joint.mean_v"] = np.ascontiguousarray(jm.mean_v, dtype=np.float32)
        joint_meta = {"sources": jm.blocks, "lambdas": jm.lambdas, "dropout": jm.dropout,
                      "fallbacks": list(jm.fallbacks)}  # fmt: skip
        weights = {b.name: (1.0 if b.name in jm.blocks else 0.0) for b in blocks}
    meta = {
        "format": FORMAT,
        "kind": chosen["kind"],
        "weights": weights,
        "joint": joint_meta,
        "blocks": {b.name: b.info | {"dimension": int(b.features.shape[1])} for b in blocks},
        "text_columns": config.content.text_columns,
        "year_from_title": config.content.year_from_title,
    }
    used = [b for b in blocks if weights.get(b.name, 0) > 0]
    factors = pa.table(
        {
            "item_id": data.item_ids,
            "split": data.split.tolist(),
            "factors": vectors_column(chosen["factors"]),
            "sources": [[b.name for b in used if b.has[i]] for i in range(data.n_items)],
        }
    )
    with atomic_dir(run / "content", "content") as tmp:
        write_safetensors(tmp / "model.safetensors", tensors, framework="numpy")
        pq.write_table(factors, tmp / "item_factors.parquet")
        write_json(tmp / "model.json", {**meta, **fingerprints(tmp, "model.safetensors", "item_factors.parquet")})
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "manifest.json", provenance(config, "content"))
