"""Reading the tables ``add`` and ``log`` take: the same formats and column names as ``ingest`` (CSV, TSV, Parquet,
JSON Lines; ``ingest.columns`` and ``ingest.item_columns`` map them), read through DuckDB and checked row by row, so a
bad row is one line naming the file, the row and the column before anything is written."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from socialfeat.config import IngestConfig
from socialfeat.data.contract import check_id_columns, id_sql, open_table, quote
from socialfeat.errors import UserError

MAX_ROWS = 1_000_000  # one call's table; larger backfills belong in the next batch run's logs
MAX_FIELD = 100_000  # characters in a title, text or tags cell


@dataclass
class NewItem:
    """One row of an item table: the id as text, the image path as given, and the optional fields."""

    item_id: str
    image: str
    title: str | None = None
    text: str | None = None
    tags: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    row: int = 0  # the data row, for messages


@dataclass
class NewEvent:
    """One row of an event table."""

    user_id: str
    item_id: str
    event: str
    value: float | None = None
    ts: str | None = None
    row: int = 0


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET threads = 1")  # tables of new items and events are small; a server's cores serve requests
    return con


def _rows(con: duckdb.DuckDBPyConnection, sql: str, where: str) -> list[tuple]:
    try:
        return con.execute(sql).fetchall()
    except duckdb.Error as e:
        raise UserError(where, f"cannot read it ({str(e).splitlines()[0]})") from None


def check_text(value: Any, where: str, column: str, row: int) -> str | None:
    """A title, text or tags cell: text of at most ``MAX_FIELD`` characters, None when empty."""
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_FIELD:
        raise UserError(where, f"row {row}, column '{column}': {len(text):,} characters; at most {MAX_FIELD:,}")
    if "\x00" in text:
        raise UserError(where, f"row {row}, column '{column}': holds a NUL character")
    return text if text.strip() else None


def check_id(value: Any, where: str, column: str, row: int) -> str:
    """An id cell as text: not empty, no NUL, at most 1,000 characters."""
    if value is None or not str(value).strip():
        raise UserError(where, f"row {row}: empty id in column '{column}'")
    text = str(value)
    if "\x00" in text or len(text) > 1000:
        raise UserError(where, f"row {row}, column '{column}': not an id (NUL, or over 1,000 characters)")
    return text


def read_items(path: Path, cfg: IngestConfig) -> list[NewItem]:
    """The rows of an item table, ids as text; a repeated id with another image is refused, an exact repeat kept
    once."""
    con = _connect()
    t = open_table(con, Path(path), cfg.format, "new_items")
    ic = cfg.item_columns
    where = str(t.path)
    id_col = t.required(ic.id or cfg.columns.item, "--items-id-col", "item id", ic.id is not None)
    image = t.required(ic.image, "--image-col", "image path", ic.image != "image")
    check_id_columns(con, t, [id_col])
    mapped = {
        name: t.optional(getattr(ic, name), default=name, flag=f"ingest.item_columns.{name}")
        for name in ("title", "tags", "text")
    }
    used = {id_col, image, *(c for c in mapped.values() if c)}
    extras = [c for c in t.columns if c not in used and c not in {"item_id", "item_idx", "n_users"}]
    select = [id_sql(id_col), f"CAST({quote(image)} AS VARCHAR)"]
    select += [f"CAST({quote(c)} AS VARCHAR)" if c else "NULL" for c in mapped.values()]
    select += [quote(c) for c in extras]
    rows = _rows(con, f"SELECT {', '.join(select)} FROM {t.view} LIMIT {MAX_ROWS + 1}", where)
    if len(rows) > MAX_ROWS:
        raise UserError(where, f"over {MAX_ROWS:,} rows; add at most that many items per call")
    out: dict[str, NewItem] = {}
    for n, r in enumerate(rows, start=1):
        item_id = check_id(r[0], where, id_col, n)
        img = r[1]
        if img is None or not str(img).strip():
            raise UserError(where, f"row {n}: empty image path in column '{image}' (item '{item_id}')")
        fields = {name: check_text(v, where, c or name, n) for v, (name, c) in zip(r[2:5], mapped.items(), strict=True)}
        extra = {c: _plain(v, where, c, n) for c, v in zip(extras, r[5:], strict=True)}
        item = NewItem(item_id, str(img), **fields, extra=extra, row=n)
        if item_id in out:
            if out[item_id].image != item.image:
                raise UserError(where, f"row {n}: item id '{item_id}' appears again with another image")
            continue
        out[item_id] = item
    return list(out.values())


def read_events(path: Path, cfg: IngestConfig) -> list[NewEvent]:
    """The rows of an event table: user, item, event kind (``ingest.default_event`` without that column), optional
    value (a count or weight ≥ 0) and time (ISO text, a timestamp or epoch seconds)."""
    con = _connect()
    t = open_table(con, Path(path), cfg.format, "new_events")
    cols = cfg.columns
    where = str(t.path)
    user = t.required(cols.user, "--user-col", "user id", cols.user != "user_id")
    item = t.required(cols.item, "--item-col", "item id", cols.item != "item_id")
    check_id_columns(con, t, [user, item])
    event = t.optional(cols.event, default="event", flag="ingest.columns.event")
    value = t.optional(cols.value, default="value", flag="ingest.columns.value")
    time = t.optional(cols.time, default="timestamp", flag="ingest.columns.time")
    select = [id_sql(user), id_sql(item)]
    select.append(f"CAST({quote(event)} AS VARCHAR)" if event else "NULL")
    select.append(quote(value) if value else "NULL")
    select.append(quote(time) if time else "NULL")
    rows = _rows(con, f"SELECT {', '.join(select)} FROM {t.view} LIMIT {MAX_ROWS + 1}", where)
    if len(rows) > MAX_ROWS:
        raise UserError(where, f"over {MAX_ROWS:,} rows; log at most that many events per call")
    out = []
    for n, r in enumerate(rows, start=1):
        out.append(
            NewEvent(
                check_id(r[0], where, user, n),
                check_id(r[1], where, item, n),
                check_event(r[2], cfg.default_event, where, event or "event", n),
                check_value(r[3], where, value or "value", n),
                check_time(r[4], where, time or "timestamp", n),
                row=n,
            )
        )
    return out


def check_event(value: Any, default: str, where: str, column: str, row: int) -> str:
    if value is None:
        if column == "event" and default:
            return default
        raise UserError(where, f"row {row}: empty event in column '{column}'")
    text = str(value).strip()
    if not text or len(text) > 100 or "\x00" in text:
        raise UserError(where, f"row {row}, column '{column}': expected an event kind (view, like, ...)")
    return text


def check_value(value: Any, where: str, column: str, row: int) -> float | None:
    """A count or weight: a finite number ≥ 0, or empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(where, f"row {row}: {str(value)[:40]!r} in column '{column}' is not a number") from None
    if not math.isfinite(number) or number < 0 or number > 1e30:
        raise UserError(where, f"row {row}, column '{column}': {value!r}; expected a count or weight ≥ 0")
    return number


def check_time(value: Any, where: str, column: str, row: int) -> str | None:
    """A time as ISO text (UTC when numeric): a timestamp, a date, epoch seconds, or ISO text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day).isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:  # beyond the years 1 to 9999 a datetime cannot hold it
            if not math.isfinite(value):
                raise ValueError(value)
            return dt.datetime.fromtimestamp(float(value), dt.UTC).replace(tzinfo=None).isoformat()
        except (ValueError, OverflowError, OSError):
            raise UserError(where, f"row {row}, column '{column}': {value!r} is not a time (epoch seconds)") from None
    text = str(value).strip()
    try:
        return dt.datetime.fromisoformat(text).isoformat()
    except ValueError:
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            return check_time(seconds, where, column, row)
    raise UserError(where, f"row {row}: {text[:40]!r} in column '{column}' is not a time (ISO 8601 or epoch seconds)")


def _plain(value: Any, where: str, column: str, row: int) -> Any:
    """An extra column's cell as JSON can hold it: numbers (finite), text, booleans or null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(where, f"row {row}, column '{column}': not a finite number ({value})")
        return value
    return str(value)
