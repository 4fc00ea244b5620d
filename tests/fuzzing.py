"""Malformed inputs, generated with hypothesis, fed through the commands the way a user runs them — and the one check
every case must pass: no traceback; exit 0, or exit 2 with exactly one ``error: `` line; no output left half-written
(the ``--out`` path is absent or complete, no ``.*.tmp-*`` left behind, the inputs untouched); an explorer upload
answers 2xx, or 4xx with a one-line JSON ``detail``, never 500.

Shared by ``tests/test_fuzz.py`` (a small derandomized sample in the suite) and ``bench/fuzz.py`` (≥ 1,000 cases), so
both draw from the same strategies and judge by the same checker.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import shutil
import struct
import tempfile
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st
from PIL import Image

# ------------------------------------------------------------------------------------------------ cells and ids
ODD_TEXT = [
    "", " ", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", "9" * 40, "-0", "0x1F",
    "1,5", "1_000", "true", "null", "NULL", "None", "N/A", "é", "日本語", "🙂", "a\tb", 'a"b', "a,b", "a\nb", "a\r\nb",
    "\u200b", "\ufeff", "\u2028", "\x1b[31mred", "x" * 5000, "00012", " 7 ", "٣", "2024-13-45", "1700000000",
    "-9223372036854775809", "18446744073709551616", "../../etc/passwd", "/abs/path.png", "a\\b", "\x00", "d\x00/x.png",
]  # fmt: skip
ODD_PATHS = ["gone.png", "../outside.png", "/etc/hostname", "", " ", "img", "x" * 300 + ".png", "a\x00b.png", "d\x00/x.png",
             "日本/🙂.png", "img/../img/0.png", "./img/0.png", "img\\0.png"]  # fmt: skip
odd_text = st.sampled_from(ODD_TEXT) | st.text(max_size=12)
odd_number = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**63, 1e308, -1e308, 5e-324])
)
odd_cell = odd_text | odd_number | st.none() | st.booleans()

ID_STYLES = ("int", "str", "mixed", "unicode", "long", "padded", "zeros")


def make_id(style: str, prefix: str, k: int) -> object:
    """The k-th id in one of the ways real exports spell ids."""
    return {
        "int": k,
        "str": f"{prefix}{k}",
        "mixed": k if k % 2 else f"{prefix}{k}",
        "unicode": f"{prefix}é日{k}🙂",
        "long": f"{prefix}{k}" + "x" * 300,
        "padded": f" {prefix}{k} ",
        "zeros": f"{k:05d}",
    }[style]


# ------------------------------------------------------------------------------------------------ table files
TABLE_FORMATS = ("csv", "tsv", "parquet", "jsonl")
BYTE_DAMAGE = ("none", "bom", "latin1", "nul", "truncate", "empty", "crlf", "utf16", "garbage", "long-line")


def _text(value: object) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def serialize(fmt: str, columns: list[str], rows: list[list[object]]) -> bytes:
    """A table as the bytes of a file in ``fmt``; duplicate column names and ragged rows are written as given."""
    if fmt in ("csv", "tsv"):
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_text(v) for v in row])
        return buf.getvalue().encode("utf-8")
    if fmt == "jsonl":  # written by hand: duplicate keys, NaN and Infinity tokens and big ints as they come
        lines = []
        for row in rows:
            pairs = [f"{json.dumps(c)}: {json.dumps(v)}" for c, v in zip(columns, row, strict=False)]
            lines.append("{" + ", ".join(pairs) + "}")
        return ("\n".join(lines) + "\n").encode("utf-8")
    arrays = []
    for c in range(len(columns)):
        values = [row[c] if c < len(row) else None for row in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):  # mixed types, ints past int64
            arrays.append(pa.array([None if v is None else _text(v) for v in values], pa.string()))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=columns), buf)
    return buf.getvalue()


def damage(data: bytes, how: str, at: float) -> bytes:
    """``data`` with one kind of damage a file picks up on its way to a user; ``at`` in [0, 1) says where."""
    i = int(len(data) * at)
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "latin1":
        return data[:i] + b"caf\xe9" + data[i:]
    if how == "nul":
        return data[:i] + b"\x00" + data[i:]
    if how == "truncate":
        return data[:i]
    if how == "empty":
        return b""
    if how == "crlf":
        return data.replace(b"\n", b"\r\n")
    if how == "utf16":
        return data.decode("utf-8", "replace").encode("utf-16")
    if how == "garbage":
        return data[:i] + bytes(range(256)) + data[i:]
    if how == "long-line":
        return data + b"y" * 200_000 + b",z\n"
    return data


TABLE_FAULTS = ("cell", "cell", "cell", "ragged", "column", "bytes", "bytes", "name", "flag")
faults = st.sampled_from([0, 0, 1, 1, 1, 1, 2, 3])  # how many things are wrong at once: mostly none or one


def _column_fault(draw: st.DrawFn, columns: list[str], rows: list[list[object]]) -> str:
    """A column (with its cells) dropped, renamed, duplicated or added under an odd name, in place."""
    op = draw(st.sampled_from(["drop", "rename", "duplicate", "add"]))
    k = draw(st.integers(0, len(columns) - 1))
    if op == "drop" and len(columns) > 1:
        for row in rows:
            if k < len(row):
                row.pop(k)
        return f"drop column {columns.pop(k)}"
    if op == "rename":
        new = draw(st.sampled_from(["", " ", f"{columns[k]} ", columns[k].upper(), "日本", "x" * 300, "user_id"]))
        old, columns[k] = columns[k], new
        return f"rename column {old}->{new!r}"
    new = columns[k] if op == "duplicate" else draw(st.sampled_from(["extra", "", "features", "n_users", "🙂"]))
    columns.append(new)
    for row in rows:
        row.append(row[k] if op == "duplicate" and k < len(row) else draw(odd_cell))
    return f"{op} column {new!r}"


@st.composite
def table_file(
    draw: st.DrawFn, columns: list[str], rows: list[list[object]], name: str, how_many: st.SearchStrategy[int] = faults
) -> tuple[str, bytes, str, str | None]:
    """A table in a drawn format with a few drawn faults (odd cells, ragged rows, odd columns, damaged bytes, a wrong
    extension or --format); returns (file name, bytes, description, --format value or None)."""
    rows, columns = [list(r) for r in rows], list(columns)
    kinds = [draw(st.sampled_from(TABLE_FAULTS)) for _ in range(draw(how_many))]
    notes = [_column_fault(draw, columns, rows) for k in kinds if k == "column"]
    for _ in range(kinds.count("cell")):
        r, c = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(columns) - 1))
        cell = draw(odd_cell)
        rows[r][c] = cell
        notes.append(f"row {r + 1} {columns[c]}={_short(cell)}")
    if "ragged" in kinds:
        ragged = draw(st.sampled_from(["short row", "long row", "blank row"]))
        r = draw(st.integers(0, len(rows) - 1))
        rows[r] = rows[r][:-1] if ragged == "short row" else [*rows[r], "extra"] if ragged == "long row" else []
        notes.append(f"{ragged} {r + 1}")
    fmt = draw(st.sampled_from(TABLE_FORMATS))
    try:
        data = serialize(fmt, columns, rows)
    except (pa.ArrowException, ValueError, TypeError):  # pyarrow refuses some names: the CSV still carries them
        fmt = "csv"
        data = serialize(fmt, columns, rows)
    if "bytes" in kinds:
        how = draw(st.sampled_from(BYTE_DAMAGE[1:] if fmt != "parquet" else ("truncate", "empty", "garbage")))
        data = damage(data, how, draw(st.floats(0, 0.999)))
        notes.append(how)
    ext = draw(st.sampled_from(["csv", "tsv", "parquet", "jsonl", "dat", "CSV", ""])) if "name" in kinds else fmt
    flag = draw(st.sampled_from(TABLE_FORMATS)) if "flag" in kinds else None
    desc = f"{fmt}{'' if ext == fmt else f' named .{ext}'}{f' --format {flag}' if flag else ''}"
    return f"{name}.{ext}" if ext else name, data, ", ".join([desc, *notes]), flag


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}…({len(text)} chars)"


# ------------------------------------------------------------------------------------------------ images
MODES = ("1", "L", "LA", "P", "P+transparency", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "HSV")
SAVE_AS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp", "PPM": "ppm"}
HUGE = [(100_000, 100_000), (65_535, 65_535), (65_535, 1), (1, 65_535), (0, 0), (0, 10), (2**31 - 1, 1), (9000, 9000)]
IMAGE_DAMAGE = ("none", "truncate", "zero-byte", "bitflip", "garbage", "text", "huge-header", "exif")


def _png_with_header(width: int, height: int, mode_byte: int = 2) -> bytes:
    """A PNG whose header claims width×height pixels but carries almost no data: a decompression-bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _gif_with_header(width: int, height: int) -> bytes:
    """A GIF whose screen and frame claim width×height (at most 65535 each) with one byte of pixel data."""
    w, h = min(width, 0xFFFF), min(height, 0xFFFF)
    head = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00;"
    return head + frame


def _bmp_with_header(width: int, height: int) -> bytes:
    w, h = min(width, 2**31 - 1), min(height, 2**31 - 1)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 4, 0, 0, 14 + len(info)) + info + b"\0\0\0\0"


def render(mode: str, size: tuple[int, int], fmt: str, frames: int, seed: int) -> bytes:
    """A real image of ``mode`` saved as ``fmt`` (converted to RGB when the format cannot hold the mode)."""
    w, h = size
    base = Image.frombytes("RGB", (w, h), bytes((seed + 7 * i) % 256 for i in range(w * h * 3)))
    if mode == "P+transparency":
        im = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        im.info["transparency"] = 0
    elif mode == "PA":
        im = base.convert("RGBA").convert("PA")
    elif mode == "I;16":
        im = _mode_i16(base)
    else:
        im = base.convert(mode)
    buf = io.BytesIO()
    extra: dict[str, Any] = {}
    if frames > 1 and fmt in ("GIF", "PNG", "WEBP", "TIFF"):
        extra = {"save_all": True, "append_images": [base.rotate(90 * k).convert(im.mode) for k in range(1, frames)]}
    try:
        im.save(buf, format=fmt, **extra)
    except (OSError, ValueError, KeyError, TypeError):
        buf = io.BytesIO()
        base.save(buf, format=fmt)
    return buf.getvalue()


def _mode_i16(base: Image.Image) -> Image.Image:
    gray = base.convert("L")
    return Image.frombytes("I;16", gray.size, bytes(b for v in gray.tobytes() for b in (0, v)))


def _with_exif(jpeg: bytes, orientation: int) -> bytes:
    im = Image.open(io.BytesIO(jpeg))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


@st.composite
def image_file(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """(bytes, file suffix, description): a real image in an odd mode or format, damaged or lying about its size."""
    how = draw(st.sampled_from(IMAGE_DAMAGE))
    if how == "zero-byte":
        return b"", draw(st.sampled_from([".png", ".jpg", ""])), "zero-byte file"
    if how == "text":
        text = draw(st.sampled_from([b"hello", b"<html><body>x</body></html>", b"%PDF-1.4\n", b"id,image\n1,2\n"]))
        return text, draw(st.sampled_from([".png", ".jpg", ".txt"])), f"not an image ({text[:12]!r})"
    if how == "garbage":
        data = draw(st.binary(max_size=300))
        magic = draw(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\0\0\0\0WEBP"]))
        return magic + data, draw(st.sampled_from([".png", ".jpg", ".gif", ".webp"])), f"{magic[:4]!r} + garbage"
    if how == "huge-header":
        w, h = draw(st.sampled_from(HUGE))
        kind = draw(st.sampled_from(["png", "gif", "bmp"]))
        data = {"png": _png_with_header, "gif": _gif_with_header, "bmp": _bmp_with_header}[kind](w, h)
        return data, draw(st.sampled_from([f".{kind}", ".jpg"])), f"{kind} header claiming {w}x{h}"
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(sorted(SAVE_AS)))
    w = draw(st.integers(1, 48) | st.sampled_from([1, 400]))
    h = draw(st.integers(1, 48) | st.sampled_from([1, 400]))
    frames = draw(st.sampled_from([1, 1, 2, 3]))
    data = render(mode, (w, h), fmt, frames, draw(st.integers(0, 255)))
    desc = f"{mode} {w}x{h} {fmt}{f' {frames} frames' if frames > 1 else ''}"
    if how == "exif":
        orientation = draw(st.sampled_from([0, 1, 3, 5, 6, 8, 9, 65535]))
        data, fmt, desc = _with_exif(data, orientation), "JPEG", f"{desc} as JPEG, EXIF orientation {orientation}"
    elif how == "truncate":
        cut = draw(st.integers(0, max(len(data) - 1, 0)))
        data, desc = data[:cut], f"{desc} truncated at {cut} of {len(data)} bytes"
    elif how == "bitflip":
        flips = draw(st.lists(st.integers(0, max(len(data) - 1, 0)), min_size=1, max_size=4))
        buf = bytearray(data)
        for i in flips:
            buf[i] ^= 0xFF
        data, desc = bytes(buf), f"{desc} bytes {flips} flipped"
    suffix = draw(st.sampled_from([f".{SAVE_AS[fmt]}", f".{SAVE_AS[fmt]}", ".jpg", ".png", ".PNG", ""]))
    return data, suffix, desc


# ------------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    """One generated input: files written into a fresh work folder, then a command line (``{w}`` is that folder,
    ``{run}`` the trained run), or for ``upload`` an HTTP request."""

    command: str
    summary: str
    files: dict[str, bytes] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    out: str | None = None  # the --out path, relative to the work folder
    out_kind: str = "dataset"  # dataset (a folder with stats.json + manifest.json) or parquet (+ its .json sidecar)
    request: dict[str, Any] | None = None


N_USERS, N_ITEMS = 8, 6
EVENTS = ["view", "like", "comment", "share", "appreciate", "zap"]
INGEST_FLAGS = [
    "--value-col",
    "--user-col",
    "--event-col",
    "--time-col",
    "--event-weight",
    "--default-event",
    "--strict",
]
PNG_1PX = _png_with_header(1, 1)  # only existence matters to ingest; decoding is embed's


def _log_rows(user_style: str, item_style: str) -> list[list[object]]:
    """Every user with every item (so the default popularity filter keeps them all): a log that ingests cleanly."""
    return [
        [make_id(user_style, "u", u), make_id(item_style, "i", i), EVENTS[(u + i) % len(EVENTS)], 1 + (u * i) % 3,
         1_700_000_000 + 60 * (u * N_ITEMS + i)]
        for u in range(N_USERS) for i in range(N_ITEMS)
    ]  # fmt: skip


@st.composite
def ingest_cases(draw: st.DrawFn) -> Case:
    """``ingest`` of a log (and maybe an items table and comments) in any format, corrupted in a drawn way."""
    user_style, item_style = draw(st.sampled_from(ID_STYLES)), draw(st.sampled_from(ID_STYLES))
    rows = _log_rows(user_style, item_style)
    name, data, desc, flag = draw(table_file(["user_id", "item_id", "event", "value", "timestamp"], rows, "log"))
    files = {name: data}
    argv = ["ingest", "--interactions", f"{{w}}/{name}", "--out", "{w}/run/dataset"]
    notes = [f"users {user_style}, items {item_style}", f"interactions: {desc}"]
    if flag:
        argv += ["--format", flag]
    few = st.sampled_from([0, 0, 0, 1, 2])  # the second and third tables: mostly clean, so the first one's faults show
    if draw(st.booleans()):
        items = [[make_id(item_style, "i", i), f"img/{i}.png", f"title {i}", "a|b", "text"] for i in range(N_ITEMS)]
        if draw(st.integers(0, 2)) == 0:  # one image path no file system would take, or one leading elsewhere
            k = draw(st.integers(0, N_ITEMS - 1))
            items[k][1] = draw(st.sampled_from(ODD_PATHS))
            notes.append(f"item {k} image {_short(items[k][1])}")
        iname, idata, idesc, _ = draw(table_file(["item_id", "image", "title", "tags", "text"], items, "items", few))
        files[iname] = idata
        files.update({f"img/{i}.png": PNG_1PX for i in range(N_ITEMS)})
        argv += ["--items", f"{{w}}/{iname}"]
        notes.append(f"items: {idesc}")
        root = draw(st.sampled_from([None] * 6 + ["{w}/img", "{w}", "{w}/nowhere", f"{{w}}/{name}"]))
        if root:
            argv += ["--image-root", root]
            notes.append(f"--image-root {root}")
    if draw(st.integers(0, 3)) == 0:
        comments = [[make_id(item_style, "i", i), make_id(user_style, "u", i), f"nice {i}", "2023-11-14 22:13:20"]
                    for i in range(5)]  # fmt: skip
        columns = ["item_id", "user_id", "text", "timestamp"]
        cname, cdata, cdesc, _ = draw(table_file(columns, comments, "comments", few))
        files[cname] = cdata
        argv += ["--comments", f"{{w}}/{cname}"]
        notes.append(f"comments: {cdesc}")
    flags = [] if draw(st.integers(0, 3)) else draw(st.lists(st.sampled_from(INGEST_FLAGS), min_size=1, max_size=2))
    for f in dict.fromkeys(flags):
        if f == "--strict":
            argv.append(f)
        elif f == "--event-weight":
            argv += [
                f,
                f"{draw(st.sampled_from(EVENTS))}={draw(st.sampled_from(['4', 'nan', 'inf', '-1', '1e400', 'x']))}",
            ]
        else:
            argv += [f, draw(st.sampled_from(["value", "timestamp", "event", "user_id", "missing", "", "日本"]))]
    if flags:
        notes.append(" ".join(flags))
    return Case("ingest", "; ".join(notes), files, argv, out="run/dataset")


# ------------------------------------------------------------------------------------------------ configs
CONFIG_KEYS = [
    "name", "seed", "ingest.format", "ingest.default_event", "ingest.event_weights", "ingest.event_weights.like",
    "ingest.strict", "ingest.memory_limit", "ingest.columns.user", "ingest.columns.value", "ingest.item_columns.image",
    "ingest.allow_absolute_images", "filter.min_user_interactions", "filter.min_item_interactions",
    "filter.drop_top_users", "filter.drop_top_items", "filter.max_user_interactions", "filter.max_rounds",
    "factorize.alpha", "factorize.regularization", "factorize.factors", "factorize.confidence", "split.cold_fraction",
    "train.lr", "train.epochs", "train.max_pixels", "serve.max_pixels", "serve.runtime", "content.fusion_step",
    "targets.clusters", "ingest", "filter", "unknown", "ingest.unknown", "filter.min_user_interactions.deeper",
    "seed.x", "transfer.sets",
]  # fmt: skip
ODD_VALUES = [
    "1", "0", "-1", "5", "0.5", ".nan", ".inf", "-.inf", "nan", "inf", "1e400", "~", "null", "[]", "{}", "[1, 2]",
    "{a: 1}", "yes", "no", "'x'", '"\\x00"', "0x10", "1_000", "2001-01-01", "99999999999999999999999", "local",
    "log", "csv", "1KB", "64MB", "' '", "!!binary aGk=", "!!python/object/apply:os.system ['true']", "&a [*a]",
    "'" + "x" * 3000 + "'", "[a, b", "{a: ", "é", "- a", "*undefined",
]  # fmt: skip
LOG_CSV = serialize("csv", ["user_id", "item_id", "event"], [[r[0], r[1], r[2]] for r in _log_rows("str", "str")])


PLAUSIBLE = {
    "name": "fuzz", "seed": "3", "ingest.format": "csv", "ingest.default_event": "view", "ingest.strict": "false",
    "ingest.event_weights.like": "2.5", "ingest.memory_limit": "512MB", "filter.min_user_interactions": "2",
    "filter.min_item_interactions": "3", "filter.drop_top_users": "0.01", "filter.max_rounds": "10",
    "factorize.alpha": "4", "factorize.regularization": "0.1", "split.cold_fraction": "0.1", "train.lr": "0.001",
    "serve.runtime": "torch", "targets.clusters": "8", "ingest.allow_absolute_images": "true",
}  # fmt: skip


@st.composite
def config_pair(draw: st.DrawFn) -> tuple[str, str]:
    """A key (real, unknown, or a value taken for a section) and a value: plausible for it, or odd."""
    key = draw(st.sampled_from(CONFIG_KEYS))
    if key in PLAUSIBLE and draw(st.booleans()):
        return key, PLAUSIBLE[key]
    return key, draw(st.sampled_from(ODD_VALUES))


def _yaml_block(tree: dict[str, Any], depth: int = 0, twice: bool = False) -> list[str]:
    """Nested YAML of raw value texts; ``twice`` repeats the first leaf (a duplicate key)."""
    lines = []
    for n, (key, value) in enumerate(tree.items()):
        if isinstance(value, dict):
            lines += [f"{'  ' * depth}{key}:", *_yaml_block(value, depth + 1, twice and n == 0)]
        else:
            lines += [f"{'  ' * depth}{key}: {value}"] * (2 if twice and n == 0 else 1)
    return lines


@st.composite
def yaml_text(draw: st.DrawFn) -> tuple[bytes, str]:
    """A config file: real and unknown keys with plausible or odd values, a duplicate key, a non-mapping top level,
    an alias bomb, broken syntax or damaged bytes."""
    shape = draw(st.sampled_from(["keys", "keys", "keys", "keys", "duplicate", "top-level", "bomb", "syntax", "bytes"]))
    if shape == "top-level":
        text = draw(st.sampled_from(["- a\n- b\n", "42\n", "", "~\n", "'just a string'\n", "!!set {a, b}\n"]))
        return text.encode(), f"top level {text.strip()!r}"
    if shape == "bomb":  # a billion-laughs shape, capped at 9**7 leaves: what it costs must show, not stall the run
        depth = draw(st.integers(2, 7))
        anchors = ["&a0 [x, x, x, x, x, x, x, x, x]"]
        anchors += [f"&a{d} [{', '.join(f'*a{d - 1}' for _ in range(9))}]" for d in range(1, depth)]
        key = draw(st.sampled_from(["name", "ingest.event_weights", "unknown"]))
        value = f"[{', '.join(anchors)}]"
        text = f"ingest:\n  event_weights: {{like: {value}}}\n" if "." in key else f"{key}: {value}\n"
        return text.encode(), f"alias bomb of depth {depth} in {key}"
    if shape == "syntax":
        text = draw(st.sampled_from(["ingest:\n\tstrict: true\n", "ingest: {strict: true\n", "a: b: c\n", ": x\n",
                                     "ingest:\n  - strict\n", "? [a, b]\n: 1\n", "%YAML 9.9\n---\na: 1\n"]))  # fmt: skip
        return text.encode(), f"syntax {text!r}"
    pairs = draw(st.lists(config_pair(), min_size=1, max_size=3))
    tree: dict[str, Any] = {}
    for key, value in pairs:
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(leaf, value)
    data = ("\n".join(_yaml_block(tree, twice=shape == "duplicate")) + "\n").encode()
    how = "none"
    if shape == "bytes":
        how = draw(st.sampled_from(["bom", "latin1", "nul", "truncate", "utf16", "garbage"]))
        data = damage(data, how, draw(st.floats(0, 0.999)))
    desc = ", ".join(f"{k}: {_short(v)}" for k, v in pairs)
    return data, f"{shape}: {desc}" + (f", {how}" if how != "none" else "")


set_item = st.one_of(
    config_pair().map(lambda kv: f"{kv[0]}={kv[1]}"),
    config_pair().map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(["noequals", "=1", ".x=1", "a..b=1", "ingest.=3", " = ", "filter.min_user_interactions==5"]),
)


@st.composite
def config_cases(draw: st.DrawFn) -> Case:
    """``ingest`` of a clean log under a generated YAML config and ``--set`` values."""
    argv = ["ingest", "--interactions", "{w}/log.csv", "--out", "{w}/run/dataset"]
    files = {"log.csv": LOG_CSV}
    notes = []
    if draw(st.booleans()):
        data, desc = draw(yaml_text())
        files["config.yaml"] = data
        argv += ["--config", "{w}/config.yaml"]
        notes.append(f"config {desc}")
    for item in draw(st.lists(set_item, min_size=0 if notes else 1, max_size=2)):
        argv += ["--set", item]
        notes.append(f"--set {_short(item)}")
    return Case("config", "; ".join(notes), files, argv, out="run/dataset")


# ------------------------------------------------------------------------------------------------ images through commands


@st.composite
def embed_cases(draw: st.DrawFn) -> Case:
    """``embed RUN --images TABLE --out F.parquet``: a table of generated images (and odd paths) in any format."""
    images = draw(st.lists(image_file(), min_size=1, max_size=4))
    files, rows, notes = {}, [], []
    for k, (data, suffix, desc) in enumerate(images):
        files[f"img/{k}{suffix}"] = data
        rows.append([f"img/{k}{suffix}", f"label{k}"])
        notes.append(f"img/{k}{suffix}: {desc}")
    for path in draw(st.lists(st.sampled_from(ODD_PATHS), max_size=2)):
        rows.append([path, "odd"])
        notes.append(f"path {path!r}"[:60])
    column = draw(st.sampled_from(["image", "image", "path"]))
    name, data, desc, _ = draw(table_file([column, "label"], rows, "images"))
    files[name] = data
    argv = ["embed", "{run}", "--images", f"{{w}}/{name}", "--out", "{w}/emb/features.parquet"]
    if column != "image" or draw(st.integers(0, 4)) == 0:
        argv += ["--image-column", draw(st.sampled_from([column, column, "image", "label", ""]))]
    root = draw(st.sampled_from([None, None, "{w}", "{w}/img", "{w}/nowhere", f"{{w}}/{name}"]))
    if root:
        argv += ["--image-root", root]
    source = draw(st.sampled_from([None, None, "learned", "imagenet", "random", "bogus"]))
    if source:
        argv += ["--source", source]
    summary = (
        f"table {desc}; " + "; ".join(notes) + (f"; root {root}" if root else "") + (f"; {source}" if source else "")
    )
    return Case("embed", summary, files, argv, out="emb/features.parquet", out_kind="parquet")


@st.composite
def recommend_cases(draw: st.DrawFn) -> Case:
    """``recommend RUN --image FILE`` with a generated image under an odd name, or an odd path, or an odd --k."""
    data, suffix, desc = draw(image_file())
    fault = draw(st.sampled_from(["none"] * 5 + ["name", "path", "k"]))
    name = draw(st.sampled_from(["日本🙂", "x" * 300, "-dash", " ", "a\nb"])) if fault == "name" else "new"
    path, files, notes = f"{{w}}/{name}{suffix}", {f"{name}{suffix}": data}, [desc]
    if fault == "name":
        notes.append(f"named {name[:20]!r}{suffix}")
    if fault == "path":
        path, what = draw(st.sampled_from([("{w}/gone.png", "missing file"), ("{w}", "a folder"), ("", "empty path"),
                                           ("/dev/null", "/dev/null"), ("{w}/new.png/x", "under a file")]))  # fmt: skip
        notes.append(what)
    argv = ["recommend", "{run}", "--image", path]
    if fault == "k":
        k = draw(st.sampled_from(["0", "-3", "1", "100000000", "1e3", "nan"]))
        argv += ["--k", k]
        notes.append(f"--k {k}")
    return Case("recommend", "; ".join(notes), files, argv)


UPLOAD_FAULTS = ["none"] * 6 + ["name", "type", "k", "source", "field", "no file", "as text field", "both sources"]


@st.composite
def upload_cases(draw: st.DrawFn) -> Case:
    """POST /api/upload: a generated image, and maybe an odd name, content type, parameter or form field."""
    data, suffix, desc = draw(image_file())
    fault = draw(st.sampled_from(UPLOAD_FAULTS))
    filename, ctype, params, fields, shape = f"new{suffix}", "image/png", [], {}, "file"
    if fault == "name":
        filename = draw(st.sampled_from(["../../etc/passwd", "", "日本🙂", "x" * 500, 'a"b;c', "a\r\nb"])) + suffix
    elif fault == "type":
        ctype = draw(st.sampled_from(["image/jpeg", "text/plain", "application/octet-stream", "", "multipart/mixed"]))
    elif fault == "k":
        params.append(("k", draw(st.sampled_from(["1", "100", "0", "-1", "abc", "1e3", "99999", ""]))))
    elif fault == "source":
        params += [
            ("source", s)
            for s in draw(st.lists(st.sampled_from(["imagenet", "random", "", "LEARNED"]), min_size=1, max_size=2))
        ]
    elif fault == "both sources":
        params += [("source", "learned"), ("source", "imagenet"), ("k", "3")]
    elif fault == "field":
        for name in draw(st.lists(st.sampled_from(["title", "text", "tags"]), min_size=1, max_size=2, unique=True)):
            fields[name] = draw(st.sampled_from(["", "a", "x" * 20_000, "日本🙂", "a,,b", "\x00"]))
    elif fault in ("no file", "as text field"):
        shape = fault
    notes = [desc] + ([] if fault == "none" else [f"{fault}: {filename[:30]!r} {ctype!r} {params} {list(fields)}"])
    request = {"data": data, "filename": filename, "ctype": ctype, "params": params, "fields": fields, "shape": shape}
    return Case("upload", "; ".join(notes), request=request)


STRATEGIES = {
    "ingest": ingest_cases,
    "config": config_cases,
    "embed": embed_cases,
    "recommend": recommend_cases,
    "upload": upload_cases,
}


# ------------------------------------------------------------------------------------------------ running and judging
@dataclass
class Outcome:
    """What a case did: exit code (or HTTP status), and every broken promise found (empty when it behaved)."""

    case: Case
    code: int | None
    problems: list[str]
    detail: str = ""  # the error line, or the last line of an escaped traceback

    @property
    def ok(self) -> bool:
        return not self.problems


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(*folders: Path) -> list[str]:
    """Temporary siblings an atomic write left behind (``.name.tmp-*``, ``.name.old-*``)."""
    found = []
    for folder in folders:
        for p in folder.rglob(".*"):
            if ".tmp-" in p.name or ".old-" in p.name:
                found.append(str(p))
    return found


def _complete(out: Path, kind: str) -> str | None:
    """None when ``out`` is a whole output of its kind, else what is wrong with it."""
    try:
        if kind == "dataset":
            for name in ("stats.json", "manifest.json"):
                json.loads((out / name).read_text())
        else:
            pq.read_table(out)
            json.loads(out.with_suffix(".json").read_text())
    except (OSError, ValueError, pa.ArrowException) as e:
        return f"output {out.name} is incomplete ({type(e).__name__}: {str(e)[:80]})"
    return None


def run_cli(case: Case, base: Path, run: Path | None = None) -> Outcome:
    """Write the case's files into a fresh folder under ``base``, run the command in-process, judge the result.
    The folder is removed afterwards unless the case failed: then it holds the inputs that reproduce it."""
    from socialfeat.cli import main

    work = Path(tempfile.mkdtemp(prefix=f"{case.command}-", dir=base))
    for rel, data in case.files.items():
        p = work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a name too long to exist: the command then meets it as such
            p.write_bytes(data)
    argv = [a.replace("{w}", str(work)).replace("{run}", str(run)) for a in case.argv]
    before = _digest(work)
    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | None = None
    problems: list[str] = []
    detail = ""
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("default")  # what a user's terminal shows: each warning once per place
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except KeyboardInterrupt:  # the person running the fuzz, not a finding
            raise
        except BaseException as e:  # noqa: BLE001 - anything else escaping main is the bug we look for
            tb = traceback.format_exception(e)
            detail = tb[-1].strip()
            where = next((line.strip() for line in reversed(tb) if "File " in line), "")
            problems.append(f"traceback: {detail} [{where[:160]}]")
    err = stderr.getvalue()
    problems += judge_exit(code, err) if code is not None else []
    problems += [f"a Python warning reaches the terminal: {w.category.__name__}: {w.message} ({Path(w.filename).name})"
                 for w in caught if issubclass(w.category, SHOWN_WARNINGS)]  # fmt: skip
    if code == 2:
        detail = err.strip().split("\n")[-1]
    problems += judge_outputs(case, work, before, code, run)
    if problems:
        problems.append(f"(inputs kept in {work})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return Outcome(case, code, problems, detail)


SHOWN_WARNINGS = (UserWarning, RuntimeWarning)  # Python prints these on stderr as two lines of library internals
MAX_LINE = 2000  # an error line longer than this buries its reason (paths in these cases stay well under it)


def judge_exit(code: int, stderr: str) -> list[str]:
    """Exit 0, or exit 2 whose last stderr line is the one ``error: `` line; no traceback printed."""
    problems = []
    if "Traceback (most recent call last)" in stderr:
        problems.append("a traceback was printed on stderr")
    if code not in (0, 2):
        problems.append(f"exit code {code}: {stderr.strip()[-200:]!r}")
    lines = [line for line in stderr.split("\n") if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if code == 2:
        if not lines or not lines[-1].startswith("error: ") or len(errors) != 1:
            problems.append(f"exit 2 without exactly one final 'error: ' line: {stderr.strip()[-300:]!r}")
        elif len(lines[-1]) > MAX_LINE:
            problems.append(f"an error line of {len(lines[-1]):,} characters: {lines[-1][:150]!r}…")
        elif any(ord(ch) < 32 and ch != "\t" for ch in lines[-1]):
            problems.append(f"control characters in the error line: {lines[-1][:200]!r}")
    elif code == 0 and errors:
        problems.append(f"exit 0 but an error line: {errors[0][:200]!r}")
    return problems


def judge_outputs(case: Case, work: Path, before: dict[str, str], code: int | None, run: Path | None) -> list[str]:
    """The inputs untouched; ``--out`` absent or complete (complete when the exit was 0); no temporary leftovers."""
    problems = []
    after = _digest(work)
    changed = [k for k, v in before.items() if after.get(k) != v]
    if changed:
        problems.append(f"inputs changed or removed: {changed[:3]}")
    if case.out is not None:
        out = work / case.out
        if code == 0 and not out.exists():
            problems.append(f"exit 0 but no output at {case.out}")
        elif out.exists():
            wrong = _complete(out, case.out_kind)
            if wrong:
                problems.append(wrong)
        if code != 0 and case.out_kind == "parquet" and out.with_suffix(".json").exists() and not out.exists():
            problems.append("a sidecar without its output")
    left = leftovers(work, *([run] if run is not None else []))
    if left:
        problems.append(f"temporary leftovers: {left[:3]}")
    return problems


def run_upload(case: Case, client: Any) -> Outcome:
    """POST the case to the explorer's /api/upload through a TestClient; 2xx, or 4xx with a one-line JSON detail."""
    r = case.request
    assert r is not None
    files = None
    data = dict(r["fields"])
    if r["shape"] == "file":
        files = {"image": (r["filename"], r["data"], r["ctype"])}
    elif r["shape"] == "as text field":
        data["image"] = r["data"].decode("latin-1")
    problems: list[str] = []
    try:
        response = client.post("/api/upload", params=r["params"], files=files, data=data or None)
    except Exception as e:  # noqa: BLE001 - the TestClient re-raises what the server did not handle: a 500
        detail = traceback.format_exception(e)[-1].strip()
        return Outcome(case, 500, [f"server error (500): {detail}"], detail)
    status = response.status_code
    detail = ""
    if status >= 500:
        problems.append(f"server error {status}: {response.text[:200]!r}")
    elif status >= 400:
        try:
            body = response.json()
            detail = body["detail"]
            if not isinstance(detail, str) or "\n" in detail:
                problems.append(f"{status} detail is not one line: {detail!r:.200}")
        except (ValueError, KeyError, TypeError):
            problems.append(f"{status} without a JSON detail: {response.text[:200]!r}")
    elif "similar" not in response.json():
        problems.append(f"{status} without results: {response.text[:200]!r}")
    return Outcome(case, status, problems, str(detail))


# ------------------------------------------------------------------------------------------------ a run to fuzz against
def tiny_run(dest: Path) -> Path:
    """A small simulated platform carried through ingest → factorize → targets → train (tiny net) → embed, as
    ``tests/conftest.py`` builds it: what ``embed --images``, ``recommend --image`` and the explorer need (the
    bench's own; the tests use the session fixture)."""
    from socialfeat.config import SimulateConfig, load_config
    from socialfeat.data.ingest import ingest
    from socialfeat.data.simulate import simulate
    from socialfeat.embed import embed
    from socialfeat.factorize.stage import factorize
    from socialfeat.targets.stage import targets
    from socialfeat.train import train

    platform = dest / "platform"
    simulate(platform, SimulateConfig(n_users=200, n_items=200, image_size=32, views_per_user=40), seed=7)
    run = dest / "run"
    overrides = ["factorize.factors=16", "factorize.alpha=1", "factorize.evaluate=false", "split.cold_fraction=0.2",
                 "targets.clusters=6", "train.backbone=socialfeat_tiny", "train.weights=random", "train.image_size=32",
                 "train.epochs=2", "train.batch_size=32", "train.threads=1"]  # fmt: skip
    flags = {"ingest.interactions": ("t", platform / "interactions.csv"), "ingest.items": ("t", platform / "items.csv")}
    cfg = load_config(None, overrides, flags)
    ingest(cfg, run / "dataset")
    factorize(cfg, run)
    targets(cfg, run)
    train(cfg, run)
    for source in ("learned", "imagenet"):
        embed(cfg, run, source)
    return run
