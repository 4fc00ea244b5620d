"""``content``: a new item's audience from everything it arrives with — its image, title and text, tags, numeric
columns such as a year — not from its pixels alone.

Each source is a block of features for every item, cold ones included (``features/<source>.parquet``: the image
sources ``learned`` and ``imagenet`` from ``embed``; ``text``, ``tags`` and ``numeric`` written here). Two content
models are fit and the valid cold items pick one: late fusion (one ridge map per block, each λ chosen on valid, their
predictions averaged with weights chosen on valid; a missing block's weight goes to the others) and the joint ridge
(one ridge over every block, a λ per block, under source dropout, with a fallback per block for an item that lacks
it; see :class:`JointMap`). One λ for all blocks concatenated does worse than either. Written to ``RUN/content/`` as
safetensors + JSON, with every item's predicted factors.

``content/metrics.json`` scores every single source, every pair and the full models on the test cold items with
``evaluate``'s protocol, and the chosen model with each of its sources withheld, so each source's share of the gain
is on the table.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import save_file
from threadpoolctl import threadpool_limits

from socialfeat.artifacts import damaged, read_json, read_safetensors, read_table
from socialfeat.atomic import atomic_dir, atomic_file, write_json
from socialfeat.config import Config, provenance
from socialfeat.data.tags import multi_hot, split_tags, vocabulary
from socialfeat.errors import UserError
from socialfeat.evaluate.coldstart import (
    ColdStartData,
    RidgeMap,
    aligned_features,
    factor_scores,
    fit_ridge_map,
    load_coldstart,
    rank_users,
)
from socialfeat.features import vectors_column
from socialfeat.freshness import check_current, feature_product

log = logging.getLogger(__name__)

IMAGE_SOURCES = ("learned", "imagenet")
ITEM_SOURCES = ("text", "tags", "numeric")
YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")  # "Toy Story (1995)"
FORMAT = 1


@dataclass
class Block:
    """One source's features by item_idx, which items have them, and what is needed to build them again."""

    name: str
    features: np.ndarray
    has: np.ndarray
    info: dict[str, Any]


# --------------------------------------------------------------------------------------------- item sources
def year_from_title(title: Any) -> float | None:
    """The year at the end of a title, as MovieLens writes it (``Toy Story (1995)``); None when there is none."""
    m = YEAR_IN_TITLE.search(str(title or ""))
    return float(m.group(1)) if m else None


def item_text(title: Any, text: Any) -> str:
    """What the text source embeds: the title and the description, the year suffix dropped (numeric has it)."""
    parts = [YEAR_IN_TITLE.sub("", str(title or "")).strip(), str(text or "").strip()]
    return ". ".join(p for p in parts if p)


def numeric_rows(
    values: dict[str, list[float | None]], stats: dict[str, dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per numeric column: the value standardised with the warm items' mean and std, and one-hot coarse bins
    (decades for a year, warm quintiles otherwise); a missing value is all zeros and marks the row as lacking."""
    n = len(next(iter(values.values()))) if values else 0
    blocks, has = [], np.ones(n, dtype=bool)
    for name, column in values.items():
        s = stats[name]
        x = np.array([np.nan if v is None else float(v) for v in column])
        missing = np.isnan(x)
        has &= ~missing
        z = np.where(missing, 0.0, (x - s["mean"]) / s["std"])
        edges = np.asarray(s["edges"])
        bins = np.zeros((n, len(edges) + 1), np.float32)
        where = np.searchsorted(edges, np.where(missing, 0.0, x), side="right")
        bins[np.arange(n)[~missing], where[~missing]] = 1.0
        blocks.append(np.column_stack([z.astype(np.float32), bins]))
    return (np.hstack(blocks).astype(np.float32) if blocks else np.zeros((n, 0), np.float32)), has


def numeric_stats(values: dict[str, list[float | None]], warm: np.ndarray) -> dict[str, dict[str, Any]]:
    stats = {}
    for name, column in values.items():
        x = np.array([np.nan if v is None else float(v) for v in column])[warm]
        x = x[~np.isnan(x)]
        if len(x) < 2:
            raise UserError(f"content.numeric: {name}", "fewer than 2 warm items have a value")
        if name == "year":
            edges = np.arange(np.floor(x.min() / 10) * 10 + 10, x.max() + 1, 10)  # decades
        else:
            edges = np.unique(np.quantile(x, [0.2, 0.4, 0.6, 0.8]))
        stats[name] = {"mean": float(x.mean()), "std": float(max(x.std(), 1e-9)), "edges": [float(e) for e in edges]}
    return stats


def _items(run: Path, n_items: int) -> dict[str, list[Any]]:
    path = run / "dataset" / "items.parquet"
    t = read_table(path)
    idx = t.column("item_idx").to_numpy()
    out: dict[str, list[Any]] = {}
    for name in t.column_names:
        column: list[Any] = [None] * n_items
        for i, v in zip(idx, t.column(name).to_pylist(), strict=True):
            if i < n_items:
                column[int(i)] = v
        out[name] = column
    return out


def item_blocks(config: Config, run: Path, data: ColdStartData, say: Any) -> tuple[list[Block], list[str]]:
    """The text, tags and numeric blocks of every item, as far as the items table holds them; one note per
    source skipped and why."""
    cc = config.content
    items = _items(run, data.n_items)
    notes: list[str] = []
    blocks: list[Block] = []
    if "text" in cc.sources:
        columns = [c for c in cc.text_columns if c in items]
        if not columns:
            notes.append(f"text: the items table has none of the columns {', '.join(cc.text_columns)}; skipped")
        else:
            from socialfeat.models.text import embed_texts

            texts = [item_text(items["title"][i] if "title" in columns else None,
                               " ".join(str(items[c][i] or "") for c in columns if c != "title"))
                     for i in range(data.n_items)]  # fmt: skip
            has = np.array([bool(t) for t in texts])
            say(f"text: embedding {int(has.sum()):,} titles and texts")
            try:
                features = embed_texts(texts, cc.batch_size)
            except UserError as e:  # the text extra is missing: the other sources still make a model
                notes.append(f"text: {e.message}; skipped")
            else:
                features[~has] = 0
                blocks.append(Block("text", features, has, {"columns": columns}))
    if "tags" in cc.sources:
        if "tags" not in items:
            notes.append("tags: the items table has no tags column; skipped")
        else:
            tags = [split_tags(v) for v in items["tags"]]
            vocab = vocabulary([tags[i] for i in data.train], cc.max_tags)
            features, _ = multi_hot(tags, vocab)
            known = set(vocab)
            unseen = sum(1 for i in np.concatenate([data.valid, data.test]) for t in tags[i] if t not in known)
            if unseen:
                notes.append(f"tags: {unseen:,} tags of cold items are not in the warm vocabulary; ignored")
            has = np.array([bool(t) for t in tags])
            blocks.append(Block("tags", features, has, {"vocabulary": vocab}))
    if "numeric" in cc.sources:
        values: dict[str, list[float | None]] = {}
        for name in cc.numeric:
            if name not in items:
                notes.append(f"numeric: the items table has no column '{name}'; skipped")
                continue
            values[name] = [_number(v) for v in items[name]]
        if cc.year_from_title and "title" in items:
            values["year"] = [year_from_title(t) for t in items["title"]]
        if values:
            stats = numeric_stats(values, data.train)
            features, has = numeric_rows(values, stats)
            blocks.append(Block("numeric", features, has, {"columns": stats}))
        elif not cc.numeric and not cc.year_from_title:
            notes.append("numeric: no columns named (content.numeric) and no year from the title; skipped")
    return blocks, notes


def _compact(features: np.ndarray, width: int = 32) -> np.ndarray:
    """A dense block cut to its ``width`` leading principal components (LightFM's cost grows with every feature;
    sparse one-hot blocks narrower than that pass unchanged)."""
    if features.shape[1] <= width:
        return features
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[:width].T).astype(np.float32)


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def image_block(run: Path, source: str, data: ColdStartData) -> Block | None:
    """An image source's pooled features by item_idx (None when ``embed`` has not written them)."""
    try:
        features, has = aligned_features(run, source, "features", data)
    except UserError:
        return None
    return Block(source, features, has, {})


# ------------------------------------------------------------------------------------------------ the model
def fuse(predictions: dict[str, np.ndarray], has: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Σ w_b v̂_b over the blocks each item has, the weights renormalised per item: a missing source degrades the
    prediction to the others instead of dragging it to the mean."""
    names = [b for b, w in weights.items() if w > 0]
    total = sum(weights[b] * has[b].astype(np.float64) for b in names)
    fused = sum(weights[b] * has[b][:, None] * predictions[b] for b in names)
    mean = next(iter(predictions.values())).mean(axis=0)
    out = np.where(total[:, None] > 0, fused / np.maximum(total, 1e-12)[:, None], mean)
    return out.astype(np.float32)


def valid_auc(v: np.ndarray, data: ColdStartData) -> float:
    return rank_users(factor_scores(data.user_factors, v[data.valid]), data.valid_truth, None)["auc"]


def scored_on_test(v: np.ndarray, data: ColdStartData, k: int) -> dict[str, Any]:
    """AUC, recall@k and NDCG@k of predicted factors (by item_idx) on the test cold items: evaluate's protocol."""
    return rank_users(factor_scores(data.user_factors, v[data.test]), data.test_truth, k)


def choose_weights(
    names: list[str], predictions: dict[str, np.ndarray], has: dict[str, np.ndarray], data: ColdStartData, step: float
) -> tuple[dict[str, float], float]:
    """Late-fusion weights by forward selection on the valid cold items: start from the best block, then add the
    block and mixing weight α (on a grid of ``step``) that raise valid AUC most, while any does."""
    alone = {b: valid_auc(fuse(predictions, has, {b: 1.0}), data) for b in names}
    first = max(names, key=lambda b: alone[b])
    weights, best = {first: 1.0}, alone[first]
    grid = np.arange(step, 1.0, step)
    while len(weights) < len(names):
        trial: tuple[float, str, float] | None = None
        for b in (n for n in names if n not in weights):
            for a in grid:
                w = {k: v * (1 - a) for k, v in weights.items()} | {b: float(a)}
                score = valid_auc(fuse(predictions, has, w), data)
                if trial is None or score > trial[0]:
                    trial = (score, b, float(a))
        if trial is None or trial[0] <= best:
            break
        best, b, a = trial
        weights = {k: v * (1 - a) for k, v in weights.items()} | {b: a}
    return {b: weights.get(b, 0.0) for b in names}, best


# ------------------------------------------------------------------------------------- the joint model
DROPOUTS = (0.0, 0.25, 0.5)  # source dropout rates tried on valid (0: a plain block-wise ridge)


@dataclass
class JointMap:
    """One ridge over every block at once, each block with its own λ, fit under marginalised source dropout.

    Late fusion averages what each source predicts alone, so two sources that see the same thing (a poster's
    genre look and the genre tags) are counted twice, and the image can only re-say what the tags already said.
    Fit jointly, the image block explains what the others leave over. An item that arrives without a source is
    scored by the fallback fit on the other sources alone (one per source, same λs and dropout: k small solves),
    not by the full map with a hole in it — the full map's other weights were fit expecting that source beside
    them. Source dropout (each block absent from a training item with probability p, marginalised in closed form)
    is the other guard, and covers items missing several sources, which no fallback matches."""

    blocks: list[str]
    mean_x: dict[str, np.ndarray]
    std_x: dict[str, np.ndarray]
    weight: dict[str, np.ndarray]  # per block: d_b × f
    mean_v: np.ndarray
    lambdas: dict[str, float]
    dropout: float
    fallbacks: dict[str, JointMap] = field(default_factory=dict)  # by the one source missing

    def predict(self, features: dict[str, np.ndarray], has: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Predicted factors of n items from the blocks given (n × d_b each); a block not given, or an item whose
        ``has`` is False, is missing."""
        n = len(next(iter(features.values())))
        present = {b: np.ones(n, bool) if has is None or b not in has else has[b] for b in self.blocks if b in features}
        z = {b: np.where(present[b][:, None], (features[b] - self.mean_x[b]) / self.std_x[b], 0.0) for b in present}
        return self.predict_z(z, present, n)

    def predict_z(self, z: dict[str, np.ndarray], present: dict[str, np.ndarray], n: int) -> np.ndarray:
        """:meth:`predict` on standardised blocks (zero where missing): the main map, and for an item missing
        exactly one source, that source's fallback."""
        out = np.tile(self.mean_v.astype(np.float64), (n, 1))
        for b in self.blocks:
            if b in z:
                out += z[b] @ self.weight[b]
        missing = {b: ~present[b] if b in present else np.ones(n, bool) for b in self.blocks}
        count = sum(m.astype(int) for m in missing.values())
        for b, fallback in self.fallbacks.items():
            rows = missing[b] & (count == 1)
            if rows.any():
                sub = {c: z[c][rows] for c in fallback.blocks}
                out[rows] = fallback.predict_z(sub, {c: present[c][rows] for c in fallback.blocks}, int(rows.sum()))
        return out.astype(np.float32)


class JointFitter:
    """The Gram matrices of every block on the warm items, computed once, so that each (λ per block, dropout)
    a search on valid tries costs one Cholesky factorisation of the combination's size."""

    def __init__(self, blocks: list[Block], data: ColdStartData) -> None:
        from socialfeat.evaluate.metrics import standardizer

        self.data = data
        self.names = [b.name for b in blocks]
        self.z: dict[str, np.ndarray] = {}
        self.mean_x: dict[str, np.ndarray] = {}
        self.std_x: dict[str, np.ndarray] = {}
        self.has = {b.name: b.has for b in blocks}
        for b in blocks:
            fit = data.train[b.has[data.train]]
            d = b.features.shape[1]
            mean, std = standardizer(b.features[fit]) if len(fit) >= 2 else (np.zeros(d), np.ones(d))
            z = (b.features - mean) / std
            z[~b.has] = 0.0  # an absent block is its warm mean: it adds nothing
            self.z[b.name], self.mean_x[b.name], self.std_x[b.name] = z, mean, std
        self.mean_v = data.item_factors.mean(axis=0).astype(np.float64)
        y = data.item_factors.astype(np.float64) - self.mean_v
        train = {b: self.z[b][data.train] for b in self.names}
        self.gram = {(a, b): train[a].T @ train[b] for a in self.names for b in self.names if a <= b}
        self.rhs = {b: train[b].T @ y for b in self.names}

    def fit(self, combo: list[str], lambdas: dict[str, float], dropout: float) -> JointMap:
        from scipy.linalg import cho_factor, cho_solve

        keep = 1.0 - dropout
        sizes = [self.z[b].shape[1] for b in combo]
        at = np.concatenate([[0], np.cumsum(sizes)])
        g = np.zeros((at[-1], at[-1]))
        r = np.vstack([keep * self.rhs[b] for b in combo])
        for i, a in enumerate(combo):
            for j, b in enumerate(combo):
                block = self.gram[(a, b)] if a <= b else self.gram[(b, a)].T
                g[at[i] : at[i + 1], at[j] : at[j + 1]] = (keep if i == j else keep * keep) * block
            g[at[i] : at[i + 1], at[i] : at[i + 1]] += lambdas[a] * np.eye(sizes[i])
        w = cho_solve(cho_factor(g, check_finite=False), r, check_finite=False)
        return JointMap(
            list(combo),
            {b: self.mean_x[b] for b in combo},
            {b: self.std_x[b] for b in combo},
            {b: w[at[i] : at[i + 1]] for i, b in enumerate(combo)},
            self.mean_v,
            dict(lambdas),
            dropout,
        )

    def predictions(self, m: JointMap, withheld: str | None = None) -> np.ndarray:
        """Predicted factors of every item (by item_idx) from the blocks it has, less ``withheld``."""
        n = self.data.n_items
        present = {b: self.has[b] & (b != withheld) for b in m.blocks}
        return m.predict_z({b: self.z[b] for b in m.blocks if b != withheld}, present, n)

    def shares(self, m: JointMap) -> dict[str, float]:
        """Each source's share of what the joint map says about the warm items: the variance of its term (z_b W_b)
        over the sum of the terms' variances — the joint fit's counterpart of late fusion's weights, for the chart."""
        var = {}
        for b in m.blocks:
            term = self.z[b][self.data.train] @ m.weight[b]
            var[b] = float(((term - term.mean(axis=0)) ** 2).sum())
        total = sum(var.values()) or 1.0
        return {b: v / total for b, v in var.items()}

    def with_fallbacks(self, m: JointMap) -> JointMap:
        """``m`` with one fallback per source: the joint map of the other sources, same λs and dropout."""
        if len(m.blocks) > 1:
            for b in m.blocks:
                rest = [c for c in m.blocks if c != b]
                m.fallbacks[b] = self.fit(rest, {c: m.lambdas[c] for c in rest}, m.dropout)
        return m

    def search(self, combo: list[str], start: dict[str, float], grid: list[float]) -> tuple[JointMap, float]:
        """λ per block by coordinate ascent of valid AUC over ``grid`` (from each block's own best λ), then the
        dropout rate; two sweeps, keeping a change only when valid AUC rises."""
        lambdas = {b: start[b] for b in combo}
        best_p = 0.0

        def score(lams: dict[str, float], p: float) -> float:
            return valid_auc(self.predictions(self.fit(combo, lams, p)), self.data)

        best = score(lambdas, best_p)
        for p in DROPOUTS[1:]:
            s = score(lambdas, p)
            if s > best:
                best, best_p = s, p
        for _sweep in range(2):
            changed = False
            for b in combo:
                for lam in grid:
                    if lam == lambdas[b]:
                        continue
                    s = score(lambdas | {b: lam}, best_p)
                    if s > best:
                        best, lambdas, changed = s, lambdas | {b: lam}, True
            for p in DROPOUTS:
                if p != best_p:
                    s = score(lambdas, p)
                    if s > best:
                        best, best_p, changed = s, p, True
            if not changed:
                break
        m = self.with_fallbacks(self.fit(combo, lambdas, best_p))
        return m, valid_auc(self.predictions(m), self.data)  # as it will predict: an item lacking a source included


@dataclass
class ContentResult:
    out: Path
    metrics: dict[str, Any]


def content(config: Config, run: str | os.PathLike[str], step: Any = None) -> ContentResult:
    """Build the content blocks, fit one ridge map per block, score every source alone, in pairs and together
    (fusion weights on valid, AUC on test), and write ``features/<source>.parquet`` for the item sources and the
    content model to ``RUN/content/``."""
    run = Path(run)
    say = step or (lambda _m: None)
    t0 = time.perf_counter()
    cc = config.content
    unknown = [s for s in cc.sources if s not in (*IMAGE_SOURCES, *ITEM_SOURCES)]
    if unknown:
        choices = ", ".join((*IMAGE_SOURCES, *ITEM_SOURCES))
        raise UserError("content.sources", f"unknown source(s) {', '.join(unknown)}; choose from {choices}")
    check_current(run, ["factors", *(feature_product(s) for s in IMAGE_SOURCES if s in cc.sources)])
    data = load_coldstart(run)
    lambdas = sorted(float(x) for x in config.evaluate.ridge_lambdas)
    blocks, notes = item_blocks(config, run, data, say)
    for source in (s for s in IMAGE_SOURCES if s in cc.sources):
        found = image_block(run, source, data)
        if found is None:
            notes.append(f"{source}: no features/{source}.parquet (run embed --source {source}); skipped")
        else:
            blocks.insert(0, found)
    if not blocks:
        raise UserError(str(run), "no content source to fit: " + "; ".join(notes))
    maps: dict[str, RidgeMap] = {}
    predictions: dict[str, np.ndarray] = {}
    has = {b.name: b.has for b in blocks}
    fits: dict[str, dict[str, Any]] = {}
    for b in blocks:
        say(f"{b.name}: ridge map")
        maps[b.name], fits[b.name] = fit_ridge_map(b.features, b.has, data, lambdas)
        predictions[b.name] = maps[b.name].predict_items(b.features, b.has)
    names = [b.name for b in blocks]
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
    joint = JointFitter(blocks, data) if cc.joint else None
    grid = sorted(set(lambdas) | {f["lambda"] for f in fits.values()})
    rows: list[dict[str, Any]] = []
    candidates: list[tuple[float, dict[str, Any]]] = []  # (valid AUC, the model) for the full sources
    for combo in dict.fromkeys(combos):
        say(f"fusing {' + '.join(combo)}")
        weights, v_auc = choose_weights(list(combo), predictions, has, data, cc.fusion_step)
        lacking = int(sum(~has[n][data.test] for n in combo).astype(bool).sum())
        variant = "ridge" if len(combo) == 1 else "late fusion"
        rows.append(_row(combo, variant, fuse(predictions, has, weights), v_auc, data, config.evaluate.k, lacking)
                    | {"weights": weights})  # fmt: skip
        full = set(combo) == set(model_sources) and len(combo) == len(model_sources)
        if full:
            candidates.append((v_auc, {"kind": "fusion", "weights": weights}))
        if joint is not None and combo in fulls:  # the joint search costs ~10× a fusion: the models only
            say(f"joint ridge {' + '.join(combo)}")
            with threadpool_limits(1):  # bench/content_joint.py: 1.3× faster idle, 2.3× beside a busy process
                jm, j_auc = joint.search(list(combo), {b: fits[b]["lambda"] for b in combo}, grid)
            rows.append(_row(combo, "joint", joint.predictions(jm), j_auc, data, config.evaluate.k, lacking)
                        | {"lambdas": jm.lambdas, "dropout": jm.dropout, "shares": joint.shares(jm)})  # fmt: skip
            if full:
                candidates.append((j_auc, {"kind": "joint", "joint": jm}))
    if not candidates:
        candidates.append((0.0, {"kind": "fusion", "weights": choose_weights(names, predictions, has, data,
                                                                             cc.fusion_step)[0]}))  # fmt: skip
    chosen = max(candidates, key=lambda c: c[0])[1]  # fusion first: a tie keeps the simpler model
    if chosen["kind"] == "joint":
        assert joint is not None
        chosen["factors"] = joint.predictions(chosen["joint"])
    else:
        chosen["factors"] = fuse(predictions, has, chosen["weights"])
    withheld = _withheld(chosen, joint, predictions, has, data, config.evaluate.k)
    peer = None
    if cc.lightfm and item_sources:
        from socialfeat.evaluate.lightfm_peer import lightfm_missing, lightfm_row

        name = f"LightFM (WARP), item features: {' + '.join(item_sources)} (dense blocks: 32 principal components)"
        missing = lightfm_missing()
        if missing:
            peer = {"name": name, "skipped": missing}
            notes.append(f"LightFM row skipped: {missing}")
        else:
            say("LightFM peer")
            side = np.hstack([_compact(b.features) for b in blocks if b.name in item_sources])
            peer = {"name": name, **lightfm_row(run, data, side, config.evaluate.k, config.seed)}
    metrics = {
        "rows": rows,
        "fits": fits,
        "model": _describe(chosen),
        "withheld": withheld,
        "peer": peer,
        "notes": notes,
        "split": {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)},
        "seconds": time.perf_counter() - t0,
    }
    _write(config, run, blocks, maps, chosen, metrics, data)
    return ContentResult(run / "content", metrics)


def _row(
    combo: tuple[str, ...], variant: str, v: np.ndarray, v_auc: float, data: ColdStartData, k: int, lacking: int
) -> dict[str, Any]:
    """One row of the content table: predicted factors of every item, scored on the test cold items."""
    return {
        "sources": list(combo),
        "model": variant,
        "valid_auc": v_auc,
        **scored_on_test(v, data, k),
        "test_items_missing_a_source": lacking,
    }


def _withheld(
    chosen: dict[str, Any],
    joint: JointFitter | None,
    predictions: dict[str, np.ndarray],
    has: dict[str, np.ndarray],
    data: ColdStartData,
    k: int,
) -> list[dict[str, Any]]:
    """The fitted model on the test cold items with one of its sources withheld from every one of them, as if
    they had arrived without it: how gracefully the model degrades (what source dropout is for)."""
    out = []
    sources = chosen["joint"].blocks if chosen["kind"] == "joint" else [b for b, w in chosen["weights"].items() if w]
    for source in sources if len(sources) > 1 else []:
        if chosen["kind"] == "joint":
            assert joint is not None
            v = joint.predictions(chosen["joint"], withheld=source)
        else:
            v = fuse(predictions, has | {source: np.zeros_like(has[source])}, chosen["weights"])
        out.append({"withheld": source, **scored_on_test(v, data, k)})
    return out


def _describe(chosen: dict[str, Any]) -> dict[str, Any]:
    if chosen["kind"] == "joint":
        jm: JointMap = chosen["joint"]
        return {"kind": "joint", "sources": jm.blocks, "lambdas": jm.lambdas, "dropout": jm.dropout}
    return {"kind": "fusion", "sources": [b for b, w in chosen["weights"].items() if w > 0],
            "weights": chosen["weights"]}  # fmt: skip


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
            rows = np.flatnonzero(b.has)
            table = pa.table(
                {"item_id": [data.item_ids[i] for i in rows], "features": vectors_column(b.features[rows])}
            )
            write_json(run / "features" / f"{b.name}.json", {"source": b.name, "dimension": int(b.features.shape[1]),
                       "items": len(rows), "provenance": provenance(config, "content")})  # fmt: skip
            with atomic_file(run / "features" / f"{b.name}.parquet", "wb") as fh:
                pq.write_table(table, fh)
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
        save_file(tensors, str(tmp / "model.safetensors"))
        pq.write_table(factors, tmp / "item_factors.parquet")
        write_json(tmp / "model.json", meta)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "manifest.json", provenance(config, "content"))


# ------------------------------------------------------------------------------------ a new item's content
class ContentModel:
    """The fitted content model of a run: predicted item factors for a new item from whichever of its sources are
    given (an image's features, a title and text, tags, numeric values)."""

    def __init__(self, run: str | os.PathLike[str]) -> None:
        folder = Path(run) / "content"
        if not (folder / "model.json").is_file():
            raise UserError(str(run), f"no content model; run `socialfeat content {run}` first")
        self.meta = read_json(folder / "model.json")
        tensors = read_safetensors(folder / "model.safetensors", framework="numpy")
        try:
            self._build(tensors)
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # two files that do not belong together
            what = f"does not fit model.json ({type(e).__name__}: {e})"
            raise damaged(folder / "model.safetensors", what) from None

    def _build(self, tensors: dict[str, np.ndarray]) -> None:
        self.maps = {
            name: RidgeMap(*(tensors[f"{name}.{p}"] for p in ("mean_x", "std_x", "weight", "mean_v")))
            for name in self.meta["blocks"]
        }
        self.weights = {b: float(w) for b, w in self.meta["weights"].items() if w > 0}
        self.joint: JointMap | None = None
        if self.meta.get("kind") == "joint":
            j = self.meta["joint"]
            part = {p: {b: tensors[f"joint.{b}.{p}"] for b in j["sources"]} for p in ("mean_x", "std_x", "weight")}
            self.joint = JointMap(j["sources"], part["mean_x"], part["std_x"], part["weight"],
                                  tensors["joint.mean_v"], j["lambdas"], j["dropout"])  # fmt: skip
            for missing in j.get("fallbacks", []):
                rest = [b for b in j["sources"] if b != missing]
                self.joint.fallbacks[missing] = JointMap(
                    rest,
                    {b: part["mean_x"][b] for b in rest},
                    {b: part["std_x"][b] for b in rest},
                    {b: tensors[f"joint-without-{missing}.{b}.weight"] for b in rest},
                    tensors["joint.mean_v"],
                    {b: j["lambdas"][b] for b in rest},
                    j["dropout"],
                )

    @property
    def image_source(self) -> str | None:
        return next((b for b in self.weights if b in IMAGE_SOURCES), None)

    @property
    def kind(self) -> str:
        """``fusion`` (per-source ridge maps, late fusion) or ``joint`` (one ridge over every source)."""
        return str(self.meta.get("kind", "fusion"))

    @property
    def fields(self) -> list[str]:
        """The fields of a new item this model reads: a title feeds the text source (and the numeric one, when
        the year is parsed from titles), a description the text source, tags the tags source."""
        fit = self.meta["blocks"]
        title = "text" in fit or ("numeric" in fit and bool(self.meta.get("year_from_title")))
        return [f for f, ok in (("title", title), ("text", "text" in fit), ("tags", "tags" in fit)) if ok]

    def shares(self, sources: list[str]) -> dict[str, float] | None:
        """Each source's weight in a late-fusion model, renormalised over ``sources``; None for a joint model,
        whose sources are fit together and do not add up separately."""
        if self.kind != "fusion":
            return None
        total = sum(self.weights[b] for b in sources)
        return {b: self.weights[b] / total for b in sources} if total > 0 else None

    def check(self, title: str | None = None, text: str | None = None, tags: list[str] | None = None) -> list[str]:
        """Refuse, before any image is decoded or text embedded, a field this model cannot read (a :class:`UserError`
        naming it: silently ignoring what a user typed would score a different item than they meant); notes on
        fields read but given no weight by the fusion."""
        if title is not None and not title.strip():
            raise UserError("title", "empty title; give the item's title or leave it out")
        fields = self.fields
        for name, given in (("title", title), ("text", text and text.strip()), ("tags", tags)):
            if given is not None and given != "" and name not in fields:
                source = "tags" if name == "tags" else "text"
                raise UserError(
                    name, f"this run's content model has no {source} source (it was fit on {self.described})"
                )
        notes = []
        for name, given in (("text", title or text), ("tags", tags)):
            if given and name in self.meta["blocks"] and name not in self.weights:
                notes.append(
                    f"{name}: fit, but the fusion chosen on valid gives it no weight; it does not change the score"
                )
        return notes

    @property
    def described(self) -> str:
        """The sources the model was fit on, as a user reads them in a message."""
        return ", ".join(self.meta["blocks"]) or "no source"

    @property
    def vocabulary(self) -> list[str] | None:
        return self.meta["blocks"].get("tags", {}).get("vocabulary")

    def blocks_for(
        self,
        image_features: np.ndarray | None = None,
        title: str | None = None,
        text: str | None = None,
        tags: list[str] | None = None,
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """The feature vector of each source this item has, and notes on what was left out. A field the model
        has no source for (text on a run fit without text, tags without a vocabulary) is a :class:`UserError`
        naming it: silently ignoring what a user typed would score a different item than they meant."""
        notes = self.check(title, text, tags)
        out: dict[str, np.ndarray] = {}
        if image_features is not None and self.image_source:
            out[self.image_source] = image_features
        if "text" in self.weights and (title or text):
            from socialfeat.models.text import embed_texts

            out["text"] = embed_texts([item_text(title, text)])[0]
        if tags and "tags" in self.weights:
            vocab = self.vocabulary or []
            row, unseen = multi_hot([[t.strip().lower() for t in tags if t.strip()]], vocab)
            if unseen:
                notes.append(f"{unseen} of {len(tags)} tags are not in the run's vocabulary; ignored")
            if row.any():
                out["tags"] = row[0]
        if "numeric" in self.weights and title and self.meta.get("year_from_title"):
            stats = self.meta["blocks"]["numeric"]["columns"]
            year = year_from_title(title)
            if year is not None and set(stats) == {"year"}:
                out["numeric"] = numeric_rows({"year": [year]}, stats)[0][0]
        return out, notes

    def predict(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        """Fused predicted factors from the given blocks (weights renormalised over those present)."""
        present = {b: w for b, w in self.weights.items() if b in blocks}
        if not present:
            raise UserError("content", f"none of the model's sources ({', '.join(self.weights)}) was given")
        if self.joint is not None:
            return self.joint.predict({b: blocks[b][None] for b in present})[0]
        total = sum(present.values())
        return sum(w / total * self.maps[b].predict(blocks[b][None])[0] for b, w in present.items())
