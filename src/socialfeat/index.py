"""``index`` and ``similar``: a faiss nearest-neighbour index over one feature column, and the items nearest to a
known item or to a new image. Vectors are L2-normalised and searched by inner product, so scores are cosines.

The index file holds only vectors; row r is the r-th item of the feature file, whose fingerprint (size, mtime)
the JSON sidecar records — a re-embedded source makes the index stale and ``load_index`` rebuilds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from socialfeat.artifacts import read_faiss, read_json, read_schema, read_table
from socialfeat.atomic import atomic_file, write_json
from socialfeat.config import Config, IndexConfig, load_config
from socialfeat.data.images import ImageError, ImageRoot, load_image
from socialfeat.errors import UserError
from socialfeat.export import encoder_for
from socialfeat.features import SOURCES, Encoder, encode_batch, read_features, source_config
from socialfeat.freshness import check_current, feature_product
from socialfeat.models.heads import head_key

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivfpq")
FORMAT = 1  # bump when the index layout or the sidecar changes: old indexes are then rebuilt
METRIC = "inner product of L2-normalised vectors (cosine)"
SMALL = 20_000  # indexed on one thread below this size (2 shared cores: 60-300x faster at 400 items,
# 3x at 5,000, 2.5x slower at 50,000 — thread spin-up dominates small jobs, worse beside torch's OpenMP)
MIN_IVFPQ = 64  # fewer items cannot train the coarse lists and the PQ codebooks (and need no compression)
TRAIN_SAMPLE = 100_000  # IVF-PQ trains on at most this many vectors (or 50 per list, if more)


@dataclass
class IndexResult:
    """What ``build_index`` wrote: the index file and its sidecar's content."""

    path: Path
    meta: dict[str, Any]


@dataclass
class ItemIndex:
    """An opened index, the item id of each of its rows, and its sidecar."""

    index: faiss.Index
    ids: list
    meta: dict[str, Any]
    path: Path


# ----------------------------------------------------------------------------------------------------- files
def index_path(run: str | os.PathLike[str], source: str, column: str = "features") -> Path:
    """``features/<source>.faiss`` for pooled features, ``features/<source>.<column>.faiss`` for a head."""
    suffix = "" if column == "features" else f".{column}"
    return Path(run) / "features" / f"{source}{suffix}.faiss"


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def feature_files(run: str | os.PathLike[str], source: str) -> list[Path]:
    """The files ``read_features`` reads for a source (one file, or its rank parts); empty when there are none."""
    base = Path(run) / "features"
    single = base / f"{source}.parquet"
    return [single] if single.is_file() else sorted(base.glob(f"{source}.part-*-of-*.parquet"))


def _fingerprint(files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        st = f.stat()
        out.append({"file": f.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def check_column(run: Path, source: str, column: str, where: str = "--column") -> None:
    """A missing feature file says which command makes it; a missing column lists the ones there are."""
    files = feature_files(run, source)
    if not files and source not in SOURCES:
        raise UserError("--source", f"no features/{source}.parquet, and sources are {', '.join(SOURCES)}")
    if not files:
        read_features(run, source, column)  # raises the UserError that names `socialfeat embed`
    names = read_schema(files[0], run=run).names
    if column not in names:
        have = ", ".join(n for n in names if n != "item_id")
        raise UserError(where, f"features/{source}.parquet has no column '{column}' (it has: {have})")


# ----------------------------------------------------------------------------------------------------- build
def normalize(vectors: np.ndarray) -> np.ndarray:
    """Float32 rows scaled to unit length (all-zero rows stay zero), as a fresh C-contiguous array."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True, ndmin=2)
    faiss.normalize_L2(x)
    return x


def choose_kind(cfg: IndexConfig, n: int) -> str:
    """``auto``: exact search while it is cheap, HNSW while the graph fits comfortably, IVF-PQ beyond."""
    if cfg.kind != "auto":
        return cfg.kind
    if n <= cfg.exact_max:
        return "flat"
    return "hnsw" if n <= cfg.hnsw_max else "ivfpq"


def pq_subquantizers(dim: int, pq_bytes: int) -> int:
    """The divisor of ``dim`` nearest to ``pq_bytes`` (the smaller one on a tie): PQ splits a vector evenly."""
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - pq_bytes), m))


def make_index(vectors: np.ndarray, kind: str, cfg: IndexConfig, seed: int = 0) -> tuple[faiss.Index, dict[str, Any]]:
    """A filled faiss index of ``kind`` over already normalised vectors, and the parameters it was built with."""
    n, dim = vectors.shape
    with _threads(1 if n < SMALL else None):
        return _make_index(vectors, kind, cfg, seed)


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Cap faiss's OpenMP threads for a block: on small collections thread start-up and spinning (worse beside
    torch's own OpenMP runtime) cost far more than the work."""
    before = faiss.omp_get_max_threads()
    if count is not None:
        faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _make_index(vectors: np.ndarray, kind: str, cfg: IndexConfig, seed: int) -> tuple[faiss.Index, dict[str, Any]]:
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        params: dict[str, Any] = {}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * cfg.hnsw_m)
        index.hnsw.efSearch = max(64, 2 * cfg.k)
        params = {"M": cfg.hnsw_m, "efConstruction": index.hnsw.efConstruction, "efSearch": index.hnsw.efSearch}
    elif kind == "ivfpq":
        # k-means wants ~39 points per centroid: fewer lists (and smaller PQ codebooks) on small collections
        nlist = cfg.ivf_lists or max(1, round(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n // 39))
        sample = min(n, max(TRAIN_SAMPLE, 50 * nlist))
        nbits = int(np.clip(np.floor(np.log2(max(sample, 2) / 16)), 1, 8))
        m = pq_subquantizers(dim, cfg.pq_bytes)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 5
        index.pq.cp.min_points_per_centroid = 5
        rows = np.random.default_rng(seed).choice(n, sample, replace=False) if sample < n else np.arange(n)
        index.train(vectors[np.sort(rows)])
        index.nprobe = min(cfg.nprobe, nlist)
        params = {"nlist": nlist, "pq_m": m, "pq_nbits": nbits, "nprobe": index.nprobe, "trained_on": int(sample)}
    else:
        raise UserError("--kind", f"expected auto, {', '.join(KINDS)}, got '{kind}'")
    index.add(vectors)
    return index, params


def build_index(
    config: Config, run: str | os.PathLike[str], source: str | None = None, column: str | None = None
) -> IndexResult:
    """Write ``features/<source>[.<column>].faiss`` and its JSON sidecar (kind, size, feature-file fingerprint)."""
    run = Path(run)
    source = source or config.index.source
    column = column or config.index.column
    check_current(run, [feature_product(source)])  # no index over features of an older model
    check_column(run, source, column)
    files = feature_files(run, source)
    stamp = _fingerprint(files)
    ids, matrix = read_features(run, source, column)
    if not ids:
        raise UserError(str(files[0]), "no items to index")
    t0 = time.perf_counter()
    vectors = normalize(matrix)
    kind = choose_kind(config.index, len(ids))
    if kind == "ivfpq" and len(ids) < MIN_IVFPQ:
        log.warning("%d items are too few to train IVF-PQ; building an exact index instead", len(ids))
        kind = "flat"
    index, params = make_index(vectors, kind, config.index, config.seed)
    seconds = time.perf_counter() - t0
    path = index_path(run, source, column)
    with atomic_file(path, "wb") as fh:
        faiss.write_index(index, faiss.PyCallbackIOWriter(fh.write))
    meta = {
        "format": FORMAT,
        "source": source,
        "column": column,
        "kind": kind,
        "faiss": type(index).__name__,
        "n": len(ids),
        "items": len(ids),
        "dim": int(vectors.shape[1]),
        "metric": METRIC,
        "params": params,
        "build_seconds": seconds,
        "index_bytes": path.stat().st_size,
        "features": stamp,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(sidecar_path(path), meta)
    log.info("indexed %d items of %s/%s (%s) in %.1f s", len(ids), source, column, kind, seconds)
    return IndexResult(path, meta)


# ----------------------------------------------------------------------------------------------------- load/search
def _stale_reason(path: Path, files: list[Path]) -> str | None:
    """Why the index at ``path`` cannot be used as it is, or None when it is current."""
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        return "missing"
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return "unreadable sidecar"
    if meta.get("format") != FORMAT:
        return "built by another version"
    if meta.get("features") != _fingerprint(files):
        return "out of date with its feature file"
    if meta.get("index_bytes") != path.stat().st_size:
        return "index file does not match its sidecar"
    return None


def _read_ids(run: Path, files: list[Path]) -> list:
    tables = [read_table(f, columns=["item_id"], run=run) for f in files]
    return pa.concat_tables(tables).column("item_id").to_pylist()


def load_index(
    run: str | os.PathLike[str], source: str = "learned", column: str = "features", config: Config | None = None
) -> ItemIndex:
    """Open a source's index, rebuilding it first (with ``config``, else the defaults) when missing or stale."""
    run = Path(run)
    check_column(run, source, column)
    files = feature_files(run, source)
    path = index_path(run, source, column)
    reason = _stale_reason(path, files)
    if reason is not None:
        log.info("index %s is %s; building it", path, reason)
        build_index(config or load_config(), run, source, column)
    meta = read_json(sidecar_path(path), run=run)
    index = read_faiss(path, run=run)
    ids = _read_ids(run, files)
    if len(ids) != index.ntotal:  # only if the feature files changed in the meantime
        log.info("index %s holds %d items, features %d; rebuilding it", path, index.ntotal, len(ids))
        build_index(config or load_config(), run, source, column)
        return load_index(run, source, column, config)
    if config is not None and isinstance(index, faiss.IndexIVF):
        index.nprobe = min(config.index.nprobe, index.nlist)
    return ItemIndex(index, ids, meta, path)


def search(index: ItemIndex, vectors: np.ndarray, k: int) -> tuple[list[list], list[list[float]]]:
    """The k nearest items of each query vector (normalised here): (item ids, cosine scores), best first.

    A row can be shorter than k only for IVF-PQ, when the probed lists hold fewer than k items."""
    q = normalize(vectors)
    k = max(0, min(int(k), index.index.ntotal))
    if k == 0:
        return [[] for _ in range(len(q))], [[] for _ in range(len(q))]
    if isinstance(index.index, faiss.IndexHNSW):
        index.index.hnsw.efSearch = max(index.index.hnsw.efSearch, 2 * k)
    scores, rows = index.index.search(q, k)
    ids = [[index.ids[r] for r in row if r >= 0] for row in rows]
    vals = [
        [float(s) for s, r in zip(srow, row, strict=True) if r >= 0] for srow, row in zip(scores, rows, strict=True)
    ]
    return ids, vals


# ----------------------------------------------------------------------------------------------------- similar
def image_outputs(
    config: Config, run: str | os.PathLike[str], image: str | os.PathLike[str], source: str = "learned"
) -> dict[str, np.ndarray]:
    """A new image through a source's model: {feature column: vector} — ``features`` and ``head_<target>`` —
    on ONNX Runtime or PyTorch as ``serve.runtime`` says (see :func:`socialfeat.export.encoder_for`)."""
    run = Path(run)
    # decode first, at the size the source was embedded with: a bad image fails before an export is built (~20 s)
    size = source_config(config, run, source)[1] or config.train.image_size
    pixels = _decode(config, image, size)
    found = encoder_for(config, run, source, threads=0)
    if found.image_size != size:  # features without a recorded size: the model's own, now that it is known
        pixels = _decode(config, image, found.image_size)
    return model_outputs(found.encoder, pixels)


def _decode(config: Config, image: str | os.PathLike[str], size: int) -> np.ndarray:
    try:
        return load_image(Path(image), size, config.train.max_pixels)
    except ImageError as e:
        raise UserError(str(image), f"cannot use this image ({e})") from None


def model_outputs(encoder: Encoder, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """One decoded image (uint8 HxWx3) through a model or its export: {feature column: vector}, named as in the
    feature files."""
    out = encode_batch(encoder, np.array(pixels[None]))  # a writable copy
    return {("features" if k == "features" else f"head_{head_key(k)}"): v[0] for k, v in out.items()}


def item_info(run: str | os.PathLike[str], ids: list) -> dict[Any, dict[str, Any]]:
    """Title and absolute image path of some items, from dataset/items.parquet (empty when it is missing)."""
    dataset = Path(run) / "dataset"
    items = dataset / "items.parquet"
    if not items.is_file() or not ids:
        return {}
    names = read_schema(items, run=run).names
    table = read_table(items, columns=[c for c in ("item_id", "title", "image") if c in names], run=run)
    table = table.filter(pc.is_in(table.column("item_id"), value_set=pa.array(ids, table.schema.field("item_id").type)))
    stats = dataset / "stats.json"
    recorded = read_json(stats, run=run).get("missing_images", {}) if stats.is_file() else {}
    root = ImageRoot(recorded.get("image_root", dataset), bool(recorded.get("allow_absolute", False)))
    info = {}
    for row in table.to_pylist():
        image = row.get("image")
        inside = bool(image) and root.resolve(image) is not None  # a path outside the root is never shown
        info[row["item_id"]] = {"title": row.get("title"), "image": str(root.root / image) if inside else None}
    return info


def describe(run: str | os.PathLike[str], ids: list, scores: list[float]) -> list[dict[str, Any]]:
    """Result rows: rank, item_id, score, title, image."""
    info = item_info(run, ids)
    return [
        {"rank": r, "item_id": i, "score": s, **info.get(i, {"title": None, "image": None})}
        for r, (i, s) in enumerate(zip(ids, scores, strict=True), start=1)
    ]


def find_row(ids: list, wanted: Any) -> int:
    """The row of id ``wanted`` (matched as given, or by its text: the CLI passes ids as strings); -1 if absent."""
    lookup = {i: r for r, i in enumerate(ids)}
    if wanted in lookup:
        return lookup[wanted]
    text = str(wanted)
    return next((r for r, i in enumerate(ids) if str(i) == text), -1)


def _item_vector(run: Path, source: str, column: str, item_id: Any) -> np.ndarray:
    """One item's stored vector, read without loading the whole feature matrix."""
    table = pads.dataset(feature_files(run, source), format="parquet").to_table(
        columns=[column], filter=pc.field("item_id") == item_id
    )
    col = table.column(column).combine_chunks()
    return col.flatten().to_numpy().reshape(len(table), col.type.list_size)[0]


def nearest(index: ItemIndex, vector: np.ndarray, k: int, exclude: Any = None) -> tuple[list, list[float]]:
    """(ids, cosine scores) of the k items nearest to one vector, best first, leaving out the item ``exclude``."""
    ids, scores = search(index, np.asarray(vector, np.float32)[None], k + (exclude is not None))
    pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if exclude is None or i != exclude][:k]
    return [i for i, _ in pairs], [s for _, s in pairs]


def neighbours(
    run: str | os.PathLike[str], index: ItemIndex, vector: np.ndarray, k: int, exclude: Any = None
) -> list[dict[str, Any]]:
    """The k items nearest to ``vector`` in an opened index, leaving out the item ``exclude``, described."""
    return describe(run, *nearest(index, vector, k, exclude))


def similar(
    config: Config,
    run: str | os.PathLike[str],
    item_id: Any = None,
    image: str | os.PathLike[str] | None = None,
    source: str | None = None,
    k: int | None = None,
    column: str | None = None,
) -> list[dict[str, Any]]:
    """Items nearest to a known item (itself left out) or to a new image file, under one feature source."""
    run = Path(run)
    if (item_id is None) == (image is None):
        raise UserError("ITEM_ID/--image", "give exactly one: an item id or --image PATH")
    source = source or config.index.source
    column = column or config.index.column
    k = k or config.index.k
    check_current(run, [feature_product(source)])  # features (and the model behind them) current with their inputs
    index = load_index(run, source, column, config)
    if image is not None:
        return neighbours(run, index, column_of(image_outputs(config, run, image, source), column), k)
    row = find_row(index.ids, item_id)
    if row < 0:
        raise UserError(str(item_id), f"unknown item: not in features/{source}.parquet of {run}")
    item = index.ids[row]
    return neighbours(run, index, _item_vector(run, source, column, item), k, exclude=item)


def column_of(outputs: dict[str, np.ndarray], column: str) -> np.ndarray:
    if column not in outputs:
        raise UserError("--column", f"the model gives {', '.join(outputs)}; not '{column}'")
    return outputs[column]
