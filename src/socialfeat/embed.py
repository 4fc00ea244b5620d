"""``embed``: a feature vector for every item of a run, cold items included, from one of four sources —
``learned`` (the trained model: pooled features plus each head's output), ``imagenet`` (EfficientNet-Lite0
with the packaged ImageNet weights: the baseline to beat), ``random`` (the trained architecture at random
init: the floor) and ``meta-class`` (the same recipe taught by the items' tags alone, when trained). Under
torchrun each rank embeds its share and writes its own part file.

One CPU process runs the forward passes through ONNX Runtime on the run's export (``embed.runtime``; made once and
cached in ``RUN/export/``, remade when the model or the image size changed): several times PyTorch eager's img/s on
CPU (see ``bench/embed.py``). GPUs and torchrun ranks keep PyTorch.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from socialfeat.artifacts import FINGERPRINTS, fingerprints
from socialfeat.atomic import atomic_file, write_json
from socialfeat.config import Config, provenance
from socialfeat.export import Inference, runtime_for
from socialfeat.features import BATCH_ROWS, Progress, embed_rows, feature_path, source_model, vectors_column
from socialfeat.freshness import check_inputs, feature_product
from socialfeat.models.heads import FeatureModel, head_key
from socialfeat.runlock import writes_run
from socialfeat.runtime import Dist, barrier, default_workers, setup_distributed, shared_image_cache, world_team

log = logging.getLogger(__name__)


@dataclass
class EmbedResult:
    """Where one source's item features went and how they were made.

    Attributes:
        out: The feature file, ``RUN/features/<source>.parquet``; under ``torchrun``, this rank's part.
        summary: Source, model, items, dimension, heads, runtime (``onnx`` or ``torch``), seconds and images/s.
    """

    out: Path
    summary: dict[str, Any]


@writes_run()
def embed(
    config: Config, run: str | os.PathLike[str], source: str = "learned", progress: Progress | None = None
) -> EmbedResult:
    """Write a feature vector for every item of a run, cold items included, to ``run/features/<source>.parquet``.

    The file holds ``item_id`` and ``features`` (pooled). For ``learned`` it adds one column per head, such as
    ``head_factors``.

    Args:
        config: The run's configuration; reads ``embed`` and ``train``.
        run: The run folder, holding ``dataset/`` and, for ``learned``, ``model/``.
        source: ``learned``, ``imagenet``, ``random`` or ``meta-class``.
        progress: Hears ``(done, total, images_per_s)`` as batches finish.

    Returns:
        The feature file and a summary.

    Raises:
        UserError: An unknown source, or a model older than what it was trained on, with the command that
            rebuilds it.
    """
    run = Path(run)
    # every rank sees the run folder (shared, or a copy on each node), else all stop at once in one line
    d: Dist = setup_distributed(config.train.device, config.train.dist_timeout_minutes, run)
    check_inputs(run, feature_product(source))  # e.g. learned: model/ current with targets/, factors/, dataset/
    model, desc = source_model(run, config, source)
    size = int(desc.get("image_size", config.train.image_size))
    cache = shared_image_cache(d, run, config.train, size)
    rows = np.arange(d.rank, len(cache.item_ids), d.world)
    t0 = time.perf_counter()
    found = _runtime(model, size, desc, config, run, source, d)  # the export, made once (~20 s) or reused
    t1 = time.perf_counter()
    workers = default_workers(config.embed.workers, d)
    out = embed_rows(found.encoder, cache.path, rows, config.embed.batch_size, workers, d.device, progress)
    seconds = time.perf_counter() - t1
    columns: dict[str, Any] = {"item_id": pa.array([cache.item_ids[r] for r in rows])}
    columns["features"] = vectors_column(out.pop("features"))
    for target, matrix in out.items():
        columns[f"head_{head_key(target)}"] = vectors_column(matrix)
    path = feature_path(run, source, d.rank, d.world)
    if d.world > 1 and d.main:
        (run / "features" / f"{source}.parquet").unlink(missing_ok=True)  # parts replace a single file
    with atomic_file(path, "wb") as fh:
        pq.write_table(pa.table(columns), fh, row_group_size=BATCH_ROWS)  # readers stream it a group at a time
    summary = {
        "source": source,
        "model": desc.get("backbone"),
        "init": desc.get("init"),
        "items": len(rows),
        "without_image": sum(cache.problem_counts.values()),
        "dimension": int(columns["features"].type.list_size),
        "heads": sorted(out),
        "seconds": seconds,
        "images_per_s": len(rows) / max(seconds, 1e-9),
        "rank": d.rank,
        "world": d.world,
        "image_size": size,
        "runtime": found.runtime,
        "runtime_seconds": t1 - t0,
        "threads": cpu_threads(config) if found.runtime == "onnx" else None,
    }
    # each rank hashes its own part (in parallel, on its own node's copy) and rank 0 records every part: each is
    # checked at open, not rank 0's alone
    parts: dict[str, Any] = {}
    for mine in world_team(d).gather(fingerprints(path.parent, path.name)[FINGERPRINTS]):
        parts.update(mine)
    if d.main:
        recorded = {**summary, FINGERPRINTS: parts, "provenance": provenance(config, "embed")}
        write_json(run / "features" / f"{source}.json", recorded)
    barrier(d)
    return EmbedResult(path, summary)


def cpu_threads(config: Config) -> int:
    """ONNX Runtime's intra-op threads: ``train.threads`` when set, else every core."""
    return config.train.threads or os.cpu_count() or 1


def _runtime(
    model: FeatureModel, size: int, desc: dict[str, Any], config: Config, run: Path, source: str, d: Dist
) -> Inference:
    """ONNX Runtime or PyTorch, by ``embed.runtime``, for one CPU process; PyTorch on a GPU and under torchrun (each
    rank's share is small there, and the GPU runs the model itself)."""
    runtime = config.embed.runtime
    if d.world > 1 or d.device.type != "cpu":
        if runtime == "onnx" and d.main:
            log.info("embed.runtime=onnx applies to one CPU process; PyTorch on %s, world %d", d.device, d.world)
        runtime = "torch"
    return runtime_for(model, size, desc, config, run, source, runtime, cpu_threads(config), "embed.runtime")
