"""The content blocks: one matrix of features per source for every item, cold ones included — ``text`` (title and
description, embedded), ``tags`` (multi-hot over the warm items' vocabulary, kept sparse: a catalogue × 2,000-tag
one-hot is mostly zeros), ``numeric`` (standardised values and coarse bins), and the image sources from ``embed``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from socialfeat.artifacts import read_table
from socialfeat.config import Config
from socialfeat.data.tags import multi_hot_sparse, split_tags, vocabulary
from socialfeat.errors import UserError
from socialfeat.measures.coldstart import ColdStartData, aligned_features

IMAGE_SOURCES = ("learned", "imagenet")
ITEM_SOURCES = ("text", "tags", "numeric")
YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")  # "Toy Story (1995)"
CHUNK_CELLS = 4_000_000  # rows of a dense block are worked on this many cells at a time (≈ 16 MB of float32)


@dataclass
class Block:
    """One source's features by item_idx (dense float32, or CSR for the tags), which items have them, and what is
    needed to build them again."""

    name: str
    features: np.ndarray | sp.csr_matrix
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
            features, _ = multi_hot_sparse(tags, vocab)
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


def compact(features: np.ndarray | sp.csr_matrix, width: int = 32) -> sp.csr_matrix:
    """A block as LightFM's item features: a dense block cut to its ``width`` leading principal components
    (LightFM's cost grows with every non-zero feature), a sparse one-hot passed unchanged (a few non-zeros per
    item already). The components come from the d × d covariance, accumulated over row chunks in float64: no
    n × d float64 copy, and the same subspace as an SVD of the centred rows."""
    if sp.issparse(features):
        return sp.csr_matrix(features, dtype=np.float32)
    x = np.asarray(features)
    if x.shape[1] <= width:
        return sp.csr_matrix(x.astype(np.float32))
    mean = x.mean(axis=0, dtype=np.float64)
    cov = np.zeros((x.shape[1], x.shape[1]))
    step = max(1, CHUNK_CELLS // x.shape[1])
    for i in range(0, len(x), step):
        c = (x[i : i + step] - mean).astype(np.float32)
        cov += c.T @ c
    _, vectors = np.linalg.eigh(cov)
    top = vectors[:, ::-1][:, :width].astype(np.float32)  # eigh sorts ascending: the largest last
    out = np.empty((len(x), width), np.float32)
    for i in range(0, len(x), step):
        out[i : i + step] = (x[i : i + step] - mean).astype(np.float32) @ top
    return sp.csr_matrix(out)


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
