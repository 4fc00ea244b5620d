"""``index`` and ``similar``: a faiss nearest-neighbour index over one feature column, and the items nearest to a
known item or to a new image. Vectors are L2-normalised and searched by inner product, so scores are cosines.

The index file holds only vectors; row r is the r-th item of the feature file, whose stamp (size, mtime) the JSON
sidecar records — a re-embedded source makes the index stale and ``load_index`` rebuilds it. The sidecar also
records the index file's own fingerprint (size, sha256), checked at every open: a damaged index is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from socialfeat.artifacts import fingerprints, read_faiss, read_json, read_schema, read_table, reading, rerun_command
from socialfeat.atomic import atomic_file, write_json
from socialfeat.config import Config, IndexConfig, load_config
from socialfeat.data.images import LIVE_PREFIX, ImageError, dataset_root, load_image
from socialfeat.errors import UserError
from socialfeat.export import encoder_for
from socialfeat.features import SOURCES, Encoder, encode_batch, read_features, source_config
from socialfeat.freshness import check_current, feature_product
from socialfeat.models.heads import head_key
from socialfeat.runlock import writes_run

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivfpq")
FORMAT = 2  # bump when the index layout or the sidecar changes: old indexes are then rebuilt (2: fingerprinted)
METRIC = "inner product of L2-normalised vectors (cosine)"
SMALL = 20_000  # indexed on one thread below this size (2 shared cores: 60-300x faster at 400 items,
# 3x at 5,000, 2.5x slower at 50,000 — thread spin-up dominates small jobs, worse beside torch's OpenMP)
MIN_IVFPQ = 64  # fewer items cannot train the coarse lists and the PQ codebooks (and need no compression)
TRAIN_SAMPLE = 100_000  # IVF-PQ trains on at most this many vectors (or 50 per list, if more)
BATCH_BYTES = 64 << 20  # vectors read, normalised and added at a time: the index holds the only full copy


@dataclass
class IndexResult:
    """What :func:`build_index` wrote: the index file and what its sidecar records.

    Attributes:
        path: The index file, ``RUN/features/<source>[.<column>].faiss``.
        meta: The sidecar's content: kind, items, dimension, build time and the feature file's fingerprint.
    """

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


def feature_shape(run: Path, files: list[Path], column: str) -> tuple[int, int]:
    """(rows, width) of a feature column, from the files' metadata alone; rank parts must all be there."""
    parts = re.fullmatch(r".+\.part-\d+-of-(\d+)\.parquet", files[0].name)
    if parts:
        world = int(parts.group(1))
        if len(files) != world:
            rerun = rerun_command(run, f"features/{files[0].name.split('.')[0]}.parquet")
            raise UserError(str(files[0].parent), f"{len(files)} of {world} rank parts present; rerun: {rerun}")
    n = 0
    for f in files:
        with reading(f, "Parquet", run):
            n += pq.ParquetFile(f).metadata.num_rows
    return n, int(read_schema(files[0], run=run).field(column).type.list_size)


def vector_batches(run: Path, files: list[Path], column: str, dim: int) -> Iterator[np.ndarray]:
    """A feature column in file order as L2-normalised float32 batches of about ``BATCH_BYTES``, each its own
    writable array normalised in place: an index is filled (or a flat search made) without a second copy of the
    whole matrix beside it."""
    rows = max(1, BATCH_BYTES // (4 * dim))
    for f in files:
        with reading(f, "Parquet", run):
            for batch in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=[column]):
                values = batch.column(0).flatten().to_numpy(zero_copy_only=False)
                x = np.array(values.reshape(len(batch), dim), dtype=np.float32, order="C", copy=True)
                faiss.normalize_L2(x)
                yield x


def _gather(batches: Iterable[np.ndarray], rows: np.ndarray, dim: int) -> np.ndarray:
    """The given rows (ascending) of a stream of batches, as one matrix."""
    out = np.empty((len(rows), dim), dtype=np.float32)
    start = 0
    for x in batches:
        lo, hi = np.searchsorted(rows, [start, start + len(x)])
        out[lo:hi] = x[rows[lo:hi] - start]
        start += len(x)
    return out


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


def make_index(
    batches: Callable[[], Iterable[np.ndarray]], n: int, dim: int, kind: str, cfg: IndexConfig, seed: int = 0
) -> tuple[faiss.Index, dict[str, Any]]:
    """A faiss index of ``kind`` filled from ``batches()`` (each call a fresh pass over the ``n`` normalised
    vectors, in order), and the parameters it was built with. IVF-PQ passes twice: once for its training sample,
    once to add every vector."""
    with _threads(1 if n < SMALL else None):
        return _make_index(batches, n, dim, kind, cfg, seed)


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


def _make_index(
    batches: Callable[[], Iterable[np.ndarray]], n: int, dim: int, kind: str, cfg: IndexConfig, seed: int
) -> tuple[faiss.Index, dict[str, Any]]:
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
        index.train(_gather(batches(), np.sort(rows), dim))
        index.nprobe = min(cfg.nprobe, nlist)
        params = {"nlist": nlist, "pq_m": m, "pq_nbits": nbits, "nprobe": index.nprobe, "trained_on": int(sample)}
    else:
        raise UserError("--kind", f"expected auto, {', '.join(KINDS)}, got '{kind}'")
    for x in batches():
        index.add(x)
    return index, params


@writes_run()
def build_index(
    config: Config, run: str | os.PathLike[str], source: str | None = None, column: str | None = None
) -> IndexResult:
    """Build a faiss index over one feature column, so that similar items are found without a full scan.

    The kind follows the size: exact, then HNSW, then IVF-PQ. A JSON sidecar records the feature file's
    fingerprint, so a stale index is rebuilt, never searched.

    Args:
        config: The run's configuration; reads ``index`` and ``seed``.
        run: The run folder, holding ``features/<source>.parquet``.
        source: The feature source; default ``config.index.source``.
        column: The feature column; default ``config.index.column``, the pooled ``features``.

    Returns:
        The index file and its sidecar's content.

    Raises:
        UserError: Features missing or stale, an unknown column, or no items to index.
    """
    run = Path(run)
    source = source or config.index.source
    column = column or config.index.column
    check_current(run, [feature_product(source)])  # no index over features of an older model
    check_column(run, source, column)
    files = feature_files(run, source)
    stamp = _fingerprint(files)
    n, dim = feature_shape(run, files, column)
    if not n:
        raise UserError(str(files[0]), "no items to index")
    t0 = time.perf_counter()
    kind = choose_kind(config.index, n)
    if kind == "ivfpq" and n < MIN_IVFPQ:
        log.warning("%d items are too few to train IVF-PQ; building an exact index instead", n)
        kind = "flat"
    index, params = make_index(lambda: vector_batches(run, files, column, dim), n, dim, kind, config.index, config.seed)
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
        "n": n,
        "items": n,
        "dim": dim,
        "metric": METRIC,
        "params": params,
        "build_seconds": seconds,
        "index_bytes": path.stat().st_size,
        **fingerprints(path.parent, path.name),  # checked at every open: a damaged index is refused, not searched
        "features": stamp,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(sidecar_path(path), meta)
    log.info("indexed %d items of %s/%s (%s) in %.1f s", n, source, column, kind, seconds)
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


def read_ids(run: Path, files: list[Path]) -> list:
    """The item id of each row of a source's feature files, in order."""
    tables = [read_table(f, columns=["item_id"], run=run) for f in files]
    return pa.concat_tables(tables).column("item_id").to_pylist()


def current_index(run: Path, source: str, column: str, ids: list, config: Config | None = None) -> ItemIndex | None:
    """The run's index of a column when it is current with the feature files (rows ``ids``), else None: for
    readers such as the report, which search an index that is there but never write one."""
    path = index_path(run, source, column)
    if _stale_reason(path, feature_files(run, source)) is not None:
        return None
    index = read_faiss(path, run=run)
    if index.ntotal != len(ids):
        return None
    if config is not None and isinstance(index, faiss.IndexIVF):
        index.nprobe = min(config.index.nprobe, index.nlist)
    return ItemIndex(index, ids, read_json(sidecar_path(path), run=run), path)


def read_rows(run: Path, files: list[Path], column: str, rows: list[int]) -> np.ndarray:
    """Some rows of a feature column, by position and in the order given, as float32: only the row groups that
    hold them are read."""
    wanted = np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(wanted), feature_shape(run, files, column)[1]), dtype=np.float32)
    start = 0
    for f in files:
        with reading(f, "Parquet", run):
            parquet = pq.ParquetFile(f)
            for group in range(parquet.metadata.num_row_groups):
                size = parquet.metadata.row_group(group).num_rows
                inside = np.flatnonzero((wanted >= start) & (wanted < start + size))
                if len(inside):
                    col = parquet.read_row_group(group, columns=[column]).column(0).combine_chunks()
                    picked = col.take(pa.array(wanted[inside] - start)).flatten().to_numpy(zero_copy_only=False)
                    out[inside] = picked.reshape(len(inside), -1)
                start += size
    return out


def exact_search(
    run: Path, files: list[Path], column: str, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cosines) of each query's k nearest rows, best first and ties by row, by exact search in one pass
    over the feature files: a batch and each query's running best are all that is held."""
    q = normalize(queries)
    dim = q.shape[1]
    if k <= 0:
        return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
    best = [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in q]
    start = 0
    for x in vector_batches(run, files, column, dim):
        scores = q @ x.T
        rows = np.arange(start, start + len(x))
        best = [
            _best(np.concatenate([b[0], s]), np.concatenate([b[1], rows]), k) for b, s in zip(best, scores, strict=True)
        ]
        start += len(x)
    return np.array([b[1] for b in best]), np.array([b[0] for b in best])


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest scores and their rows, best first; ties go to the lower row (a stable sort's order)."""
    if len(scores) > k:
        cut = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= cut  # every tie at the cut, so the order below is well defined
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]


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
        # without the run lock: readers (similar, recommend, serve) work while a stage writes the run, and an
        # index is written atomically with the fingerprint of the features it was built from
        build_index.__wrapped__(config or load_config(), run, source, column)
    meta = read_json(sidecar_path(path), run=run)
    index = read_faiss(path, run=run)
    ids = read_ids(run, files)
    if len(ids) != index.ntotal:  # only if the feature files changed in the meantime
        log.info("index %s holds %d items, features %d; rebuilding it", path, index.ntotal, len(ids))
        build_index.__wrapped__(config or load_config(), run, source, column)
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
    if Path(image).is_dir():
        raise UserError(str(image), "is a folder; --image expects an image file (JPEG, PNG, WebP, …)")
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
    root = dataset_root(dataset, read_json(stats, run=run) if stats.is_file() else {})
    info = {}
    for row in table.to_pylist():
        image = row.get("image")
        found = root.resolve(image) if image else None  # a path outside the root is never shown
        shown = found if found is None or image.startswith(LIVE_PREFIX) else root.root / image  # as the table names it
        info[row["item_id"]] = {"title": row.get("title"), "image": str(shown) if shown is not None else None}
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
    """Items nearest to a known item, itself left out, or to a new image, by cosine under one feature source.

    Give exactly one of ``item_id`` and ``image``. A missing or stale index is rebuilt first.

    Args:
        config: The run's configuration; reads ``index``, and ``serve`` for how a new image is embedded.
        run: The run folder.
        item_id: A known item; matched as given, or by its text.
        image: A new image file, embedded by the source's model.
        source: The feature source; default ``config.index.source``.
        k: How many items; default ``config.index.k``.
        column: The feature column; default ``config.index.column``.

    Returns:
        One dict per item, best first: ``rank``, ``item_id``, ``score``, ``title`` and ``image``.

    Raises:
        UserError: Both or neither of ``item_id`` and ``image``, an unknown item, or stale features.
    """
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
