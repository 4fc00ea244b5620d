"""The data contract: which files ``ingest`` reads, in which formats, and how they are checked.

Every problem a user can cause is a :class:`UserError` naming the file (or flag) and, where it
helps, the row: ``error: interactions.csv: row 17: empty user_id``.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
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

    def required(self, name: str, flag: str, what: str, explicit: bool) -> str:
        """A column that must exist; the message says which columns were found and which flag maps it."""
        if name in self.columns:
            return name
        found = ", ".join(self.columns) or "none"
        if explicit:
            raise UserError(flag, f"column '{name}' is not in {self.path.name} (found: {found})")
        raise UserError(str(self.path), f"no {what} column '{name}' (found: {found}); map it with {flag} NAME")


def open_table(con: duckdb.DuckDBPyConnection, path: Path, fmt: str | None, view: str) -> Table:
    """Open ``path`` as a view named ``view``; fail clearly on a missing, empty or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise UserError(str(path), "file not found")
    if path.is_dir():
        raise UserError(str(path), "is a folder; expected a file")
    fmt = detect_format(path, fmt)
    if path.stat().st_size == 0:
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
    except duckdb.Error as exc:
        raise UserError(str(path), f"cannot read as {fmt}: {short_error(exc)}") from None
    columns = {row[0]: str(row[1]) for row in described}
    table = Table(path=path, view=view, format=fmt, columns=columns)
    try:
        has_rows = fetch_one(con, f"SELECT 1 FROM {view} LIMIT 1") is not None
    except duckdb.Error as exc:
        raise UserError(str(path), f"cannot read as {fmt}: {short_error(exc)}") from None
    if not has_rows:
        raise UserError(str(path), f"no rows after the header (columns: {', '.join(columns)})")
    return table


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
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:
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


def short_error(exc: BaseException) -> str:
    """The first informative line of a DuckDB error, without its class prefix."""
    text = str(exc).strip()
    ragged = re.search(r"CSV Error on Line: (\d+).*?Expected Number of Columns: (\d+)", text, re.S)
    if ragged:
        return f"line {ragged[1]}: expected {ragged[2]} fields, as many as the header has"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    first = re.sub(r"^[A-Za-z ]*Error:\s*", "", first)
    for ln in lines[1:]:
        if ln.lower().startswith(("csv error on line", "line:", "original line")):
            first = f"{first} ({ln})"
            break
    return first[:300]


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
    if row is None:  # pragma: no cover - the caller saw a bad row in the aggregate
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
        return f"epoch_ms(CAST({col} * 1000 AS BIGINT))"
    if text_mode == "epoch":
        return f"epoch_ms(TRY_CAST(TRY_CAST({col} AS DOUBLE) * 1000 AS BIGINT))"
    return f"TRY_CAST({col} AS TIMESTAMP)"


INT_ID_PATTERN = r"-?(0|[1-9][0-9]{0,17})"
