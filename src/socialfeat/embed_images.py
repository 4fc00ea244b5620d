"""``embed --images``: features for any table of images, not only the items of a run — the trained model (or the
ImageNet / random-init baselines) as a feature extractor for a user's own collections, and what ``transfer``
probes. Same preprocessing as training (the source's image size, square centre crop, the model's normalisation),
a reusable pre-resized cache under ``RUN/cache/external-<size>-<key>``, and the same defensive decoding: a bad
image is counted, listed and skipped, never a crash. Under torchrun each rank embeds rows ``rank::world``.
"""

from __future__ import annotations

import json
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

from socialfeat.artifacts import fingerprints
from socialfeat.atomic import atomic_file, claim_file, output_kind, write_json
from socialfeat.config import Config, provenance
from socialfeat.data.image_tables import load_image_table, problem_summary
from socialfeat.errors import UserError
from socialfeat.export import encoder_for
from socialfeat.features import BATCH_ROWS, Progress, embed_rows, vectors_column
from socialfeat.freshness import check_inputs, feature_product
from socialfeat.models.heads import head_key
from socialfeat.runlock import writes_run
from socialfeat.runtime import barrier, default_workers, setup_distributed, table_cache

log = logging.getLogger(__name__)

RESERVED = {"image", "features"}  # output columns a carried-over input column may not shadow


def parts_path(out: Path, rank: int, world: int) -> Path:
    """The output file, or under torchrun this rank's part beside it (``x.part-00001-of-00004.parquet``)."""
    out = Path(out)
    return out if world == 1 else out.with_name(f"{out.stem}.part-{rank:05d}-of-{world:05d}{out.suffix}")


def _embedded_here(path: Path) -> bool:
    """A feature file (or its sidecar) an earlier ``embed --images`` wrote: its sidecar says so."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and (meta.get("provenance") or {}).get("stage") == "embed"


def refuse_run_folders(out: Path, run: Path, flag: str = "--out") -> None:
    """A feature file for other images never goes into a run's own folders (``features/``, ``dataset/``, ``model/``
    …): there it would replace, or pass for, what the run's stages wrote (``features/learned.parquet`` is the run's
    item features). Any run counts, this one or another: found by its marker or by this command's RUN argument."""
    runs = {Path(run).resolve()}
    target = out.resolve()
    for folder in target.parents:
        if folder in runs or output_kind(folder) == "run":
            below = target.relative_to(folder).parts
            if len(below) > 1:
                raise UserError(
                    flag,
                    f"{out} is inside the run folder {folder}/{below[0]}, which the run's stages write; nothing was "
                    f"changed: write the features of other images outside the run's folders, e.g. "
                    f"{folder.parent / out.name}",
                )
            return


@dataclass
class EmbedImagesResult:
    """Where the features of a table of images went and which images were skipped.

    Attributes:
        out: The feature file; under ``torchrun``, this rank's part.
        summary: Source, model, rows read and embedded, images skipped and why, runtime, seconds and images/s.
    """

    out: Path
    summary: dict[str, Any]


@writes_run()  # its image cache goes into RUN/cache
def embed_images(
    config: Config,
    run: str | os.PathLike[str],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    source: str = "learned",
    image_column: str = "image",
    progress: Progress | None = None,
    cache_progress: Callable[[int, int], None] | None = None,
) -> EmbedImagesResult:
    """Write features of any table of images, not only a run's items, to ``out`` as Parquet.

    One row per usable image, in table order: ``image`` (the path as given), the table's other columns,
    ``features`` (pooled) and, for ``learned``, ``head_<target>`` per head. A JSON sidecar beside ``out`` lists
    every image skipped, and why.

    Args:
        config: The run's configuration; reads ``embed``, ``train`` and ``ingest.allow_absolute_images``.
        run: The run whose model embeds; its image cache goes into ``RUN/cache``.
        images: A CSV, TSV, Parquet or JSONL table with an image path per row, or a folder of class folders.
        out: The ``.parquet`` file to write, outside any run's folders.
        image_root: The folder the table's paths are relative to; default the table's folder.
        source: ``learned``, ``imagenet``, ``random`` or ``meta-class``.
        image_column: The table's column holding the image paths.
        progress: Hears ``(done, total, images_per_s)`` as batches finish.
        cache_progress: Hears ``(done, total)`` while images are decoded into the cache.

    Returns:
        The feature file and a summary.

    Raises:
        UserError: A bad table or ``out``, an ``out`` inside a run's folders, or a stale model.
    """
    if not Path(out).name:  # '' or '.' or a path ending in '..': no file name to write
        raise UserError("--out", f"expected a file name ending in .parquet for the feature file, got {str(out)!r}")
    run, out = Path(run), Path(out)
    root = Path(image_root) if image_root is not None else None
    refuse_run_folders(out, run)  # a wrong --out fails at once
    check_inputs(run, feature_product(source))  # the source's model current with what it was trained on
    claim_file(
        out,
        "feature file",
        suffixes=(".parquet", ".pq"),
        ours=_embedded_here,
        sidecars=(out.with_suffix(".json"),),
        inputs=(images, root),
        flag="--out",
    )
    table = load_image_table(Path(images), root, image_column, allow_absolute=config.ingest.allow_absolute_images)
    d = setup_distributed(config.train.device, config.train.dist_timeout_minutes)
    # one CPU process: ONNX Runtime where serve.runtime allows it; GPUs and torchrun ranks keep PyTorch
    one_cpu = d.world == 1 and d.device.type == "cpu"
    found = encoder_for(config, run, source, threads=0, runtime=None if one_cpu else "torch")
    model, size, runtime, desc = found.encoder, found.image_size, found.runtime, found.desc
    cache = table_cache(run, table, size, config, d, cache_progress)
    input_rows = np.asarray(cache.item_ids, dtype=np.int64)  # usable input rows, in table order
    mine = np.arange(d.rank, len(input_rows), d.world)
    t0 = time.perf_counter()
    vectors = embed_rows(
        model, cache.path, mine, config.embed.batch_size, default_workers(config.embed.workers, d), d.device, progress
    )
    seconds = time.perf_counter() - t0
    rows = input_rows[mine]
    columns: dict[str, Any] = {"image": pa.array([table.images[r] for r in rows], pa.string())}
    heads = [f"head_{head_key(t)}" for t in vectors if t != "features"]
    for name, values in table.columns.items():
        if name in RESERVED or name in heads:
            log.warning("column '%s' of %s is not carried over: the output has its own '%s'", name, table.path, name)
            continue
        columns[name] = pa.array([values[r] for r in rows], pa.string())
    columns["features"] = vectors_column(vectors.pop("features"))
    for target, matrix in vectors.items():
        columns[f"head_{head_key(target)}"] = vectors_column(matrix)
    path = parts_path(out, d.rank, d.world)
    if d.world > 1 and d.main:
        out.unlink(missing_ok=True)  # parts replace a single file
    with atomic_file(path, "wb") as fh:
        pq.write_table(pa.table(columns), fh, row_group_size=BATCH_ROWS)  # readers stream it a group at a time
    problems = problem_summary(table, cache)
    summary = {
        "source": source,
        "model": desc.get("backbone"),
        "init": desc.get("init"),
        "table": str(table.path),
        "image_root": str(table.root),
        "rows": len(table.images),
        "embedded": len(input_rows),
        "skipped": problems["total"],
        "dimension": int(columns["features"].type.list_size),
        "heads": heads,
        "image_size": size,
        "runtime": runtime,
        "cache": str(cache.path),
        "sidecar": str(out.with_suffix(".json")),
        "seconds": seconds,
        "images_per_s": len(mine) / max(seconds, 1e-9),
        "rank": d.rank,
        "world": d.world,
    }
    if d.main:
        write_json(
            out.with_suffix(".json"),
            {
                **summary,
                "problems": problems,
                **fingerprints(path.parent, path.name),
                "provenance": provenance(config, "embed"),
            },
        )
    barrier(d)
    return EmbedImagesResult(path, {**summary, "problems": problems})
