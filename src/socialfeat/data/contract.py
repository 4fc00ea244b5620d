"""The data contract: which files ``ingest`` reads, in which formats, and how they are checked.

Every problem a user can cause is a :class:`UserError` naming the file (or flag) and, where it
helps, the row: ``error: interactions.csv: row 17: empty user_id``.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import duckdb

from socialfeat.errors import UserError

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
COMPRESSIONS = (".gz",)
TYPED_FORMATS = {"parquet", "jsonl"}  # formats whose columns carry their own types
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT"}


def detect_format(path: Path, fmt: str | None) -> str:
    """The format of ``path``: ``fmt`` when given, else from its extension (``.csv.gz`` counts as csv)."""
    if fmt is not None:
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext not in EXTENSIONS:
        shown = ext or "no extension"
        raise UserError(
            str(path), f"unknown format ({shown}); expected .csv, .tsv, .parquet or .jsonl, or pass --format"
        )
    return EXTENSIONS[ext]


def quote(name: str) -> str:
    """A SQL identifier for any column name."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Table:
    """An input file opened as a DuckDB view: its name, format and columns with their types."""

    path: Path
    view: str
    format: str
    columns: dict[str, str]

    @property
    def typed(self) -> bool:
        return self.format in TYPED_FORMATS

    def optional(self, name: str | None, *, default: str | None, flag: str) -> str | None:
        """Resolve a column: explicit names must exist; a default name is used only if present.

        Returns the column name, or ``None`` when an optional column is absent.
        """
        found = ", ".join(self.columns) or "none"
        if name is not None:
            if name not in self.columns:
                raise UserError(flag, f"column '{name}' is not in {self.path.name} (found: {found})")
            return name
        if default is not None and default in self.columns:
            return default
        return None

    def required(self, name: str, flag: str, what: str, explicit: bool, given_by: str | None = None) -> str:
        """A column that must exist; the message says which columns were found and which flag maps it.

        A name the user gave (``explicit``) is blamed on ``given_by``, where they gave it (a ``--set`` item, a config
        file), else on ``flag``.
        """
        if name in self.columns:
            return name
        found = ", ".join(self.columns) or "none"
        if explicit:
            raise UserError(given_by or flag, f"column '{name}' is not in {self.path.name} (found: {found})")
        raise UserError(str(self.path), f"no {what} column '{name}' (found: {found}); map it with {flag} NAME")


def open_table(con: duckdb.DuckDBPyConnection, path: Path, fmt: str | None, view: str) -> Table:
    """Open ``path`` as a view named ``view``; fail clearly on a missing, empty or unreadable file."""
    path = Path(path)
    found = stat_input(path)
    if found is None:
        raise UserError(str(path), "file not found")
    if stat.S_ISDIR(found.st_mode):
        raise UserError(str(path), "is a folder; expected a file")
    fmt = detect_format(path, fmt)
    if found.st_size == 0:
        raise UserError(str(path), "file is empty; expected a header row and data rows")
    src = literal(str(path))
    if fmt in ("csv", "tsv"):
        reader = _csv_reader(path, "," if fmt == "csv" else "\t")
    elif fmt == "parquet":
        reader = f"read_parquet({src})"
    else:
        reader = f"read_json({src}, format='newline_delimited')"
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {reader}")
        described = con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
    except duckdb.OutOfMemoryException:
        raise  # the memory limit's fault, not the file's: the caller names its setting
    except duckdb.Error as exc:
        raise UserError(str(path), read_error(path, fmt, exc)) from None
    columns = {row[0]: str(row[1]) for row in described}
    table = Table(path=path, view=view, format=fmt, columns=columns)
    try:
        has_rows = fetch_one(con, f"SELECT 1 FROM {view} LIMIT 1") is not None
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        raise UserError(str(path), read_error(path, fmt, exc)) from None
    if not has_rows:
        raise UserError(str(path), f"no rows after the header (columns: {', '.join(columns)})")
    return table


def stat_input(path: Path) -> os.stat_result | None:
    """What the file system says about an input path the user gave: None when nothing is there.

    A path the OS refuses to look up (a name too long, a symlink loop, a folder that may not be entered) is the
    user's to fix, so it is a one-line UserError naming the path (clipped: it may be thousands of characters).
    """
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(clip(str(path), PATH_CHARS), f"cannot look up this path: {reason.lower()}") from None


def is_file(path: Path) -> bool:
    """``path.is_file()`` that answers False where the OS refuses the lookup (a name too long for the file system,
    a symlink loop, a folder that may not be entered): for an image path in a table, that is a missing image."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> tuple | None:
    """The first row of a one-row (or LIMITed) query, or None.

    Fetches the whole result: DuckDB 2 refuses new work on a connection with a half-read result.
    """
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def _csv_reader(path: Path, delim: str) -> str:
    """A strict DuckDB reader for a delimited file whose header we read ourselves.

    DuckDB's sniffer, given a ragged row, may take that row for the header and silently read
    nothing; with the header fixed and sniffing off, a ragged row is an error naming its line.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter=delim), None)
    except UnicodeDecodeError:
        raise UserError(str(path), _not_utf8(path)) from None
    except (OSError, EOFError, csv.Error) as exc:
        raise UserError(str(path), f"cannot read the header: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise UserError(str(path), "the first line is empty; expected a header row naming the columns")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise UserError(str(path), f"column '{name}' appears twice in the header")
        seen.add(name)
    columns = "{" + ", ".join(f"{literal(h)}: 'VARCHAR'" for h in header) + "}"
    return (
        f"read_csv({literal(str(path))}, auto_detect=false, skip=1, delim={literal(delim)}, quote='\"', "
        f"escape='\"', columns={columns})"
    )


NOT_UTF8 = "not UTF-8 text; expected UTF-8 (save the file as UTF-8)"
ECHO_CHARS = 60  # how much of an offending line a message repeats
PATH_CHARS = 200  # how much of a path a message repeats


def _not_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 lies, as ``line N, byte M: not UTF-8 text; ...``.

    Only on the error path: the text reader failed somewhere in its first buffer, so the scan stops early.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    return f"line {number}, byte {exc.start + 1} (0x{raw[exc.start]:02x}): {NOT_UTF8}"
    except (OSError, EOFError):
        pass
    return NOT_UTF8


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """An echoed cell or line, shortened so that it never pushes the reason off a one-line message."""
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_error(exc: BaseException) -> str:
    """The informative part of a DuckDB error, reason first, without its class prefix or its advice.

    A CSV error becomes ``line N: <reason> (line: <its start>)``; the echoed line is clipped, never the reason.
    """
    text = str(exc).strip()
    located = re.search(r"CSV Error on Line: (\d+)", text)
    if located:
        original = re.search(r"^Original Line: ?(.*)$", text, re.M)
        ragged = re.search(r"Expected Number of Columns: (\d+)(?: Found: (\d+))?", text)
        if ragged:
            found = f", found {ragged[2]}" if ragged[2] else ""
            reason = f"expected {ragged[1]} fields, as many as the header has{found}"
        elif "invalid unicode" in text.lower():
            reason = NOT_UTF8
        else:
            after = text[original.end() :] if original else text[located.end() :]
            lines = [ln.strip() for ln in after.splitlines() if ln.strip()]
            reason = lines[0] if lines and not lines[0].lower().startswith("possible") else "malformed row"
            reason = reason[:200]
        shown = f" (line: {clip(original[1])})" if original and original[1].strip() else ""
        return f"line {located[1]}: {reason}{shown}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    first = re.sub(r"^[A-Za-z ]*Error:\s*", "", first)
    return first[:300]


def read_error(path: Path, fmt: str, exc: BaseException) -> str:
    """The message for a file DuckDB failed to read. Text that is not UTF-8 names its own line: DuckDB's JSON
    reader counts that line one too far, so the file is scanned to it (on the error path only)."""
    if fmt == "jsonl" and "invalid utf-8" in str(exc).lower():
        return _not_utf8(Path(path))
    return f"cannot read as {fmt}: {short_error(exc)}"


def first_bad_row(con: duckdb.DuckDBPyConnection, table: Table, condition: str, column: str) -> tuple[int, object]:
    """1-based number of the first data row where ``condition`` holds, and that row's ``column`` value.

    Used only on the error path, so the extra ordered scan costs nothing in the normal case.
    """
    con.execute("SET preserve_insertion_order = true")
    row = fetch_one(
        con,
        f"SELECT rn, {quote(column)} FROM (SELECT row_number() OVER () AS rn, * FROM {table.view}) "
        f"WHERE {condition} ORDER BY rn LIMIT 1",
    )
    if row is None:  # no row holds it (a caller checking a sum, not a cell, then names the sum)
        return 0, None
    return int(row[0]), row[1]


NESTED_TYPE = re.compile(r"\[\d*\]$|^(STRUCT|MAP|UNION)\(")


def check_id_column(con: duckdb.DuckDBPyConnection, table: Table, column: str) -> None:
    """An id column holds strings or integers, never lists or objects (JSON Lines can hold anything): the first
    row that breaks this is named with its field. A JSON column mixing strings and numbers is read as their text,
    so ``"b"`` is the id ``b``, not ``"b"`` with its quotes."""
    sql_type, q = table.columns[column].upper(), quote(column)
    if NESTED_TYPE.search(sql_type):
        condition = f"{q} IS NOT NULL"
    elif sql_type == "JSON":
        condition = f"json_type({q}) IN ('ARRAY', 'OBJECT')"
    else:
        return
    if fetch_one(con, f"SELECT 1 FROM {table.view} WHERE {condition} LIMIT 1") is not None:
        rn, value = first_bad_row(con, table, condition, column)
        listlike = isinstance(value, list | tuple) or (isinstance(value, str) and value.lstrip().startswith("["))
        shown = json.dumps(value, default=str) if not isinstance(value, str) else value
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise UserError(
            str(table.path),
            f"row {rn}: field '{column}' is {'a list' if listlike else 'an object'} ({shown}); "
            "expected a string or integer id",
        )
    if sql_type == "JSON":  # only scalars: read them as text
        view = f"{table.view}_ids"
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * REPLACE (json_extract_string({q}, '$') AS {q}) FROM {table.view}"
        )
        table.view, table.columns[column] = view, "VARCHAR"


def id_sql(column: str) -> str:
    """Ids as VARCHAR for joining and grouping; the original type is restored on output."""
    return f"CAST({quote(column)} AS VARCHAR)"


def number_sql(column: str) -> str:
    return f"TRY_CAST({quote(column)} AS DOUBLE)"


def timestamp_sql(column: str, sql_type: str, text_mode: str = "iso") -> str:
    """A TIMESTAMP from timestamps, dates, epoch seconds, or text in ``text_mode`` (iso or epoch).

    NULL where a value cannot be read, so the caller can count and report bad rows.
    """
    col = quote(column)
    t = sql_type.upper()
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"CAST({col} AS TIMESTAMP)"
    if t in INTEGER_TYPES or t in {"DOUBLE", "FLOAT", "REAL"} or t.startswith("DECIMAL"):
        return _epoch_sql(f"CAST({col} AS DOUBLE)")
    if text_mode == "epoch":
        return _epoch_sql(f"TRY_CAST({col} AS DOUBLE)")
    return f"TRY_CAST({col} AS TIMESTAMP)"


def _epoch_sql(seconds: str) -> str:
    """Epoch seconds as a TIMESTAMP; NULL (reported as a bad time) when NaN, infinite or beyond DuckDB's range."""
    in_range = f"(CASE WHEN abs({seconds}) < {EPOCH_LIMIT:g} THEN {seconds} END)"  # NULL, even if evaluated eagerly
    return f"epoch_ms(TRY_CAST({in_range} * 1000 AS BIGINT))"


INT_ID_PATTERN = r"-?(0|[1-9][0-9]{0,17})"
EPOCH_LIMIT = 9e12  # seconds: TIMESTAMP holds microseconds in 64 bits, about ±292,000 years
