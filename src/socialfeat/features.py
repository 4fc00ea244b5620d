"""Feature sources: which network stands behind each, how cached images become vectors, and the feature files.

Shared by every stage that turns images into features or reads them (``embed``, ``embed --images``, ``transfer``,
selection during training, the index, the explorer), so that none of them imports another stage for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch

from socialfeat.artifacts import damaged, read_json, read_table, reading, require_columns, rerun_command
from socialfeat.config import Config
from socialfeat.data.batches import CachedImages, EpochBatches
from socialfeat.errors import UserError
from socialfeat.models.backbones import IMAGENET_BACKBONE, create_backbone
from socialfeat.models.heads import FeatureModel
from socialfeat.models.store import load_model
from socialfeat.runtime import batch_loader

SOURCES = ("learned", "imagenet", "random", "meta-class")
MODEL_DIRS = {"learned": "model", "meta-class": "meta-class"}  # sources with a trained model in the run
Progress = Callable[[int, int, float], None]


class BatchEncoder(Protocol):
    """An exported model (``socialfeat.export.OnnxEncoder``): uint8 NHWC images → {features, <target>}."""

    targets: list[str]
    image_size: int

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


Encoder = FeatureModel | BatchEncoder  # what turns uint8 NHWC images into features: a model or its export


@torch.no_grad()
def encode_batch(encoder: Encoder, images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """A batch of uint8 NHWC images through a model (on its device) or an ONNX export: {features, <target>}."""
    if not isinstance(encoder, FeatureModel):
        return encoder(np.asarray(images))
    device = next(encoder.parameters()).device
    x = torch.as_tensor(images).to(device, non_blocking=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        pooled, heads = encoder(x)
    return {"features": pooled.float().cpu().numpy(), **{t: v.float().cpu().numpy() for t, v in heads.items()}}


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
    model: Encoder,
    cache_path: Path,
    rows: np.ndarray,
    batch_size: int,
    workers: int,
    device: torch.device,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Pooled features and head outputs for the given cache rows, in row order, through a model (moved to
    ``device``) or an ONNX export (CPU)."""
    ds = CachedImages(cache_path, rows, {})
    keys = list(EpochBatches(len(rows), batch_size, shuffle=False).epoch(0))
    onnx = not isinstance(model, FeatureModel)
    loader = batch_loader(ds, keys, workers, 0, not onnx and device.type == "cuda")
    targets = model.targets
    outputs: dict[str, list[np.ndarray]] = {"features": [], **{t: [] for t in targets}}
    if not onnx:
        model.to(device)
    done, t0 = 0, time.perf_counter()
    for batch in loader:
        for name, value in encode_batch(model, batch["images"]).items():
            outputs[name].append(value)
        done += len(batch["images"])
        if progress is not None:
            progress(done, len(rows), done / max(time.perf_counter() - t0, 1e-9))
    if not outputs["features"]:  # no rows: the widths still come from the model
        empty = encode_batch(model, np.zeros((1, 32, 32, 3), np.uint8) if not onnx else _blank(model))
        outputs = {k: [v[:0]] for k, v in empty.items()}
    return {k: np.concatenate(v) for k, v in outputs.items()}


def _blank(encoder: BatchEncoder) -> np.ndarray:
    return np.zeros((1, encoder.image_size, encoder.image_size, 3), np.uint8)


def feature_path(run: Path, source: str, rank: int = 0, world: int = 1) -> Path:
    base = Path(run) / "features"
    return base / f"{source}.parquet" if world == 1 else base / f"{source}.part-{rank:05d}-of-{world:05d}.parquet"


def read_features(run: str | os.PathLike[str], source: str, column: str = "features") -> tuple[list, np.ndarray]:
    """(item ids, matrix) of a feature source, from its single file or from all of its rank parts."""
    files = source_files(run, source)
    tables = [read_table(f, columns=["item_id", column], run=run) for f in files]
    table = pa.concat_tables(tables)
    col = table.column(column).combine_chunks()
    matrix = col.flatten().to_numpy().reshape(len(table), col.type.list_size)
    return table.column("item_id").to_pylist(), matrix


# rows per batch of :func:`feature_batches`: ~64 MB of 1,280-d float32 vectors
BATCH_ROWS = 12_800


def feature_batches(
    run: str | os.PathLike[str], source: str, column: str = "features", rows: int = BATCH_ROWS
) -> Iterator[tuple[list, np.ndarray]]:
    """(item ids, float32 rows) of a feature source, a batch at a time, in file order: a caller that places the
    rows into its own matrix holds that matrix and one batch — not the Arrow table, its combined copy and a
    gathered copy beside it (four copies of the catalogue's vectors at 423K items × 1,280 was 8 GB)."""
    import pyarrow.parquet as pq

    for f in source_files(run, source):
        with reading(f, "Parquet", run) as p:
            require_columns(p, ["item_id", column], run)
            for batch in pq.ParquetFile(p).iter_batches(batch_size=rows, columns=["item_id", column]):
                col = batch.column(1)
                width = col.type.list_size
                values = col.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), width)
                yield batch.column(0).to_pylist(), values.astype(np.float32, copy=False)


def source_files(run: str | os.PathLike[str], source: str) -> list[Path]:
    """The Parquet files of a feature source: its single file, or every one of its rank parts."""
    base = Path(run) / "features"
    single = base / f"{source}.parquet"
    parts = sorted(base.glob(f"{source}.part-*-of-*.parquet"))
    if single.is_file():
        files = [single]
    elif parts:
        world = int(parts[0].name.rsplit("-of-", 1)[1].split(".")[0])
        if len(parts) != world:
            rerun = rerun_command(run, f"features/{source}.parquet")
            raise UserError(str(base), f"{source}: {len(parts)} of {world} rank parts present; rerun: {rerun}")
        files = parts
    else:
        make = rerun_command(run, f"features/{source}.parquet")
        raise UserError(str(run), f"no features/{source}.parquet; make it with: {make}")
    return files


def source_config(config: Config, run: Path, source: str) -> tuple[Config, int | None]:
    """The config and image size the source was embedded with (features/<source>.json), so a new image lands in
    the same space: the ``random`` source depends on the seed and backbone, every source on the image size."""
    summary_path = run / "features" / f"{source}.json"
    if not summary_path.is_file():
        return config, None
    summary = read_json(summary_path, run=run)
    if not isinstance(summary, dict):
        raise damaged(summary_path, "not a JSON object", run=run)
    recorded = summary.get("provenance", {}).get("config", {})
    if source == "random" and recorded:
        train = config.train.model_copy(update={"backbone": recorded["train"]["backbone"]})
        config = config.model_copy(update={"seed": recorded["seed"], "train": train})
    if recorded:  # the block statistics the features were made with, so a new image has the same width
        embed = config.embed.model_copy(update={"block_stats": recorded.get("embed", {}).get("block_stats", 0)})
        config = config.model_copy(update={"embed": embed})
    return config, summary.get("image_size")


def content_older_than(run: Path, sources: list[str]) -> str | None:
    """What the run's content model (``content/``) is older than — ``factors/``, or ``features/<source>.parquet``
    of a source it was fit on — named as in a message; None when it is current. ``evaluate`` trusts the content
    rows, and ``recommend --user`` the content model's cold-item factors, only then: one rule for both."""
    oldest = min(p.stat().st_mtime_ns for p in (run / "content").rglob("*") if p.is_file())
    factors = run / "factors"
    if factors.is_dir() and oldest < max(p.stat().st_mtime_ns for p in [factors, *factors.rglob("*")]):
        return "factors/"
    for source in sorted(set(sources)):
        path = run / "features" / f"{source}.parquet"
        if path.is_file() and oldest < path.stat().st_mtime_ns:
            return f"features/{source}.parquet"
    return None
