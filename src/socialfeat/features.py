"""Feature sources: which network stands behind each, how cached images become vectors, and the feature files.

Shared by every stage that turns images into features or reads them (``embed``, ``embed --images``, ``transfer``,
selection during training, the index, the explorer), so that none of them imports another stage for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from socialfeat.config import Config
from socialfeat.data.batches import CachedImages, EpochBatches
from socialfeat.errors import UserError
from socialfeat.models.backbones import IMAGENET_BACKBONE, create_backbone
from socialfeat.models.heads import FeatureModel, head_key
from socialfeat.models.store import load_model
from socialfeat.runtime import batch_loader

SOURCES = ("learned", "imagenet", "random", "meta-class")
MODEL_DIRS = {"learned": "model", "meta-class": "meta-class"}  # sources with a trained model in the run
Progress = Callable[[int, int, float], None]


def source_model(run: Path, config: Config, source: str) -> tuple[FeatureModel, dict[str, Any]]:
    """The network behind a feature source, in eval mode, embedding as ``embed.block_stats`` says."""
    model, desc = _source_model(run, config, source)
    model.block_stats = config.embed.block_stats
    return model, desc


def _source_model(run: Path, config: Config, source: str) -> tuple[FeatureModel, dict[str, Any]]:
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
    if not outputs["features"]:  # no rows: the widths still come from the model
        pooled, _ = model(torch.zeros(1, 32, 32, 3, dtype=torch.uint8, device=device))
        outputs["features"].append(pooled.float().cpu().numpy()[:0])
    width = {"features": model.num_features, **{t: model.heads[head_key(t)].out_features for t in model.targets}}
    return {k: np.concatenate(v) if v else np.zeros((0, width[k]), np.float32) for k, v in outputs.items()}


def feature_path(run: Path, source: str, rank: int = 0, world: int = 1) -> Path:
    base = Path(run) / "features"
    return base / f"{source}.parquet" if world == 1 else base / f"{source}.part-{rank:05d}-of-{world:05d}.parquet"


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
