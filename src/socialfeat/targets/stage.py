"""``targets``: a run's item factors → regression targets, factor-cluster pseudo-classes, VisE engagement
pseudo-classes, and a description of every cluster in words (``targets/clusters.json``), so a person can see
what a pseudo-class means."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from socialfeat.artifacts import parquet_fingerprints, read_table
from socialfeat.atomic import atomic_dir, write_json, write_text
from socialfeat.config import Config, dump_config, provenance
from socialfeat.data.tags import item_tags, multi_hot, vocabulary
from socialfeat.errors import UserError
from socialfeat.freshness import check_inputs
from socialfeat.runlock import writes_run
from socialfeat.targets.collaborative import kmeans, normalize_factors, representatives
from socialfeat.targets.describe import distinctive_words, tokens
from socialfeat.targets.engagement import engagement_target

TEXT_COLUMNS = ("title", "tags", "text")


@dataclass
class TargetsResult:
    """Where the targets went and what they hold.

    Attributes:
        out: The targets folder, ``RUN/targets``.
        summary: Per target its size (dimension, clusters or tags), plus each cluster's words and typical items.
    """

    out: Path
    summary: dict[str, Any]


def read_item_factors(run: Path) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(item ids, item indices, factor matrix) of the items the factorization trained on."""
    path = run / "factors" / "item_factors.parquet"
    if not path.is_file():
        raise UserError(str(run), f"no factors/item_factors.parquet; run `socialfeat factorize {run}` first")
    table = read_table(path, columns=["item_id", "item_idx", "factors"], run=run)
    vectors = table.column("factors").combine_chunks()
    width = vectors.type.list_size
    matrix = vectors.flatten().to_numpy().reshape(len(table), width)
    return table.column("item_id").combine_chunks(), table.column("item_idx").to_numpy(), matrix


def item_words(run: Path, item_idx: np.ndarray) -> list[set[str]]:
    """Words of each item: its title, tags and text from the dataset, and its comments."""
    dataset = run / "dataset"
    words: dict[int, set[str]] = defaultdict(set)
    items = read_table(dataset / "items.parquet", run=run)
    for col in TEXT_COLUMNS:
        if col in items.column_names:
            for idx, text in zip(items.column("item_idx").to_pylist(), items.column(col).to_pylist(), strict=True):
                words[idx].update(tokens(text))
    if (dataset / "comments.parquet").is_file():
        comments = read_table(dataset / "comments.parquet", columns=["item_idx", "text"], run=run)
        for idx, text in zip(comments.column("item_idx").to_pylist(), comments.column("text").to_pylist(), strict=True):
            words[idx].update(tokens(text))
    return [words.get(int(i), set()) for i in item_idx]


@writes_run()
def targets(config: Config, run: str | os.PathLike[str]) -> TargetsResult:
    """Turn the item factors into what the image model learns to predict, in ``run/targets``.

    Each target in ``config.targets.targets`` gets one file: ``factors.parquet``, ``factor_clusters.parquet``,
    ``engagement.parquet`` or ``tags.parquet``. In engagement, cluster -1 marks an item without comments, which
    the loss skips.

    Args:
        config: The run's configuration; reads ``targets`` and ``seed``.
        run: The run folder, holding ``factors/`` and ``dataset/``.

    Returns:
        The targets folder and a summary of each target.

    Raises:
        UserError: Factors missing or older than the dataset, no comments for engagement, or no tags for the
            tags target.
    """
    run = Path(run)
    cfg = config.targets
    check_inputs(run, "targets")  # factors/ current with dataset/: no targets from an older factorization
    ids, idx, factors = read_item_factors(run)
    summary: dict[str, Any] = {"items": len(ids), "targets": list(cfg.targets)}
    clusters: dict[str, Any] = {}
    with atomic_dir(run / "targets", "targets") as tmp:
        normalized = normalize_factors(factors, cfg.normalize)
        if "factors" in cfg.targets:
            target = pa.FixedSizeListArray.from_arrays(pa.array(normalized.ravel()), normalized.shape[1])
            pq.write_table(pa.table({"item_id": ids, "item_idx": idx, "target": target}), tmp / "factors.parquet")
            summary["factors"] = {"dimension": int(normalized.shape[1]), "normalize": cfg.normalize}
        if "factor-clusters" in cfg.targets:
            # cluster directions: what the dot-product ranking uses
            unit = normalized if cfg.normalize == "l2" else normalize_factors(factors, "l2")
            labels, centroids = kmeans(unit, cfg.clusters, cfg.kmeans_iterations, config.seed, spherical=True)
            pq.write_table(
                pa.table({"item_id": ids, "item_idx": idx, "cluster": labels}), tmp / "factor_clusters.parquet"
            )
            clusters["factor-clusters"] = describe(run, ids, idx, unit, labels, centroids, config)
            sizes = np.bincount(labels, minlength=cfg.clusters)
            summary["factor-clusters"] = {"k": cfg.clusters, "smallest": int(sizes.min()), "largest": int(sizes.max())}
        if "engagement" in cfg.targets:
            eng = engagement_target(run, idx, cfg, config.seed)
            pq.write_table(
                pa.table({"item_id": ids, "item_idx": idx, "cluster": eng.labels}), tmp / "engagement.parquet"
            )
            has = eng.has_comments
            # described and represented by the items it was clustered from, in the engagement feature space
            clusters["engagement"] = describe(
                run, ids.filter(pa.array(has)), idx[has], eng.features, eng.labels[has], eng.centroids, config
            )
            summary["engagement"] = eng.summary()
        if "tags" in cfg.targets:
            summary["tags"] = tags_target(run, ids, idx, cfg.max_tags, cfg.min_tag_items, tmp / "tags.parquet")
        write_json(tmp / "clusters.json", clusters)
        write_json(tmp / "summary.json", {**summary, **parquet_fingerprints(tmp)})  # checked at every open
        write_json(tmp / "manifest.json", provenance(config, "targets"))
        write_text(tmp / "config.yaml", dump_config(config))
    return TargetsResult(out=run / "targets", summary={**summary, "clusters": clusters})


def tags_target(run: Path, ids: pa.Array, idx: np.ndarray, limit: int, min_items: int, out: Path) -> dict[str, Any]:
    """Multi-hot rows over a tag vocabulary fixed on the warm items (the meta-class target); items whose tags are
    all outside it get an all-zero row, which the loss skips."""
    tags = item_tags(run)
    if tags is None:
        raise UserError("targets.targets", "tags needs a tags column in the items (map it with ingest.item_columns)")
    rows = [tags.get(int(i), []) for i in idx]
    vocab = vocabulary(rows, limit, min_items)
    if not vocab:
        raise UserError("targets.targets", f"no tag labels {min_items} or more warm items; lower targets.min_tag_items")
    matrix, unseen = multi_hot(rows, vocab)
    target = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), len(vocab))
    pq.write_table(pa.table({"item_id": ids, "item_idx": idx, "target": target}), out)
    return {"k": len(vocab), "vocabulary": vocab, "untagged": int((matrix.sum(1) == 0).sum()), "rare_tags": unseen}


def describe(
    run: Path,
    ids: pa.Array,
    idx: np.ndarray,
    vectors: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    config: Config,
) -> list[dict[str, Any]]:
    """Per cluster: size, distinctive words, and the ids of its most typical items."""
    cfg = config.targets
    words = distinctive_words(item_words(run, idx), labels, len(centroids), cfg.words, cfg.min_word_items)
    reps = representatives(vectors, labels, centroids, cfg.representatives)
    id_list = ids.to_pylist()
    return [
        {"cluster": c, "size": int((labels == c).sum()), "words": words[c], "items": [id_list[r] for r in reps[c]]}
        for c in range(len(centroids))
    ]
