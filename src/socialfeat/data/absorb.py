"""The live part of ``ingest``: a run's live store joins the raw logs, so the retrain learns from what ``add`` and
``log`` stored since the last batch run.

The store is never truncated. Ingest reads one snapshot of it (every item, and the events up to version V) and
unions it with the raw log and the items table, in DuckDB, before anything is counted or coded. Live events go in
as raw rows (user, item, event kind, value, time), so ingest weighs them exactly as it weighs the log. Live items
keep their images in the store's folder (``RUN/live/images``): their paths read ``live:<file>``, a second trusted
root (see :class:`socialfeat.data.images.ImageRoot`). ``stats.json`` records ``live: {version: V, ...}``; the live
catalogue then replays only the events above V, so no event is counted twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from socialfeat.data.contract import INTEGER_TYPES, Table, fetch_one, literal, quote
from socialfeat.data.images import LIVE_PREFIX
from socialfeat.errors import UserError
from socialfeat.live.store import LiveStore, Snapshot, image_dir, store_path

FIELDS = ("title", "tags", "text")  # the item table's optional text columns, as ingest names them


@dataclass
class Absorbed:
    """One snapshot of a run's live store on its way into a dataset, and what the union did with it."""

    store: Path
    images: Path
    snapshot: Snapshot
    replaced_item_rows: int = 0  # rows of the item table whose id a live item took over (the live one is kept)

    def stats(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """What ``stats.json`` records under ``live``: the version absorbed (the catalogue replays what came
        later), the items and events unioned, and how many live items the popularity filter kept."""
        kept = 0
        if self.snapshot.items and _exists(con, "live_items"):
            row = fetch_one(
                con,
                "SELECT count(*) FROM imap m JOIN icodes c ON m.code = c.code WHERE c.key IN (SELECT i FROM live_items)",
            )
            kept = int(row[0]) if row else 0
        return {
            "version": self.snapshot.version,
            "items": len(self.snapshot.items),
            "events": len(self.snapshot.events),
            "items_in_dataset": kept,
            "replaced_item_rows": self.replaced_item_rows,
            "store": str(self.store),
        }


def read_live(run: Path, upto: int | None = None) -> Absorbed | None:
    """The snapshot of ``run``'s live store to absorb (up to version ``upto``, default the current one); None when
    the run has no store or it holds nothing yet."""
    if not store_path(run).is_file():
        return None
    with LiveStore(run) as store:
        snapshot = store.for_batch(upto)
    if snapshot.version == 0:
        return None
    return Absorbed(store_path(run), image_dir(run), snapshot)


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return fetch_one(con, "SELECT 1 FROM duckdb_tables() WHERE table_name = ?", [table]) is not None


def _copy_in(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    con.register(f"{name}_arrow", table)
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
    con.unregister(f"{name}_arrow")


def _check_ids(con: duckdb.DuckDBPyConnection, live: Absorbed, t: Table, column: str, source: str) -> str:
    """The live ids of one column cast to the log's type for it; an id that does not fit (a text id in a log of
    integers) is a UserError naming the store."""
    sql_type = t.columns[column]
    if sql_type.upper() == "VARCHAR":
        return source
    bad = fetch_one(con, f"SELECT {source} FROM live_events WHERE TRY_CAST({source} AS {sql_type}) IS NULL LIMIT 1")
    if bad is not None:
        raise UserError(
            str(live.store),
            f"the id '{bad[0]}' of a logged event does not fit column '{column}' of {t.path.name} ({sql_type.lower()})",
        )
    return f"CAST({source} AS {sql_type})"


def _time_sql(sql_type: str, mode: str) -> str:
    """A live event's time (ISO text, UTC) as the log's time column holds its times: timestamps, dates, epoch
    seconds, or text in ``mode`` (iso or epoch)."""
    ts = "TRY_CAST(ts AS TIMESTAMP)"
    kind = sql_type.upper()
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return f"TRY_CAST({ts} AS {sql_type})"
    if kind in INTEGER_TYPES or kind in {"DOUBLE", "FLOAT", "REAL"} or kind.startswith("DECIMAL"):
        return f"TRY_CAST(epoch({ts}) AS {sql_type})"
    if mode == "epoch":
        return f"CAST(epoch({ts}) AS VARCHAR)"
    return "ts"


def union_events(
    con: duckdb.DuckDBPyConnection,
    t: Table,
    live: Absorbed,
    *,
    user: str,
    item: str,
    event: str | None,
    value: str | None,
    time: str | None,
    time_mode: str,
    default_event: str,
) -> tuple[str | None, str | None, dict[str, int]]:
    """Make ``t.view`` the log plus the live events, column for column: the event column (added, holding
    ``default_event`` for the log's rows, when the log has none), the value column (added when live events carry
    values the log has no column for), and the time column when the log has one. Returns the event and value
    columns now in force and the live events per kind."""
    rows = live.snapshot.events
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], [], []]
    _copy_in(
        con,
        "live_events",
        pa.table(
            {
                "u": pa.array(columns[0], pa.string()),
                "i": pa.array(columns[1], pa.string()),
                "e": pa.array(columns[2], pa.string()),
                "v": pa.array(columns[3], pa.float64()),
                "ts": pa.array(columns[4], pa.string()),
            }
        ),
    )
    kinds = {
        str(k): int(n)
        for k, n in con.execute("SELECT e, count(*) FROM live_events GROUP BY e ORDER BY 2 DESC, 1").fetchall()
    }
    if not rows:
        return event, value, kinds
    added: list[str] = []
    if event is None:
        event = "event"  # not a column of the log: ingest took every row as default_event
        added.append(f"{literal(default_event)} AS {quote(event)}")
    if value is None and any(v is not None for v in columns[3]):
        value = "value"  # likewise free: the log has no value column
        added.append(f"NULL::DOUBLE AS {quote(value)}")
    picked = [
        f"{_check_ids(con, live, t, user, 'u')} AS {quote(user)}",
        f"{_check_ids(con, live, t, item, 'i')} AS {quote(item)}",
        f"e AS {quote(event)}",
    ]
    if value is not None:
        picked.append(f"v AS {quote(value)}")
    if time is not None:
        picked.append(f"{_time_sql(t.columns[time], time_mode)} AS {quote(time)}")
    view = f"{t.base}_live"
    extra = "".join(f", {a}" for a in added)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT *{extra} FROM {t.view} "
        f"UNION ALL BY NAME SELECT {', '.join(picked)} FROM live_events"
    )
    t.view = view
    return event, value, kinds


def union_items(con: duckdb.DuckDBPyConnection, live: Absorbed, rn: str) -> None:
    """Add the live items to ingest's ``items`` table: a live item replaces a row of the item table with its id
    (the catalogue showed the live one), its image path reads ``live:<file>``, its title, tags and text fill those
    columns (added when the table has none), and its other fields fill the table's columns of the same name. A
    table path that itself starts with ``live:`` is rewritten ``./live:...``: the same file, never the store's."""
    items = live.snapshot.items
    have = {row[0]: str(row[1]) for row in con.execute("DESCRIBE items").fetchall()}
    extras = [c for c in have if c not in {rn, "i", "image", *FIELDS}]
    data: dict[str, pa.Array] = {
        "i": pa.array([it.item_id for it in items], pa.string()),
        "image": pa.array([LIVE_PREFIX + it.image for it in items], pa.string()),
    }
    for name in FIELDS:
        values = [getattr(it, name) for it in items]
        if name in have or any(v is not None for v in values):
            data[name] = pa.array(values, pa.string())
    for column in extras:
        data[column] = pa.array([_text(it.extra.get(column)) for it in items], pa.string())
    _copy_in(con, "live_items", pa.table(data))
    for name in FIELDS:
        if name in data and name not in have:
            con.execute(f"ALTER TABLE items ADD COLUMN {quote(name)} VARCHAR")
    before = int(fetch_one(con, "SELECT count(*) FROM items")[0])  # type: ignore[index]
    con.execute("DELETE FROM items WHERE i IN (SELECT i FROM live_items)")
    live.replaced_item_rows = before - int(fetch_one(con, "SELECT count(*) FROM items")[0])  # type: ignore[index]
    con.execute(
        f"UPDATE items SET image = './' || image WHERE starts_with(image, {literal(LIVE_PREFIX)})"
    )  # a user's own path: never the store's folder
    cast = [f"TRY_CAST({quote(c)} AS {have[c]}) AS {quote(c)}" for c in extras]
    fields = [quote(name) for name in FIELDS if name in data]
    select = ", ".join(["i", "image", *fields, *cast])
    con.execute(
        f"INSERT INTO items BY NAME SELECT (SELECT coalesce(max({quote(rn)}), 0) FROM items) + row_number() OVER () "
        f"AS {quote(rn)}, {select} FROM live_items"
    )


def _text(value: Any) -> str | None:
    """A live item's extra field as text, for a cast to the column's type (JSON spelling for booleans)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return json.dumps(value)
    return str(value)
