"""The VisE engagement target: pseudo-classes from clustering how people engage with an item — what they say
about it (the mean sentence embedding of its comments) and how much they view, like, comment on and share it.

Text dominates the feature (that is where taste shows), the counts and rates nudge it. Items nobody commented on
have no text signal, so they are masked (label -1) rather than guessed."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from socialfeat.artifacts import read_table
from socialfeat.config import TargetsConfig
from socialfeat.errors import UserError
from socialfeat.models.text import encode_unit, text_dimension
from socialfeat.targets.collaborative import kmeans

log = logging.getLogger(__name__)

MASKED = -1


@dataclass
class Engagement:
    """Pseudo labels of every item with factors (-1 = no comments) and what they were clustered from."""

    labels: np.ndarray  # int32, one per item with factors
    has_comments: np.ndarray  # bool mask over the same items
    features: np.ndarray  # rows of the items with comments
    centroids: np.ndarray
    stats: list[str]

    def summary(self) -> dict[str, Any]:
        sizes = np.bincount(self.labels[self.has_comments], minlength=len(self.centroids))
        return {
            "k": len(self.centroids),
            "with_comments": int(self.has_comments.sum()),
            "without_comments": int((~self.has_comments).sum()),
            "smallest": int(sizes.min()),
            "largest": int(sizes.max()),
            "stats": self.stats,
        }


def comment_embeddings(texts_per_item: list[list[str]], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, has_comments): per item the mean of its comments' unit embeddings, renormalized to unit length;
    a zero row where an item has no comment. Each distinct text is embedded once."""
    unique = sorted({t for texts in texts_per_item for t in texts})
    has = np.array([bool(texts) for texts in texts_per_item], dtype=bool)
    out = np.zeros((len(texts_per_item), text_dimension()), dtype=np.float32)
    if not unique:
        return out, has
    emb = encode_unit(unique, batch_size)
    row = {t: k for k, t in enumerate(unique)}
    for i, texts in enumerate(texts_per_item):
        if texts:
            out[i] = emb[[row[t] for t in texts]].mean(axis=0)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out, has


def stat_columns(interactions: pa.Table) -> tuple[list[str], list[str]]:
    """(event count columns, names of all stats): log1p of every count, then each non-view event's rate."""
    counts = [c for c in interactions.column_names if c.startswith("n_")]
    per = "view" if "n_view" in counts else "interaction"
    rates = [f"{c[2:]}_per_{per}" for c in counts if c != "n_view"]
    return counts, [f"log1p_{c}" for c in counts] + rates


def engagement_stats(interactions: pa.Table, item_idx: np.ndarray) -> np.ndarray:
    """Per item (rows in ``item_idx`` order): log1p of each event count summed over users, and the rate of each
    non-view event per view (per interacting user when there are no views), standardized per column over these
    items — so popularity and its kind are comparable across columns."""
    counts, _ = stat_columns(interactions)
    idx = interactions.column("item_idx").to_numpy().astype(np.int64)
    lookup = np.full(max(int(idx.max(initial=-1)), int(np.max(item_idx, initial=-1))) + 1, -1, dtype=np.int64)
    lookup[item_idx] = np.arange(len(item_idx))  # item_idx is dense (0..n_items-1) after ingest
    row = lookup[idx]
    keep = row >= 0
    n = len(item_idx)
    totals = {c: np.bincount(row[keep], interactions.column(c).to_numpy()[keep], minlength=n) for c in counts}
    base = totals["n_view"] if "n_view" in totals else np.bincount(row[keep], minlength=n).astype(np.float64)
    cols = [np.log1p(totals[c]) for c in counts] + [totals[c] / np.maximum(base, 1) for c in counts if c != "n_view"]
    x = np.stack(cols, axis=1) if cols else np.zeros((n, 0))
    std = x.std(axis=0)
    return ((x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def read_comments(dataset: Path, item_idx: np.ndarray, cap: int) -> list[list[str]]:
    """Each item's comment texts, the first ``cap`` by time (text breaks ties, so the choice is deterministic)."""
    path = dataset / "comments.parquet"
    if not path.is_file():
        return [[] for _ in item_idx]
    table = read_table(path, run=dataset.parent)
    keep = pc.and_(
        pc.is_in(table.column("item_idx"), pa.array(item_idx, type=table.schema.field("item_idx").type)),
        pc.not_equal(pc.utf8_trim_whitespace(table.column("text")), ""),
    )
    table = table.filter(keep)
    order = [("item_idx", "ascending")] + [("timestamp", "ascending")] * ("timestamp" in table.column_names)
    table = table.sort_by([*order, ("text", "ascending")])
    items = table.column("item_idx").to_numpy()
    starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]]) if len(items) else np.zeros(0, np.int64)
    rank = np.arange(len(items)) - np.repeat(starts, np.diff(np.r_[starts, len(items)]))
    capped = table.filter(pa.array(rank < cap))
    found: dict[int, list[str]] = defaultdict(list)
    for i, text in zip(capped.column("item_idx").to_pylist(), capped.column("text").to_pylist(), strict=True):
        found[i].append(text)
    return [found.get(int(i), []) for i in item_idx]


def engagement_target(run: Path, item_idx: np.ndarray, cfg: TargetsConfig, seed: int) -> Engagement:
    """Cluster the items with comments on [comment embedding, weighted standardized stats] with k-means."""
    dataset = run / "dataset"
    texts = read_comments(dataset, item_idx, cfg.max_comments_per_item)
    n_with = sum(1 for t in texts if t)
    if n_with == 0:
        raise UserError(
            str(dataset),
            "the engagement target needs comments and no item with factors has any (ingest with --comments); "
            "the factors and factor-clusters targets work without them",
        )
    k = cfg.engagement_clusters
    if n_with < k:
        raise UserError(
            "targets.engagement_clusters",
            f"{k} engagement clusters need at least {k} items with comments; there are {n_with}",
        )
    emb, has = comment_embeddings(texts, cfg.text_batch_size)
    interactions = read_table(dataset / "interactions.parquet", run=run)
    _, names = stat_columns(interactions)
    stats = engagement_stats(interactions, item_idx[has])
    scale = cfg.stats_weight / np.sqrt(max(stats.shape[1], 1))
    features = np.concatenate([emb[has], stats * scale], axis=1).astype(np.float32)
    labels_with, centroids = kmeans(features, k, cfg.kmeans_iterations, seed, spherical=False)
    labels = np.full(len(item_idx), MASKED, dtype=np.int32)
    labels[has] = labels_with
    log.info("engagement: %d items clustered, %d without comments masked", n_with, len(item_idx) - n_with)
    return Engagement(labels=labels, has_comments=has, features=features, centroids=centroids, stats=names)
