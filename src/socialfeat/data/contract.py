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
from dataclasses import dataclass, field
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
JSON_SPACE = b" \t\r\n"  # what JSON calls whitespace: a line of only these is skipped by the reader
INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}


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
    reader: str = ""  # the SQL that reads the file (JSON Lines: read again with its id fields as raw JSON)
    base: str = ""  # the view over the file itself; ``view`` may be a view over it with ids as text
    detected: dict[str, str] = field(default_factory=dict)  # the column types the reader inferred
    json_ids: list[str] = field(default_factory=list)  # JSON Lines id fields read as raw JSON, then as text
    integer_text: set[str] = field(default_factory=set)  # id columns of text that was written as JSON integers

    @property
    def typed(self) -> bool:
        return self.format in TYPED_FORMATS

    def line(self, row: int) -> int:
        """What a message calls data row ``row`` (1-based): in JSON Lines the line of the file, since the reader
        skips blank lines; in CSV and TSV the data row itself (the header is not counted)."""
        return self.lines([row]).get(row, row)

    def lines(self, rows: list[int]) -> dict[int, int]:
        """Data row → its line of the file, for several rows in one scan (JSON Lines; other formats: the row).

        Only on the error path: the scan reads the file up to the last row asked for.
        """
        wanted = sorted({r for r in rows if r > 0})
        if self.format != "jsonl" or not wanted:
            return {r: r for r in rows}
        found: dict[int, int] = {}
        opener = gzip.open if self.path.suffix.lower() == ".gz" else open
        data_row = 0
        try:
            with opener(self.path, "rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    if not raw.strip(JSON_SPACE):
                        continue
                    data_row += 1
                    if data_row == wanted[len(found)]:
                        found[data_row] = number
                        if len(found) == len(wanted):
                            break
        except (OSError, EOFError):
            pass
        return {r: found.get(r, r) for r in rows}

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
    if fmt == "jsonl" and list(columns) == ["json"]:  # DuckDB's reading of lines that are not all objects
        not_objects = bad_json_line(path)
        if not_objects:
            raise UserError(str(path), not_objects)
    table = Table(path=path, view=view, format=fmt, columns=columns, reader=reader, base=view, detected=dict(columns))
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
    """The message for a file DuckDB failed to read. DuckDB's JSON reader counts lines one too far, so for text that
    is not UTF-8 or not JSON the file is scanned to the bad line (on the error path only)."""
    text = str(exc)
    if fmt == "jsonl" and "invalid utf-8" in text.lower():
        return _not_utf8(Path(path))
    if fmt == "jsonl" and "malformed json" in text.lower():
        hint = re.search(r"in line (\d+)", text)
        found = bad_json_line(Path(path), int(hint[1]) - 1 if hint else 1)
        if found:
            return found
    return f"cannot read as {fmt}: {short_error(exc)}"


def bad_json_line(path: Path, near: int = 1) -> str | None:
    """``line N: not JSON (...)`` for the first line of a JSON Lines file that is not one JSON object, or None.

    Lines before ``near - 1`` are only counted, not parsed (DuckDB's line is the hint); when nothing is wrong from
    there on, the whole file is parsed.
    """
    for start in (max(1, near - 1), 1) if near > 2 else (1,):
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        try:
            with opener(path, "rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    if number < start or not raw.strip(JSON_SPACE):
                        continue
                    raw = raw.strip(JSON_SPACE)
                    shown = clip(raw.decode("utf-8", "replace"))
                    try:
                        value = json.loads(raw)
                    except ValueError as exc:  # JSONDecodeError, or text that is not UTF-8
                        reason = exc.msg.lower() if isinstance(exc, json.JSONDecodeError) else NOT_UTF8
                        where = f", character {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                        return (
                            f"line {number}{where}: not JSON ({reason}); expected one object per line (line: {shown})"
                        )
                    if not isinstance(value, dict):
                        kind = "a list" if isinstance(value, list) else "a single value"
                        return (
                            f"line {number}: {kind}, not an object; expected one JSON object per line (line: {shown})"
                        )
        except (OSError, EOFError):
            return None
    return None


def first_bad_row(con: duckdb.DuckDBPyConnection, table: Table, condition: str, column: str) -> tuple[int, object]:
    """1-based number of the first data row where ``condition`` holds (JSON Lines: its line), and its ``column``.

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
    return table.line(int(row[0])), row[1]


NESTED_TYPE = re.compile(r"\[\d*\]$|^(STRUCT|MAP|UNION)\(")


def check_id_column(con: duckdb.DuckDBPyConnection, table: Table, column: str) -> None:
    """:func:`check_id_columns` for one column."""
    check_id_columns(con, table, [column])


def check_id_columns(con: duckdb.DuckDBPyConnection, table: Table, columns: list[str]) -> None:
    """An id is a string or an integer, kept as its literal text; anything else is refused with its row.

    JSON Lines ids are read as raw JSON, so ``2`` stays ``2`` and a 30-digit integer keeps its 30 digits; a string
    is its text (``"b"`` is ``b``). Floats (``1.5``, ``2.0``, ``1e3``), booleans, lists and objects are refused, as
    are Parquet columns of floats, booleans, binary or nested values. CSV and TSV cells are text, always accepted.
    The JSON fields of one file are checked in one pass over it.
    """
    json_ids = [c for c in columns if is_json_id(table, c)]
    if json_ids:
        counters = json_id_counters(con, table, json_ids)
        counts = fetch_one(con, f"SELECT {', '.join(counters)} FROM {table.base}")  # one pass for every field
        assert counts is not None
        settle_json_ids(con, table, json_ids, list(counts))
    for column in (c for c in columns if c not in json_ids):
        kind = _refused_kind(table.columns[column].upper())
        condition = f"{quote(column)} IS NOT NULL"
        if kind is None or fetch_one(con, f"SELECT 1 FROM {table.view} WHERE {condition} LIMIT 1") is None:
            continue  # an id type, or no value at all (the empty-id check names that row)
        rn, value = first_bad_row(con, table, condition, column)
        if kind == "a list" and not isinstance(value, list | tuple):
            kind = "an object"
        _refuse_id(table, rn, column, kind, value)


def _refused_kind(sql_type: str) -> str | None:
    """What an id column of DuckDB type ``sql_type`` holds when that is not an id, else None."""
    if sql_type in INTEGER_TYPES or sql_type in ("VARCHAR", "UUID"):
        return None
    decimal = re.fullmatch(r"DECIMAL\(\d+,\s*(\d+)\)", sql_type)
    if decimal:
        return None if decimal[1] == "0" else "a decimal fraction"
    if NESTED_TYPE.search(sql_type):
        return "a list" if re.search(r"\[\d*\]$", sql_type) else "an object"
    if sql_type in ("FLOAT", "DOUBLE", "REAL"):
        return "a floating-point number"
    if sql_type == "BOOLEAN":
        return "a boolean"
    if sql_type in ("BLOB", "BIT"):
        return "binary data"
    return f"a {sql_type.lower()} value"


def _refuse_id(table: Table, rn: int, column: str, kind: str, value: object) -> None:
    what = "field" if table.format == "jsonl" else "column"
    if isinstance(value, bytes):
        shown = "0x" + value[:24].hex()
    elif isinstance(value, list | tuple | dict | bool):
        shown = json.dumps(value, default=str)
    else:
        shown = str(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise UserError(
        str(table.path), f"row {rn}: {what} '{column}' is {kind} ({shown}); expected a string or integer id"
    )


INTEGER_JSON = r"-?(0|[1-9][0-9]*)"  # a JSON number written as an integer, any length


def _json_literal(path: Path, line: int, column: str) -> str | None:
    """The number in field ``column`` on ``line`` of a JSON Lines file as written there (error path only)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if number == line:
                    value = json.loads(raw, parse_float=str, parse_int=str).get(column)
                    return value if isinstance(value, str) else None
    except (OSError, EOFError, ValueError, AttributeError):
        pass
    return None


def is_json_id(table: Table, column: str) -> bool:
    """Whether an id column is checked and read as raw JSON (every JSON Lines field, a Parquet JSON column)."""
    return table.format == "jsonl" or table.columns[column].upper() == "JSON"


def json_id_counters(con: duckdb.DuckDBPyConnection, table: Table, columns: list[str]) -> list[str]:
    """Read JSON id fields as raw JSON (their literal text, not numbers DuckDB guessed a type for), exposed as text
    in ``table.view``; return two SQL counters per field over ``table.base`` (values that are no id, strings) for
    one pass over the file, which may be a pass the caller makes anyway. :func:`settle_json_ids` reads them."""
    table.json_ids += [c for c in columns if c not in table.json_ids]
    retype = [c for c in columns if table.format == "jsonl" and table.detected.get(c, "").upper() != "JSON"]
    if retype:
        table.detected.update(dict.fromkeys(retype, "JSON"))
        spec = ", ".join(f"{literal(name)}: {literal(kind)}" for name, kind in table.detected.items())
        reader = table.reader.removesuffix(")") + f", columns={{{spec}}})"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {table.base} AS SELECT * FROM {reader}")
    texts = ", ".join(f"json_extract_string({quote(c)}, '$') AS {quote(c)}" for c in table.json_ids)  # "b" is b
    table.view = f"{table.base}_ids"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {table.view} AS SELECT * REPLACE ({texts}) FROM {table.base}")
    counters = []
    for column in columns:
        counters += [
            f"count(*) FILTER (WHERE {_not_an_id(column)})",
            f"count(*) FILTER (WHERE {_json_kind(column)} = 'VARCHAR')",
        ]
    return counters


def _json_kind(column: str) -> str:
    return f"json_type({quote(column)})"


def _not_an_id(column: str) -> str:
    """SQL: the raw JSON value of ``column`` is neither a string nor an integer (null counts as neither here)."""
    kind, written = _json_kind(column), f"CAST({quote(column)} AS VARCHAR)"
    return f"({kind} IN ('ARRAY', 'OBJECT', 'BOOLEAN') OR ({kind} = 'DOUBLE' AND NOT regexp_full_match({written}, '{INTEGER_JSON}')))"


def settle_json_ids(con: duckdb.DuckDBPyConnection, table: Table, columns: list[str], counts: list[int]) -> None:
    """Refuse the first value of a field that is not a string or an integer (``counts``: the counters of
    :func:`json_id_counters`), named by its line; mark the fields of integers only, which store like a CSV's."""
    source = Table(table.path, table.base, table.format, table.columns)
    for k, column in enumerate(columns):
        if counts[2 * k]:
            rn, value = first_bad_row(con, source, _not_an_id(column), column)
            text = str(value).strip()
            found = {"[": "a list", "{": "an object", "t": "a boolean", "f": "a boolean"}.get(text[:1])
            if found is None and table.format == "jsonl":  # a float as written (DuckDB shows 1e3 as 1000.0)
                text = _json_literal(table.path, rn, column) or text
            _refuse_id(table, rn, column, found or "a floating-point number", text)
        if not counts[2 * k + 1]:
            table.integer_text.add(column)  # only JSON integers (and nulls): integer ids, as the same digits in a CSV
        table.columns[column] = "VARCHAR"


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


EPOCH_LIMIT = 9e12  # seconds: TIMESTAMP holds microseconds in 64 bits, about ±292,000 years
