"""Tables of images a user brings (CSV, TSV, Parquet, JSON Lines, or a folder of class folders): read, mapped to
their image column, and every path checked against its root. ``embed --images`` and ``transfer`` read them."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from socialfeat.data.images import EXAMPLES, ImageCache, cache_key
from socialfeat.errors import UserError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}


@dataclass
class ImageTable:
    """A table of images: each row's path (as given, relative to ``root``) and its other columns as strings."""

    path: Path
    root: Path
    image_column: str
    images: list[str | None]
    columns: dict[str, list[str | None]] = field(default_factory=dict)
    allow_absolute: bool = False  # absolute paths are refused like missing images unless the user allows them

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
        if kind == "jsonl":
            return _read_json_lines(path)
        table = pq.read_table(path)
    except UserError:
        raise
    except UnicodeDecodeError as e:  # the line, not the offset in a decoder buffer, is what a user can look up
        raise UserError(
            str(path), f"{_bad_line(path)}byte 0x{e.object[e.start]:02x} is not UTF-8; save the table as UTF-8"
        ) from None
    except (OSError, csv.Error, pa.ArrowException) as e:
        reason = str(e).strip().split("\n")[0]  # Arrow appends the schema it tried on lines of their own
        raise UserError(str(path), f"not a readable {kind} table ({type(e).__name__}: {reason})") from None
    return table.column_names, {n: [_text(v) for v in table.column(n).to_pylist()] for n in table.column_names}


def _json_text(value: Any) -> str | None:
    """A JSON Lines value as a cell: a string as itself, a number as written (``2`` stays ``2``, 30 digits stay 30
    digits), ``true``/``false``, a list or object as its JSON."""
    if value is None or isinstance(value, str) and not isinstance(value, _Literal):
        return _text(value)
    return _dump(value)


def _dump(value: Any) -> str:
    """JSON text of a parsed value whose numbers are :class:`_Literal` (written back as they were written)."""
    if isinstance(value, _Literal):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _read_json_lines(path: Path) -> tuple[list[str], dict[str, list[str | None]]]:
    """Columns of a JSON Lines table, every value as its literal text (numbers are never parsed, so an id is never
    altered); a line that is not one JSON object is named by its number. Blank lines are skipped."""
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip(b" \t\r\n"):
                continue
            try:
                row = json.loads(raw, parse_float=_Literal, parse_int=_Literal)
            except UnicodeDecodeError as e:
                raise UserError(
                    str(path), f"line {number}: byte 0x{raw[e.start]:02x} is not UTF-8; save the table as UTF-8"
                ) from None
            except json.JSONDecodeError as e:
                raise UserError(
                    str(path),
                    f"line {number}, character {e.colno}: not JSON ({e.msg.lower()}); expected one object per line",
                ) from None
            if not isinstance(row, dict):
                raise UserError(str(path), f"line {number}: not a JSON object; expected one object per line")
            names.update(dict.fromkeys(row))
            rows.append(row)
    if not rows:
        raise UserError(str(path), "empty file; expected one JSON object per line")
    return list(names), {n: [_json_text(r.get(n)) for r in rows] for n in names}


class _Literal(str):
    """A JSON number kept as the text it was written as."""


def _bad_line(path: Path) -> str:
    """``line N: `` of the first line that is not UTF-8 (only read on that error path)."""
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    return f"line {number}: "
    except OSError:
        pass
    return ""


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
    path: Path,
    image_root: Path | None,
    image_column: str = "image",
    column_flag: str = "--image-column",
    allow_absolute: bool = False,
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
    if root.exists() and not root.is_dir():
        raise UserError(str(root), "is a file; --image-root expects the folder the table's image paths are relative to")
    if not root.is_dir():
        raise UserError(
            str(root), "image root folder not found; give --image-root (the folder the paths are relative to)"
        )
    return ImageTable(path, root, image_column, images, columns, allow_absolute)


def cache_dir(run: Path, table: ImageTable, size: int, max_pixels: int) -> tuple[Path, str]:
    """Where the table's image cache at ``size`` lives, keyed by paths, file stamps and settings."""
    key = cache_key(table.items(), table.root, size, max_pixels, table.allow_absolute)
    return Path(run) / "cache" / f"external-{size}-{key[:16]}", key


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
