"""A one-time pre-resized uint8 image cache, so training epochs never decode JPEG/PNG again.

Images come from users and public data sets, so decoding is defensive: every failure is classified
(missing, not an image, truncated, too large, corrupt) and skipped or, with ``strict``, reported.

At scale the cache is the biggest file a run writes (size² × 3 bytes an image: 64 GB for 423K images at 224 px), so
its disk is checked before anything is decoded, the file is allocated whole, skipped images are compacted in place,
and under torchrun the ranks that share its file system decode it together (a :class:`Team`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import struct
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps, UnidentifiedImageError

from socialfeat.atomic import atomic_dir, atomic_file, write_json
from socialfeat.errors import UserError, fixable_os_error, interrupts_held

log = logging.getLogger(__name__)

VERSION = 1  # bump when the cache layout or the decoding changes: old caches then get a new key
EXAMPLES = 20  # problems listed by name in problems.json
CHUNK = 16  # images per worker task: big enough to amortise IPC, small enough for smooth progress
OUTSIDE = "outside the image root"
UNREADABLE = "unreadable"  # there, but the OS will not hand it over: permission denied, a name too long, I/O error
REASONS = ("missing", OUTSIDE, UNREADABLE, "not an image", "truncated", "too large", "corrupt")


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.detail))


@dataclass
class ImageProblem:
    """One image that could not be used, and why."""

    item_id: object
    path: str
    reason: str


@dataclass
class ImageCache:
    """A pre-resized uint8 cache: array (N, size, size, 3) memory-mapped read-only, and which items it holds.

    ``problems`` holds every skipped image after ``build_cache`` but only the first EXAMPLES after ``open``;
    ``problem_counts`` is always complete.
    """

    path: Path
    size: int
    item_ids: list
    rows: dict
    problems: list[ImageProblem]
    problem_counts: dict[str, int] = field(default_factory=dict)

    def array(self) -> np.ndarray:
        """The images, memory-mapped read-only (opened per call: a memmap must not be pickled to workers)."""
        return np.load(self.path / "images.npy", mmap_mode="r")

    @classmethod
    def open(cls, path: Path) -> ImageCache:
        """Read what ``build_cache`` wrote, refusing anything missing, partial or inconsistent."""
        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
            size, count = int(meta["size"]), int(meta["count"])
            table = pq.read_table(path / "index.parquet")
            ids, row_list = table.column("item_id").to_pylist(), table.column("row").to_pylist()
            shape = np.load(path / "images.npy", mmap_mode="r").shape
            probs = json.loads((path / "problems.json").read_text())
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as e:
            raise UserError(str(path), f"not a complete image cache ({type(e).__name__}: {e}); rebuild it") from None
        if shape != (count, size, size, 3) or row_list != list(range(count)):
            raise UserError(str(path), f"image cache is inconsistent: meta says {count} images, array is {shape}")
        problems = [ImageProblem(p["item_id"], p["path"], p["reason"]) for p in probs.get("examples", [])]
        rows = {item: row for row, item in enumerate(ids)}
        return cls(path, size, ids, rows, problems, dict(probs.get("counts", {})))


LIVE_PREFIX = "live:"  # an absorbed live item's image path: live:<file> under the run's live/images


def dataset_root(dataset: Path, stats: dict[str, Any]) -> ImageRoot:
    """The image root a dataset's paths resolve under, as ingest recorded it in ``stats.json`` (with the live
    store's image folder when it absorbed one)."""
    recorded = stats.get("missing_images", {})
    live = dataset.parent / "live" / "images" if stats.get("live", {}).get("items") else None
    return ImageRoot(recorded.get("image_root", dataset), bool(recorded.get("allow_absolute", False)), live)


class ImageRoot:
    """The folder an item table's image paths are relative to, and the one check every reader of those paths
    goes through: a path resolves, symlinks followed, to a file under the root — or to None when it lies outside
    (a ``..`` climb, a symlink out of the root, or an absolute path elsewhere, allowed only when asked for).

    Item tables and runs get shared, and their paths are opened, decoded and served as thumbnails: a path must not
    reach files its root does not hold. Folders are resolved once each, so the check costs one ``lstat`` per image.

    A dataset that absorbed a run's live store has a second, trusted root: ``live``, the store's image folder. Its
    items' paths read ``live:<file>`` and resolve under it, confined the same way; ingest rewrites an item table's
    own ``live:...`` path to ``./live:...``, so a user's path never reaches it.
    """

    def __init__(
        self, root: str | os.PathLike[str], allow_absolute: bool = False, live: str | os.PathLike[str] | None = None
    ) -> None:
        self.root = Path(root)
        self.allow_absolute = allow_absolute
        self.live = None if live is None else ImageRoot(live)
        self._base = os.path.realpath(root)
        self._dirs: dict[str, str] = {}

    def resolve(self, image: str) -> Path | None:
        if self.live is not None and image.startswith(LIVE_PREFIX):
            return self.live.resolve(image[len(LIVE_PREFIX) :])
        if "\0" in image:  # no file has such a name (no OS call accepts one): it names nothing, so nothing leaks
            return Path(self._base, image)
        if os.path.isabs(image):  # fine when it lies under the root; elsewhere only when the user allows it
            target = os.path.realpath(image)
            return Path(target) if self._inside(target) else (Path(image) if self.allow_absolute else None)
        head, name = os.path.split(image)
        folder = self._dirs.get(head)
        if folder is None:
            folder = self._dirs[head] = os.path.realpath(os.path.join(self._base, head))
        target = os.path.join(folder, name)
        if name in ("", ".", "..") or os.path.islink(target):
            target = os.path.realpath(target)
        return Path(target) if self._inside(target) else None

    def _inside(self, target: str) -> bool:
        return self._base == os.sep or target == self._base or target.startswith(self._base + os.sep)


def confined_path(root: str | os.PathLike[str], image: str, allow_absolute: bool = False) -> Path | None:
    """:meth:`ImageRoot.resolve` for one path."""
    return ImageRoot(root, allow_absolute).resolve(image)


def load_image(path: Path, size: int, max_pixels: int = 100_000_000) -> np.ndarray:
    """Decode one image to RGB uint8 (size, size, 3): upright, alpha on white, shorter side scaled, center-cropped."""
    path = Path(path)
    try:
        found = path.is_file()  # False for folders, devices and pipes too (an open() of a pipe would block)
    except OSError as e:  # a name too long for the file system, a folder we may not enter
        raise ImageError(UNREADABLE, f"{path} ({e.strerror or e})") from None
    if not found:
        raise ImageError("missing", str(path))
    return decode_image(path, size, max_pixels)


def decode_image(source: Path | BinaryIO, size: int, max_pixels: int = 100_000_000) -> np.ndarray:
    """``load_image`` for a file or an in-memory upload: the content decides (never the name or a content type),
    and the pixel count is checked from the header before any pixel is decoded."""
    # PIL warns about what it tolerates in a broken file ("Truncated File Read", "Corrupt EXIF data", ...): Python
    # would print that as two lines of library internals over the command's output, so it goes to the debug log.
    # Our own max_pixels check is authoritative over PIL's bomb *warning*; its bomb *error* (2x its limit) still counts.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _decode(source, size, max_pixels)
        finally:
            for w in caught:
                if not issubclass(w.category, Image.DecompressionBombWarning):
                    log.debug("%s: %s: %s", source, w.category.__name__, w.message)


def _decode(source: Path | BinaryIO, size: int, max_pixels: int) -> np.ndarray:
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError("too large", f"{w}x{h} pixels is more than {max_pixels:,}")
            scale = size / min(w, h)
            im.draft("RGB", (max(size, round(w * scale)), max(size, round(h * scale))))  # JPEG DCT scaling
            im.load()  # truncation and decoder errors surface here
            return _to_square(_to_rgb(_upright(im)), size)
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError("not an image", str(e)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL refuses the header before we see its size; say it in our words, with our limit, not PIL's
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        detail = f"{int(claimed[1]):,} pixels" if claimed else "its header claims too many pixels"
        raise ImageError("too large", f"{detail} is more than {max_pixels:,}") from None
    except OSError as e:
        if e.errno is not None:  # the OS refused the file (permission denied, an I/O error), not the decoder
            raise ImageError(UNREADABLE, f"{source} ({e.strerror or e})") from None
        reason = "truncated" if "truncat" in str(e).lower() else "corrupt"
        raise ImageError(reason, str(e)) from None
    except Exception as e:  # decoders raise SyntaxError, ValueError, struct.error, ... on broken files
        raise ImageError("corrupt", f"{type(e).__name__}: {e}") from None


def square_image(im: Image.Image, size: int, max_pixels: int = 100_000_000) -> np.ndarray:
    """``decode_image`` for an image already open in memory, as a library caller holds it.

    Args:
        im: A PIL image in any mode.
        size: Side of the square output, in pixels.
        max_pixels: Larger images are refused.

    Returns:
        RGB uint8 pixels of shape (size, size, 3): upright, alpha on white, centre-cropped.

    Raises:
        ImageError: The image is too large or its pixels cannot be read.
    """
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError("too large", f"{w}x{h} pixels is more than {max_pixels:,}")
    try:
        im.load()
        return _to_square(_to_rgb(_upright(im)), size)
    except OSError as e:
        reason = "truncated" if "truncat" in str(e).lower() else "corrupt"
        raise ImageError(reason, str(e)) from None


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; broken EXIF metadata is not worth losing an otherwise good image."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception as e:
        log.debug("ignoring unreadable EXIF orientation: %s", e)
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any mode to RGB; transparency is composited on white (what a viewer would show)."""
    if im.mode.startswith("I;16"):
        im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _to_square(im: Image.Image, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` and center-crop, in one resampling pass (crop box in source pixels)."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    out = im.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side), reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8).reshape(size, size, 3)


def cache_key(
    items: list[tuple[object, str]],
    image_root: Path,
    size: int,
    max_pixels: int = 100_000_000,
    allow_absolute: bool = False,
    live: Path | None = None,
) -> str:
    """A hash of ids, paths, file sizes and mtimes, ``size`` and the pixel limit (it decides which images are
    kept): equal keys mean an existing cache can be reused. Nothing outside the root is even looked at."""
    head = f"socialfeat-images v{VERSION} size={size} max_pixels={max_pixels} absolute={allow_absolute}\n"
    h = hashlib.sha256(head.encode())
    root = ImageRoot(image_root, allow_absolute, live)
    for item_id, rel in items:
        path = root.resolve(str(rel))
        try:
            if path is None:
                raise FileNotFoundError(rel)
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, ValueError):  # ValueError: a NUL in the name
            stamp = "missing" if path is not None else "outside"
        h.update(json.dumps([repr(item_id), str(rel), stamp]).encode() + b"\n")
    return h.hexdigest()


T = TypeVar("T")
NPY_MAGIC = b"\x93NUMPY\x01\x00"  # .npy format 1.0: a 2-byte header length follows


class Team(Protocol):
    """The processes that build one cache together: under torchrun, the ranks that share its file system; alone,
    :data:`SOLO`. ``gather`` is a collective: every member calls it with a value and gets every member's, in order."""

    rank: int
    size: int

    def gather(self, value: Any) -> list[Any]: ...

    def label(self, member: int) -> str: ...


@dataclass(frozen=True)
class Solo:
    """One process building alone: nothing to gather, nobody to wait for."""

    rank: int = 0
    size: int = 1

    def gather(self, value: Any) -> list[Any]:
        return [value]

    def label(self, member: int) -> str:
        return "this process"


SOLO = Solo()


def together(team: Team, step: Callable[[], T]) -> list[T]:
    """Run ``step`` on every member and gather the results. When a member fails, every member raises at once: that
    member its own exception, the others its one-line UserError (or a RuntimeError naming it), so that no member
    goes on into a later collective to wait for one that has stopped."""
    if team.size == 1:
        return [step()]
    error: Exception | None = None
    try:
        mine: tuple[Any, ...] = ("ok", step())
    except UserError as e:
        mine, error = ("user", e.where, e.message), e
    except Exception as e:  # a bug or a fault keeps its traceback on the member it happened on
        user = fixable_os_error(e)
        mine, error = (("user", user.where, user.message) if user else ("fail", f"{type(e).__name__}: {e}")), e
    outcomes = team.gather(mine)
    if error is not None:
        raise error
    for member, outcome in enumerate(outcomes):
        if outcome[0] == "user":
            raise UserError(outcome[1], outcome[2])
        if outcome[0] == "fail":
            raise RuntimeError(f"{team.label(member)} failed: {outcome[1]}")
    return [outcome[1] for outcome in outcomes]


def cache_bytes(count: int, size: int) -> int:
    """The disk a cache of ``count`` images at ``size`` px takes: size² × 3 bytes per image, plus its index and the
    small files beside it."""
    return count * size * size * 3 + count * 64 + (1 << 18)


def human_bytes(n: float) -> str:
    """Bytes as people read them on a disk's label (decimal units)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def check_space(out: Path, count: int, size: int) -> None:
    """Refuse a cache its file system cannot hold, in one line and before anything is written or decoded.

    An earlier cache at ``out`` stays until the new one replaces it, so the new one needs its own whole size free,
    and no more: skipped images are compacted in place, never into a second copy."""
    need = cache_bytes(count, size)
    folder = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # nothing to measure: the allocation itself will say
        return
    if need > free:
        raise UserError(
            str(out.parent),
            f"cache needs {human_bytes(need)} for {count:,} images at {size} px, {human_bytes(free)} free; "
            "lower train.image_size or free space",
        )


def _npy_header(shape: tuple[int, ...], length: int = 0) -> bytes:
    """A .npy (1.0) header for a uint8 array of ``shape``, padded to ``length`` bytes (else to a multiple of 64)."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(int(n) for n in shape)}).encode("latin1")
    bare = len(NPY_MAGIC) + 2 + len(text) + 1
    length = length or -(-bare // 64) * 64
    if not bare <= length <= 65535:
        raise ValueError(f"a .npy header of {bare} bytes does not fit in {length}")
    body = text.ljust(length - len(NPY_MAGIC) - 3) + b"\n"
    return NPY_MAGIC + struct.pack("<H", len(body)) + body


def _allocate(npy: Path, shape: tuple[int, ...]) -> int:
    """Create the .npy file at its full size with its blocks reserved (``posix_fallocate``) and return the offset of
    its first row: a disk that fills up fails here, as one ENOSPC, and never as a SIGBUS in a decoder writing into a
    hole. A file system that cannot reserve blocks gets a sparse file instead."""
    header = _npy_header(shape)
    total = len(header) + int(np.prod(shape, dtype=np.int64))
    with open(npy, "wb") as fh:
        fh.write(header)
        fh.flush()
        try:
            os.posix_fallocate(fh.fileno(), 0, total)
        except (AttributeError, OSError) as e:  # AttributeError: no posix_fallocate on this OS
            if isinstance(e, OSError) and e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            log.debug("%s: blocks not reserved (%s); the file is sparse", npy, e)
            fh.truncate(total)
    return len(header)


# Worker state: each process opens the file once and writes decoded rows straight into it, at the row's offset
# (pwrite): no image travels through a pipe, memory stays bounded whatever the order of completion, and a rank on
# another machine of a shared file system writes only its rows' bytes, never a page it shares with a neighbour.
_STATE: dict[str, Any] = {}


def _init_worker(
    npy: str, offset: int, root: str, size: int, max_pixels: int, allow_absolute: bool, live: str | None = None
) -> None:
    state = {"root": ImageRoot(root, allow_absolute, live), "size": size, "max_pixels": max_pixels, "offset": offset}
    _STATE.update(fd=os.open(npy, os.O_WRONLY), **state)


def _close_worker() -> None:
    fd = _STATE.pop("fd", None)
    if fd is not None:
        os.close(fd)
    _STATE.clear()


def _decode_chunk(chunk: list[tuple[int, str]]) -> list[tuple[int, str | None]]:
    """Decode a few images into their rows of the file; return (index, failure reason or None)."""
    fd, size, done = _STATE["fd"], _STATE["size"], []
    for i, rel in chunk:
        try:
            path = _STATE["root"].resolve(rel)
            if path is None:
                raise ImageError(OUTSIDE, rel)
            pixels = load_image(path, size, _STATE["max_pixels"])
            _write_at(fd, memoryview(np.ascontiguousarray(pixels)).cast("B"), _STATE["offset"] + i * size * size * 3)
            done.append((i, None))
        except ImageError as e:
            done.append((i, e.reason))
    return done


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _chunks(items: list[tuple[object, str]], indices: np.ndarray) -> Iterator[list[tuple[int, str]]]:
    for start in range(0, len(indices), CHUNK):
        yield [(int(i), str(items[i][1])) for i in indices[start : start + CHUNK]]


def build_cache(
    items: list[tuple[object, str]],
    image_root: Path,
    out: Path,
    size: int = 224,
    strict: bool = False,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    max_pixels: int = 100_000_000,
    allow_absolute: bool = False,
    team: Team = SOLO,
    live: Path | None = None,
) -> ImageCache:
    """Decode every (item_id, relative path) once into ``out`` (atomically); bad images are skipped and counted,
    and so is a path that leads outside ``image_root`` (see :func:`confined_path`), which is never opened.

    The disk the cache needs is checked first and the file allocated whole before any image is decoded. With a
    ``team`` (the ranks that share the cache's file system), each member decodes its share of the rows into that
    one file, then the first member finishes it; a failure of any member stops every member at once."""
    image_root, out, total = Path(image_root), Path(out), len(items)
    if not items:
        raise UserError(str(image_root), "no images to cache: the item list is empty")
    share = np.array_split(np.arange(total), team.size)[team.rank]
    report = None
    if progress is not None:  # this member's share, scaled to the whole: every member decodes at about one pace
        report = lambda done, _: progress(min(total, done * total // max(1, len(share))), total)  # noqa: E731
    key, built = [], []
    with contextlib.ExitStack() as stack:

        def prepare() -> tuple[str, int] | None:
            if team.rank:
                return None
            key.append(cache_key(items, image_root, size, max_pixels, allow_absolute, live))
            check_space(out, total, size)
            tmp = stack.enter_context(atomic_dir(out, "image cache"))
            try:
                return str(tmp), _allocate(tmp / "decoded.npy", (total, size, size, 3))
            except OSError as e:
                raise (fixable_os_error(e, out) or e) from e

        folder, offset = together(team, prepare)[0]
        npy = Path(folder) / "decoded.npy"
        args = (items, share, npy, offset, image_root, size, max_pixels, allow_absolute, strict, workers, report, live)
        failed = sorted(itertools.chain.from_iterable(together(team, lambda: _decode_share(*args))))

        def finish() -> None:
            if team.rank == 0:
                built.append(_finish(out, npy, items, failed, size, key[0], image_root, offset))
                stack.close()  # the new folder replaces out

        together(team, finish)
    return built[0] if built else ImageCache.open(out)


def _decode_share(
    items: list[tuple[object, str]],
    share: np.ndarray,
    npy: Path,
    offset: int,
    root: Path,
    size: int,
    max_pixels: int,
    allow_absolute: bool,
    strict: bool,
    workers: int,
    progress: Callable[[int, int], None] | None,
    live: Path | None = None,
) -> list[tuple[int, str]]:
    """Decode the rows ``share`` into the file; return the (index, reason) of each image that could not be used."""
    failed: list[tuple[int, str]] = []
    decoded = contextlib.closing(
        _decode_all(items, share, npy, offset, root, size, max_pixels, allow_absolute, workers, progress, live)
    )
    with decoded as results:  # closing stops the worker pool at once when strict raises
        for i, reason in results:
            if reason is None:
                continue
            if strict:
                raise UserError(f"{root / items[i][1]}", f"{reason}; --strict forbids skipping images")
            failed.append((i, reason))
    return failed


def _finish(
    out: Path,
    npy: Path,
    items: list[tuple[object, str]],
    failed: list[tuple[int, str]],
    size: int,
    key: str,
    image_root: Path,
    offset: int,
) -> ImageCache:
    """Keep the good rows, write the index, problems and meta beside them; return the cache as it will be at ``out``."""
    tmp, total = npy.parent, len(items)
    problems = [ImageProblem(items[i][0], str(items[i][1]), reason) for i, reason in failed]
    counts = dict(Counter(p.reason for p in problems))
    if len(failed) == total:
        summary = ", ".join(f"{n} {r}" for r, n in counts.items()) or "no items"
        raise UserError(str(image_root), f"none of the {total} images could be used ({summary})")
    good = np.ones(total, dtype=bool)
    good[[i for i, _ in failed]] = False
    rows = np.flatnonzero(good)
    _compact(npy, tmp / "images.npy", rows, offset)
    ids = [items[i][0] for i in rows]
    _write_index(tmp / "index.parquet", ids)
    examples = [{"item_id": p.item_id, "path": p.path, "reason": p.reason} for p in problems[:EXAMPLES]]
    write_json(tmp / "problems.json", {"total": len(problems), "counts": counts, "examples": examples})
    write_json(
        tmp / "meta.json", {"version": VERSION, "size": size, "count": len(ids), "items": total, "cache_key": key}
    )
    if problems:
        names = ", ".join(p.path for p in problems[:3])
        summary = ", ".join(f"{n} {r}" for r, n in counts.items())
        log.warning("skipped %d of %d images (%s), e.g. %s", len(problems), total, summary, names)
    return ImageCache(out, size, ids, {item: row for row, item in enumerate(ids)}, problems, counts)


def _decode_all(
    items: list[tuple[object, str]],
    indices: np.ndarray,
    npy: Path,
    offset: int,
    root: Path,
    size: int,
    max_pixels: int,
    allow_absolute: bool,
    workers: int,
    progress: Callable[[int, int], None] | None,
    live: Path | None = None,
) -> Iterator[tuple[int, str | None]]:
    """Yield (index, failure reason or None) as the images ``indices`` finish; several processes unless one
    suffices."""
    workers = min(workers or os.cpu_count() or 1, -(-len(indices) // CHUNK))
    init = (str(npy), offset, str(root), size, max_pixels, allow_absolute, None if live is None else str(live))
    done = 0
    if workers <= 1:
        _init_worker(*init)
        try:
            results: Iterator[list[tuple[int, str | None]]] = map(_decode_chunk, _chunks(items, indices))
            for chunk in results:
                done += len(chunk)
                if progress is not None:
                    progress(done, len(indices))
                yield from chunk
        finally:
            _close_worker()
        return
    with interrupts_held():  # the workers start by fork: a Ctrl-C meanwhile would be lost
        pool = multiprocessing.Pool(workers, initializer=_init_worker, initargs=init)
    with pool:
        for chunk in pool.imap_unordered(_decode_chunk, _chunks(items, indices)):
            done += len(chunk)
            if progress is not None:
                progress(done, len(indices))
            yield from chunk


def _compact(npy: Path, final: Path, rows: np.ndarray, offset: int) -> None:
    """Keep only the good rows, in the same file: move each down to its place (rows ascend, so every row is read
    before anything is written over it), rewrite the header's count and cut the file short. The disk never holds a
    second copy of the cache."""
    shape = np.load(npy, mmap_mode="r").shape
    if len(rows) < shape[0]:
        arr = np.memmap(npy, dtype=np.uint8, mode="r+", offset=offset, shape=shape)
        moved = np.flatnonzero(rows != np.arange(len(rows)))  # the rows before the first skipped image stay put
        for start in range(int(moved[0]) if len(moved) else len(rows), len(rows), 1024):
            part = rows[start : start + 1024]
            arr[start : start + len(part)] = arr[part]
        arr.flush()
        del arr
        with open(npy, "r+b") as fh:
            fh.write(_npy_header((len(rows), *shape[1:]), offset))
            fh.truncate(offset + len(rows) * int(np.prod(shape[1:])))
    os.replace(npy, final)


def _write_index(path: Path, ids: list) -> None:
    """item_id -> row; ids of mixed types are stored as strings rather than failing."""
    try:
        id_col = pa.array(ids)
    except (pa.ArrowException, TypeError, ValueError):
        id_col = pa.array([str(i) for i in ids])
    table = pa.table({"item_id": id_col, "row": pa.array(np.arange(len(ids), dtype=np.int64))})
    with atomic_file(path, "wb") as fh:
        pq.write_table(table, fh)
