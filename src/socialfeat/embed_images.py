"""``embed --images``: features for any table of images, not only the items of a run — the trained model (or the
ImageNet / random-init baselines) as a feature extractor for a user's own collections, and what ``transfer``
probes. Same preprocessing as training (the source's image size, square centre crop, the model's normalisation),
a reusable pre-resized cache under ``RUN/cache/external-<size>-<key>``, and the same defensive decoding: a bad
image is counted, listed and skipped, never a crash. Under torchrun each rank embeds rows ``rank::world``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from socialfeat.atomic import atomic_file, write_json
from socialfeat.config import Config, provenance
from socialfeat.data.images import EXAMPLES, ImageCache, build_cache, cache_key
from socialfeat.embed import Progress, embed_rows, source_model, vectors_column
from socialfeat.errors import UserError
from socialfeat.models.heads import head_key
from socialfeat.runtime import Dist, barrier, setup_distributed

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
RESERVED = {"image", "features"}  # output columns a carried-over input column may not shadow


@dataclass
class ImageTable:
    """A table of images: each row's path (as given, relative to ``root``) and its other columns as strings."""

    path: Path
    root: Path
    image_column: str
    images: list[str | None]
    columns: dict[str, list[str | None]] = field(default_factory=dict)

    def items(self) -> list[tuple[int, str]]:
        """(row index, path) for the image cache; a row without a path gets one that cannot exist ("missing")."""
        return [(i, p if p else f"<row {i}: no path>") for i, p in enumerate(self.images)]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def read_table(path: Path) -> tuple[list[str], dict[str, list[str | None]]]:
    """Column names and columns (values as stripped strings, None for empty) of a CSV, TSV, Parquet or JSON Lines
    table; anything unreadable is a :class:`UserError` naming the file."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if not path.is_file():
        raise UserError(str(path), "table not found")
    if kind is None:
        raise UserError(str(path), f"unknown table format '{path.suffix}'; expected {', '.join(sorted(FORMATS))}")
    try:
        if kind in ("csv", "tsv"):
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh, delimiter="\t" if kind == "tsv" else ",")
                header = next(reader, None)
                if header is None:
                    raise UserError(str(path), "empty file; expected a header row naming the columns")
                names = [h.strip() for h in header]
                rows = list(reader)
            columns = {n: [_text(r[c]) if c < len(r) else None for r in rows] for c, n in enumerate(names)}
            return names, columns
        table = pq.read_table(path) if kind == "parquet" else pajson.read_json(path)
    except UserError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException) as e:
        raise UserError(str(path), f"not a readable {kind} table ({type(e).__name__}: {e})") from None
    return table.column_names, {n: [_text(v) for v in table.column(n).to_pylist()] for n in table.column_names}


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def folder_table(folder: Path) -> tuple[list[str], dict[str, list[str | None]]]:
    """A folder with one sub-folder per class (``emotion6/anger/001.jpg``, the layout of many public sets) as a
    table: ``image`` (path relative to the folder) and ``label`` (the sub-folder's name)."""
    found = sorted(p for p in Path(folder).glob("*/**/*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise UserError(str(folder), "no images in class sub-folders (expected FOLDER/<class>/<image>.jpg)")
    rel = [p.relative_to(folder) for p in found]
    return ["image", "label"], {"image": [r.as_posix() for r in rel], "label": [r.parts[0] for r in rel]}


def load_image_table(
    path: Path, image_root: Path | None, image_column: str = "image", column_flag: str = "--image-column"
) -> ImageTable:
    """The table's image column mapped and checked; ``image_root`` defaults to the table's folder. A folder instead
    of a table is read as one sub-folder per class (columns ``image`` and ``label``, paths relative to it)."""
    path = Path(path)
    if path.is_dir():
        names, columns = folder_table(path)
        image_root = path if image_root is None else image_root
    else:
        names, columns = read_table(path)
    if image_column not in columns:
        raise UserError(
            str(path),
            f"no image column '{image_column}' (found: {', '.join(names) or 'none'}); map it with {column_flag}",
        )
    images = columns.pop(image_column)
    if not images:
        raise UserError(str(path), "no rows: the table lists no images")
    root = Path(image_root) if image_root is not None else path.parent
    if not root.is_dir():
        raise UserError(
            str(root), "image root folder not found; give --image-root (the folder the paths are relative to)"
        )
    return ImageTable(path, root, image_column, images, columns)


def cache_dir(run: Path, table: ImageTable, size: int, max_pixels: int) -> tuple[Path, str]:
    """Where the table's image cache at ``size`` lives, keyed by paths, file stamps and settings."""
    key = cache_key(table.items(), table.root, size, max_pixels)
    return Path(run) / "cache" / f"external-{size}-{key[:16]}", key


def table_cache(
    run: Path,
    table: ImageTable,
    size: int,
    config: Config,
    d: Dist | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageCache:
    """The table's pre-resized image cache (ids = input row indices), built once and reused while the images and
    settings are unchanged; under torchrun rank 0 builds it while the others wait."""
    max_pixels = config.train.max_pixels
    out, key = cache_dir(run, table, size, max_pixels)

    def get(report: Callable[[int, int], None] | None) -> ImageCache:
        meta = out / "meta.json"
        if meta.is_file():
            try:
                if json.loads(meta.read_text()).get("cache_key") == key:
                    return ImageCache.open(out)
            except (OSError, ValueError, UserError):
                pass
        return build_cache(table.items(), table.root, out, size=size, progress=report, max_pixels=max_pixels)

    d = d or Dist()
    cache = get(progress) if d.main else None
    barrier(d)
    return cache if cache is not None else get(None)


def problem_summary(table: ImageTable, cache: ImageCache) -> dict[str, Any]:
    """Every row whose image could not be used (row index and path), counts by reason, and the reasons of the
    first few (all the cache keeps by name)."""
    good = set(cache.item_ids)
    bad = [i for i in range(len(table.images)) if i not in good]
    examples = [
        {"row": int(p.item_id), "image": table.images[int(p.item_id)], "reason": p.reason}
        for p in cache.problems[:EXAMPLES]
    ]
    return {"total": len(bad), "counts": dict(cache.problem_counts), "examples": examples, "rows": bad}


def parts_path(out: Path, rank: int, world: int) -> Path:
    """The output file, or under torchrun this rank's part beside it (``x.part-00001-of-00004.parquet``)."""
    out = Path(out)
    return out if world == 1 else out.with_name(f"{out.stem}.part-{rank:05d}-of-{world:05d}{out.suffix}")


@dataclass
class EmbedImagesResult:
    out: Path
    summary: dict[str, Any]


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
    """Write ``out`` (Parquet): ``image`` (the path as given), the table's other columns, ``features`` (pooled)
    and, for ``learned``, ``head_<target>`` per head — one row per usable image, in table order — plus a JSON
    sidecar (``out`` with ``.json``) with the model, throughput and every image that was skipped, and why."""
    run, out = Path(run), Path(out)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise UserError("--out", f"expected a .parquet file name, got '{out.name}'")
    if out.is_dir():
        raise UserError("--out", f"{out} is a folder; give a file name such as features.parquet")
    table = load_image_table(Path(images), Path(image_root) if image_root is not None else None, image_column)
    model, desc = source_model(run, config, source)
    d = setup_distributed(config.train.device)
    size = int(desc.get("image_size", config.train.image_size))
    cache = table_cache(run, table, size, config, d, cache_progress)
    input_rows = np.asarray(cache.item_ids, dtype=np.int64)  # usable input rows, in table order
    mine = np.arange(d.rank, len(input_rows), d.world)
    t0 = time.perf_counter()
    vectors = embed_rows(model, cache.path, mine, config.embed.batch_size, config.embed.workers, d.device, progress)
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
        pq.write_table(pa.table(columns), fh)
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
        "cache": str(cache.path),
        "sidecar": str(out.with_suffix(".json")),
        "seconds": seconds,
        "images_per_s": len(mine) / max(seconds, 1e-9),
        "rank": d.rank,
        "world": d.world,
    }
    if d.main:
        write_json(
            out.with_suffix(".json"), {**summary, "problems": problems, "provenance": provenance(config, "embed")}
        )
    barrier(d)
    return EmbedImagesResult(path, {**summary, "problems": problems})
