"""``embed``: a feature vector for every item of a run, cold items included, from one of four sources —
``learned`` (the trained model: pooled features plus each head's output), ``imagenet`` (EfficientNet-Lite0
with the packaged ImageNet weights: the baseline to beat), ``random`` (the trained architecture at random
init: the floor) and ``meta-class`` (the same recipe taught by the items' tags alone, when trained). Under
torchrun each rank embeds its share and writes its own part file.
"""

from __future__ import annotations

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
import torch

from socialfeat.atomic import atomic_file, write_json
from socialfeat.config import Config, provenance
from socialfeat.data.batches import CachedImages, EpochBatches
from socialfeat.errors import UserError
from socialfeat.models.backbones import IMAGENET_BACKBONE, create_backbone
from socialfeat.models.heads import FeatureModel, head_key
from socialfeat.models.store import load_model
from socialfeat.runtime import Dist, barrier, batch_loader, setup_distributed, shared_image_cache

log = logging.getLogger(__name__)

SOURCES = ("learned", "imagenet", "random", "meta-class")
MODEL_DIRS = {"learned": "model", "meta-class": "meta-class"}  # sources with a trained model in the run
Progress = Callable[[int, int, float], None]


@dataclass
class EmbedResult:
    out: Path
    summary: dict[str, Any]


def source_model(run: Path, config: Config, source: str) -> tuple[FeatureModel, dict[str, Any]]:
    """The network behind a feature source, in eval mode, and a description of it."""
    if source in MODEL_DIRS:
        model, meta = load_model(run / MODEL_DIRS[source])
        return model, {**meta, "init": f"trained from {meta['init']}"}
    if source == "imagenet":
        desc = {"backbone": IMAGENET_BACKBONE, "init": "imagenet"}
        return FeatureModel(create_backbone(IMAGENET_BACKBONE, "imagenet"), {}).eval(), desc
    if source == "random":
        torch.manual_seed(config.seed)
        name = config.train.backbone
        return FeatureModel(create_backbone(name, "random"), {}).eval(), {"backbone": name, "init": "random"}
    raise UserError("--source", f"expected one of {', '.join(SOURCES)}, got '{source}'")


def vectors_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A float32 matrix as a fixed-size list column (one vector per row)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])


@torch.no_grad()
def embed_rows(
    model: FeatureModel,
    cache_path: Path,
    rows: np.ndarray,
    batch_size: int,
    workers: int,
    device: torch.device,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Pooled features and head outputs for the given cache rows, in row order."""
    ds = CachedImages(cache_path, rows, {})
    keys = list(EpochBatches(len(rows), batch_size, shuffle=False).epoch(0))
    loader = batch_loader(ds, keys, workers, 0, device.type == "cuda")
    outputs: dict[str, list[np.ndarray]] = {"features": [], **{t: [] for t in model.targets}}
    model.to(device)
    done, t0 = 0, time.perf_counter()
    for batch in loader:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pooled, heads = model(batch["images"].to(device, non_blocking=True))
        outputs["features"].append(pooled.float().cpu().numpy())
        for t, value in heads.items():
            outputs[t].append(value.float().cpu().numpy())
        done += len(batch["images"])
        if progress is not None:
            progress(done, len(rows), done / max(time.perf_counter() - t0, 1e-9))
    width = {"features": model.num_features, **{t: model.heads[head_key(t)].out_features for t in model.targets}}
    return {k: np.concatenate(v) if v else np.zeros((0, width[k]), np.float32) for k, v in outputs.items()}


def feature_path(run: Path, source: str, rank: int = 0, world: int = 1) -> Path:
    base = Path(run) / "features"
    return base / f"{source}.parquet" if world == 1 else base / f"{source}.part-{rank:05d}-of-{world:05d}.parquet"


def embed(
    config: Config, run: str | os.PathLike[str], source: str = "learned", progress: Progress | None = None
) -> EmbedResult:
    """Write ``run/features/<source>.parquet``: item_id, ``features`` (pooled) and, for ``learned``, one column
    per head (``head_factors``, ``head_factor_clusters``, …)."""
    run = Path(run)
    model, desc = source_model(run, config, source)
    d: Dist = setup_distributed(config.train.device)
    size = int(desc.get("image_size", config.train.image_size))
    cache = shared_image_cache(d, run, config.train, size)
    rows = np.arange(d.rank, len(cache.item_ids), d.world)
    t0 = time.perf_counter()
    out = embed_rows(model, cache.path, rows, config.embed.batch_size, config.embed.workers, d.device, progress)
    seconds = time.perf_counter() - t0
    columns: dict[str, Any] = {"item_id": pa.array([cache.item_ids[r] for r in rows])}
    columns["features"] = vectors_column(out.pop("features"))
    for target, matrix in out.items():
        columns[f"head_{head_key(target)}"] = vectors_column(matrix)
    path = feature_path(run, source, d.rank, d.world)
    if d.world > 1 and d.main:
        (run / "features" / f"{source}.parquet").unlink(missing_ok=True)  # parts replace a single file
    with atomic_file(path, "wb") as fh:
        pq.write_table(pa.table(columns), fh)
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
    }
    if d.main:
        write_json(run / "features" / f"{source}.json", {**summary, "provenance": provenance(config, "embed")})
    barrier(d)
    return EmbedResult(path, summary)


def read_features(run: str | os.PathLike[str], source: str, column: str = "features") -> tuple[list, np.ndarray]:
    """(item ids, matrix) of a feature source, from its single file or from all of its rank parts."""
    base = Path(run) / "features"
    single = base / f"{source}.parquet"
    parts = sorted(base.glob(f"{source}.part-*-of-*.parquet"))
    if single.is_file():
        files = [single]
    elif parts:
        world = int(parts[0].name.rsplit("-of-", 1)[1].split(".")[0])
        if len(parts) != world:
            raise UserError(str(base), f"{source}: {len(parts)} of {world} rank parts present; rerun embed")
        files = parts
    else:
        raise UserError(str(run), f"no features/{source}.parquet; run `socialfeat embed {run} --source {source}`")
    tables = [pq.read_table(f, columns=["item_id", column]) for f in files]
    table = pa.concat_tables(tables)
    col = table.column(column).combine_chunks()
    matrix = col.flatten().to_numpy().reshape(len(table), col.type.list_size)
    return table.column("item_id").to_pylist(), matrix
