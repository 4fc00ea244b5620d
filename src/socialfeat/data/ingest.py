"""``ingest``: raw logs → a validated, popularity-filtered dataset of Parquet tables.

DuckDB streams the log (larger-than-memory logs spill to disk under ``memory_limit``), aggregates it
to one row per user–item pair in a single pass, and writes Parquet; numpy does the iterative
popularity filter on the pairs' integer codes. Everything lands in ``out`` atomically.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from socialfeat.artifacts import parquet_fingerprints
from socialfeat.atomic import atomic_dir, claim_dir, write_json, write_text
from socialfeat.config import Config, IngestConfig, dump_config, provenance
from socialfeat.data.absorb import Absorbed, read_live, union_events, union_items
from socialfeat.data.contract import (
    INTEGER_TYPES,
    PATH_CHARS,
    Table,
    check_id_columns,
    clip,
    fetch_one,
    first_bad_row,
    id_sql,
    is_file,
    is_json_id,
    json_id_counters,
    literal,
    number_sql,
    open_table,
    quote,
    read_error,
    settle_json_ids,
    short_error,
    stat_input,
    timestamp_sql,
)
from socialfeat.data.filtering import FilterResult, popularity_filter
from socialfeat.data.images import ImageRoot
from socialfeat.errors import UserError
from socialfeat.runlock import run_holding, writes_run

log = logging.getLogger(__name__)

GivenBy = Callable[[str, str], str]  # Config.given_by: dotted key, flag → how an error names where it was given
MAX_EVENT_KINDS = 64
EXAMPLES = 5  # how many missing images / unknown ids a message or stats.json lists
TIME_FORMS = "like the column's other values (ISO 8601 such as 2024-03-01T12:00:00, or epoch seconds)"
FLOAT_MAX = float(np.finfo(np.float32).max)  # the largest weight a dataset's float32 column holds


@dataclass
class IngestResult:
    """Where the dataset went and what it holds.

    Attributes:
        out: The dataset folder, ``RUN/dataset`` in a run.
        stats: What ``stats.json`` records: rows dropped and why, sizes after filtering, event weights, inputs.
    """

    out: Path
    stats: dict[str, Any]


@dataclass
class _Log:
    """What the interactions file turned out to hold."""

    table: Table
    user_col: str
    item_col: str
    events: list[str]
    has_value: bool
    has_time: bool
    rows: int
    events_before: dict[str, int]
    user_int: bool  # every id reads as an integer (output keeps integers)
    item_int: bool


@writes_run(lambda a: run_holding(a["out"]))
def ingest(
    config: Config,
    out: str | os.PathLike[str],
    step: Callable[[str], None] | None = None,
    live: bool = True,
    live_version: int | None = None,
) -> IngestResult:
    """Read the inputs named in ``config.ingest``, validate, filter, and write the dataset to ``out``.

    Args:
        config: The run's configuration; ``config.ingest`` names the logs and ``config.filter`` the popularity cuts.
        out: The dataset folder, ``RUN/dataset`` in a run: new, empty, or an earlier dataset.
        step: Hears the name of each phase as it starts; the CLI shows it as a spinner.
        live: Join the live store of the run ``out`` belongs to (``out/../live/live.db``), when there is one.
            See :mod:`socialfeat.data.absorb`.
        live_version: The live store's version to read up to; default the current one.

    Returns:
        The dataset folder and its statistics.

    Raises:
        UserError: A missing input, a bad row (named by file, row and column), too little memory, or an ``out``
            that holds something else.
    """
    cfg = config.ingest
    say = step or (lambda _msg: None)
    if cfg.interactions is None:
        raise UserError("--interactions", "required: the log of who viewed, liked, commented on which item")
    if cfg.image_root is not None:
        found = stat_input(cfg.image_root)
        if found is None or not stat.S_ISDIR(found.st_mode):
            what = "does not exist" if found is None else "is a file, expected a folder"
            where = config.given_by("ingest.image_root", "--image-root")
            raise UserError(where, f"folder '{clip(str(cfg.image_root), PATH_CHARS)}' {what}")
    if cfg.image_root is not None and cfg.items is None:
        raise UserError("--image-root", "given without --items; the items table says which image each item has")
    out = Path(out)
    inputs = (cfg.interactions, cfg.items, cfg.comments, cfg.image_root)
    claim_dir(out, "dataset", inputs=inputs, flag="--out")  # before any reading: a wrong --out fails at once
    absorbed = read_live(out.absolute().parent, live_version) if live else None
    with atomic_dir(out, "dataset", inputs=inputs) as tmp:
        spill = tmp / "_spill"
        con = _connect(cfg, spill)
        try:
            stats = _run(con, config, tmp, say, absorbed)
        except duckdb.OutOfMemoryException as exc:  # the limit is the user's setting, not a fault of their files
            reason = str(exc).splitlines()[0].removeprefix("Out of Memory Error: ")
            used = memory_limit(cfg)
            shown = f"'{cfg.memory_limit}'" + (f" ({used})" if used != cfg.memory_limit else "")
            raise UserError(
                "ingest.memory_limit",
                f"{shown} is too little memory for DuckDB to ingest this log ({reason}); "
                f"raise it, e.g. --set ingest.memory_limit={_doubled(used)}",
            ) from None
        except duckdb.Error as exc:  # a file that opened, then failed deep inside (a damaged Parquet page)
            raise _damaged_input(cfg, exc) from None
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
        write_json(tmp / "stats.json", {**stats, **parquet_fingerprints(tmp)})  # checked at every open
        write_json(tmp / "manifest.json", provenance(config, "ingest"))
        write_text(tmp / "config.yaml", dump_config(config))
    return IngestResult(out=out, stats=stats)


DAMAGED_DATA = ("tprotocolexception", "invalid data", "corrupt", "magic bytes", "decompress", "snappy", "zstd")


def _damaged_input(cfg: IngestConfig, exc: duckdb.Error) -> BaseException:
    """The one line for an input that opened but whose data DuckDB cannot decode further in (a damaged Parquet
    page, say); any other DuckDB error (an interrupt, a disk fault the CLI words itself) goes on as it was."""
    text = str(exc)
    if type(exc).__name__ == "InterruptException" or not any(w in text.lower() for w in DAMAGED_DATA):
        return exc
    given = [str(p) for p in (cfg.interactions, cfg.items, cfg.comments) if p is not None]
    parquet = [p for p in given if p.lower().endswith((".parquet", ".pq"))] or given
    where = parquet[0] if len(parquet) == 1 else "ingest"
    which = "" if len(parquet) == 1 else f"one of {', '.join(parquet)} "
    return UserError(where, f"{which}cannot be read past its start, it looks damaged: {short_error(exc)}")


def memory_limit(cfg: IngestConfig) -> str:
    """The limit DuckDB gets: the setting, or for ``auto`` a quarter of physical memory (at least 1 GB). A fixed
    1 GB failed at the seed's size (423K items × 309K users, text ids, 26M events) and 4 GB did."""
    if cfg.memory_limit.strip().lower() != "auto":
        return cfg.memory_limit
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (not Linux or macOS): the old fixed default
        return "1GB"
    return f"{max(1024, total // 4 // 2**20)}MB"


def _doubled(limit: str) -> str:
    """Twice a DuckDB size ('512MB' → '1024MB'), to suggest; a size it cannot read gives 2GB."""
    found = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B)\s*", limit, re.IGNORECASE)
    if not found:
        return "2GB"
    value = float(found.group(1)) * 2
    return f"{value:g}{found.group(2).upper().replace('IB', 'iB')}"


def _connect(cfg: IngestConfig, spill: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET memory_limit = {literal(memory_limit(cfg))}")
    except duckdb.Error:
        raise UserError(
            "ingest.memory_limit", f"'{cfg.memory_limit}' is not a size like 1GB or 500MB, or auto"
        ) from None
    if cfg.threads:
        con.execute(f"SET threads = {int(cfg.threads)}")
    con.execute(f"SET temp_directory = {literal(str(spill))}")
    con.execute("SET preserve_insertion_order = false")
    return con


def _shrink_duckdb(con: duckdb.DuckDBPyConnection) -> None:
    """Lower DuckDB's memory limit as far as it can evict data, to make room for the numpy phase."""
    for limit in ("256MB", "512MB", "1GB"):
        try:
            con.execute(f"SET memory_limit = {literal(limit)}")
            return
        except duckdb.OutOfMemoryException:
            continue  # what DuckDB holds cannot be evicted below this; try a higher floor


def _run(
    con: duckdb.DuckDBPyConnection, config: Config, tmp: Path, say: Callable[[str], None], live: Absorbed | None
) -> dict[str, Any]:
    cfg = config.ingest
    say("reading interactions" + (f" and the live store (version {live.snapshot.version})" if live else ""))
    assert cfg.interactions is not None
    lg = _aggregate(con, cfg, config.given_by, live)
    stats: dict[str, Any] = {"before": _before_stats(con, lg), "dropped": {}}

    usable = np.ones(_count(con, "icodes"), dtype=bool)
    if cfg.items is not None:
        say("checking items and images")
        usable = _load_items(con, cfg, stats, config.given_by, live)
    _shrink_duckdb(con)  # the pairs now live in DuckDB: let it spill them while numpy holds the codes
    uc, ic = _fetch_codes(con)

    say("filtering by popularity")
    stats["dropped"]["interactions_of_dropped_items"] = int(len(ic) - np.count_nonzero(usable[ic]))
    if not usable.any():
        raise UserError(str(cfg.items), "no interaction refers to an item that is in this file and has an image")
    n_users, n_items = _count(con, "ucodes"), len(usable)
    result = popularity_filter(uc, ic, n_users, n_items, config.filter, allowed_items=usable)
    del uc, ic
    con.execute(f"SET memory_limit = {literal(memory_limit(cfg))}")
    stats["dropped"].update(result.dropped)
    stats["filter"] = {"rounds": result.rounds, **config.filter.model_dump()}
    _register_maps(con, result)

    say("writing the dataset")
    _write_interactions(con, lg, tmp / "interactions.parquet")
    _write_entities(con, cfg, tmp)
    if cfg.comments is not None:
        say("reading comments")
        stats["comments"] = _write_comments(con, cfg, lg.user_int, tmp / "comments.parquet", config.given_by)
    stats["after"] = _after_stats(con, lg, tmp)
    stats["event_weights"] = {e: _weight(cfg, e) for e in lg.events}
    stats["id_types"] = {"user": "integer" if lg.user_int else "string", "item": "integer" if lg.item_int else "string"}
    stats["inputs"] = {
        name: str(path) for name in ("interactions", "items", "comments", "image_root") if (path := getattr(cfg, name))
    }
    if live is not None:
        stats["live"] = live.stats(con)
    return stats


def _weight(cfg: IngestConfig, event: str) -> float:
    return float(cfg.event_weights.get(event, 1.0))


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(fetch_one(con, f"SELECT count(*) FROM {table}")[0])  # type: ignore[index]


def _aggregate(con: duckdb.DuckDBPyConnection, cfg: IngestConfig, given_by: GivenBy, live: Absorbed | None) -> _Log:
    """Read the log in cheap passes, then aggregate it once to one row per (user, item).

    The cheap passes group by a few keys only: the event kinds, which also count the rows whose value or time
    breaks the contract, and the distinct user and item ids, which get their dense codes there. So the big
    aggregation groups on two int32 codes rather than on the ids as given (text or int64) and carries no
    validation counters: a narrower hash table that spills less once it outgrows ``memory_limit``, and no second
    copy of every pair to swap ids for codes afterwards. A bad file fails before the big aggregation starts.
    """
    assert cfg.interactions is not None
    t = open_table(con, cfg.interactions, cfg.format, "src_log")
    cols = cfg.columns
    user = t.required(
        cols.user, "--user-col", "user id", cols.user != "user_id", given_by("ingest.columns.user", "--user-col")
    )
    item = t.required(
        cols.item, "--item-col", "item id", cols.item != "item_id", given_by("ingest.columns.item", "--item-col")
    )
    json_ids = [c for c in (user, item) if is_json_id(t, c)]  # checked in the kinds pass below: no pass of their own
    id_counters = json_id_counters(con, t, json_ids) if json_ids else []
    check_id_columns(con, t, [c for c in (user, item) if c not in json_ids])
    event = t.optional(cols.event, default="event", flag=given_by("ingest.columns.event", "--event-col"))
    value = t.optional(cols.value, default="value", flag=given_by("ingest.columns.value", "--value-col"))
    time = t.optional(cols.time, default="timestamp", flag=given_by("ingest.columns.time", "--time-col"))
    where = str(t.path)

    e_sql = f"CAST({quote(event)} AS VARCHAR)" if event else literal(cfg.default_event)
    time_mode = _time_mode(con, t, time) if time else ""
    ts_sql = timestamp_sql(time, t.columns[time], time_mode) if time else ""
    # rows that break the contract, counted per event kind in the kinds pass: (condition, column, message)
    checks: list[tuple[str, str, str]] = []
    if value:
        num = number_sql(value)
        checks += [
            (
                f"{quote(value)} IS NOT NULL AND {num} IS NULL",
                value,
                "row {rn}: {raw!r} in column '{col}' is not a number",
            ),
            (
                f"NOT isfinite({num})",
                value,
                "row {rn}, column '{col}': not a finite number ({raw}); expected a count or weight",
            ),
            (f"{num} < 0", value, "row {rn}: {raw!r} in column '{col}' is negative; expected a count or weight ≥ 0"),
        ]
    if time:
        bad_time = "row {rn}: {raw!r} in column '{col}' is not a time " + TIME_FORMS
        checks.append((f"{quote(time)} IS NOT NULL AND {ts_sql} IS NULL", time, bad_time))
    counted = "".join(f", count(*) FILTER (WHERE {cond})" for cond, _, _ in checks)
    counted += "".join(f", {counter}" for counter in id_counters)  # over the raw JSON ids: the file itself
    source = t.base if id_counters else t.view
    kinds = _read(con, t, f"SELECT {e_sql} AS e, count(*) AS n{counted} FROM {source} GROUP BY e ORDER BY n DESC, e")
    if id_counters:
        first = 2 + len(checks)
        settle_json_ids(con, t, json_ids, [sum(int(row[first + j]) for row in kinds) for j in range(len(id_counters))])
    if event and any(row[0] is None for row in kinds):
        rn, _ = first_bad_row(con, t, f"{quote(event)} IS NULL", event)
        raise UserError(where, f"row {rn}: empty event in column '{event}'")
    events_before = {str(row[0]): int(row[1]) for row in kinds}
    if live is not None and live.snapshot.events:  # the log's rows were checked above; the store's were at `log`
        event, value, live_kinds = union_events(
            con, t, live, user=user, item=item, event=event, value=value, time=time, time_mode=time_mode,
            default_event=cfg.default_event,
        )  # fmt: skip
        e_sql = f"CAST({quote(event)} AS VARCHAR)" if event else e_sql
        for kind, n in live_kinds.items():
            events_before[kind] = events_before.get(kind, 0) + n
    if len(events_before) > MAX_EVENT_KINDS:
        raise UserError(
            given_by("ingest.columns.event", "--event-col") if cols.event else f"--event-col {event}",
            f"{len(events_before)} distinct values; expected a few event kinds (view, like, ...)",
        )
    events = list(events_before)
    user_int, item_int = _code_ids(con, t, user, item)  # refuses an empty id: before a bad value, as ever
    for k, (cond, column, message) in enumerate(checks):
        if sum(int(row[2 + k]) for row in kinds):
            rn, raw = first_bad_row(con, t, cond, column)
            raise UserError(where, message.format(rn=rn, raw=_shown(raw), col=column))

    inner = [f"{quote(user)} AS u", f"{quote(item)} AS i", f"{e_sql} AS e"]
    aggs = [f"count(*) FILTER (WHERE e = {literal(e)})::INTEGER AS {quote('n_' + e)}" for e in events]
    combined = f"sum({'coalesce(v, 1.0) * ' if value else ''}{_weight_sql(cfg, 'e')})"
    aggs.append(f"{_as_float(combined)} AS weight")
    if value:
        inner.append(f"{number_sql(value)} AS v")
        aggs.append("sum(v) AS value")
    if time:
        inner.append(f"{ts_sql} AS ts")
        aggs += ["min(ts) AS first_ts", "max(ts) AS last_ts"]
    _read(
        con,
        t,
        f"CREATE TEMP TABLE pairs_c AS SELECT uc.code AS uc, ic.code AS ic, {', '.join(aggs)} "
        f"FROM (SELECT {', '.join(inner)} FROM {t.view}) r "
        "JOIN (SELECT raw, code FROM ucodes) uc ON r.u = uc.raw JOIN (SELECT raw, code FROM icodes) ic ON r.i = ic.raw "
        "GROUP BY uc.code, ic.code",
    )
    overflowed = "NOT isfinite(weight)" + (" OR NOT isfinite(value)" if value else "")  # a sum beyond float32
    if fetch_one(con, f"SELECT 1 FROM pairs_c WHERE {overflowed} LIMIT 1") is not None:
        _refuse_overflow(con, cfg, t, value, e_sql, overflowed)
    return _Log(
        table=t,
        user_col=user,
        item_col=item,
        events=events,
        has_value=bool(value),
        has_time=bool(time),
        rows=sum(events_before.values()),
        events_before=events_before,
        user_int=user_int,
        item_int=item_int,
    )


def _weight_sql(cfg: IngestConfig, event: str) -> str:
    """The weight of one event of the kind in SQL expression ``event`` (unlisted kinds weigh 1)."""
    cases = " ".join(f"WHEN {literal(k)} THEN {float(w)!r}" for k, w in cfg.event_weights.items())
    return f"(CASE {event} {cases} ELSE 1.0 END)" if cases else "1.0"


def _as_float(sql: str) -> str:
    """``sql`` as FLOAT, or +inf where it does not fit (DuckDB's own cast would fail the whole query);
    the infinite weight is then found and reported with its row."""
    return f"(CASE WHEN abs({sql}) <= {FLOAT_MAX!r} THEN {sql} ELSE 'inf'::DOUBLE END)::FLOAT"


def _shown(raw: object) -> object:
    """A cell as echoed in a message: text clipped so that the reason stays readable."""
    return clip(raw) if isinstance(raw, str) else raw


def _path(image: str) -> str:
    """An image path as echoed in a message or stats.json: clipped, since a cell may hold thousands of characters."""
    return clip(image, PATH_CHARS)


def _refuse_overflow(
    con: duckdb.DuckDBPyConnection, cfg: IngestConfig, t: Table, value: str | None, e_sql: str, overflowed: str
) -> None:
    """A weight or value sum beyond float32 though every cell is finite (``overflowed``: the pairs' condition):
    name the row, or the pair whose sum is."""
    where = str(t.path)
    if value:
        row_weight = f"coalesce({number_sql(value)}, 1.0) * {_weight_sql(cfg, e_sql)}"
        rn, raw = first_bad_row(con, t, f"NOT abs({row_weight}) <= {FLOAT_MAX!r}", value)
        if rn:
            raise UserError(
                where,
                f"row {rn}, column '{value}': too large ({_shown(raw)}); with its event's weight it exceeds "
                f"{FLOAT_MAX:.3g}, the largest weight a dataset holds (float32)",
            )
    pair = fetch_one(
        con,
        "SELECT uc.raw, ic.raw FROM pairs_c p JOIN ucodes uc ON p.uc = uc.code JOIN icodes ic ON p.ic = ic.code "
        f"WHERE {overflowed} LIMIT 1",
    )
    assert pair is not None
    raise UserError(
        where,
        f"the rows of user '{pair[0]}' with item '{pair[1]}' sum to more than a dataset holds (weights up to "
        f"{FLOAT_MAX:.3g}, float32); expected counts or weights that sum to less",
    )


def _read(con: duckdb.DuckDBPyConnection, t: Table, sql: str) -> list[tuple]:
    """Run a query over an input file; a parse error is the user's file's fault, so say so."""
    try:
        return con.execute(sql).fetchall()
    except duckdb.OutOfMemoryException:
        raise  # ingest() names the memory limit; the file is not at fault
    except duckdb.Error as exc:
        raise UserError(str(t.path), read_error(t.path, t.format, exc)) from None


def _time_mode(con: duckdb.DuckDBPyConnection, t: Table, column: str) -> str:
    """Whether a text time column holds epoch seconds or ISO times, judged by the most of its first values.

    Deciding once saves a failed cast per row; a row in the other form (or in neither) is reported as bad, so the
    row named is the odd one out, not the first row of the column.
    """
    sample = fetch_one(
        con,
        f"SELECT count(TRY_CAST(v AS DOUBLE)), count(TRY_CAST(v AS TIMESTAMP)) FROM "
        f"(SELECT {quote(column)} AS v FROM {t.view} WHERE {quote(column)} IS NOT NULL LIMIT 1000)",
    )
    assert sample is not None
    return "epoch" if sample[0] > sample[1] else "iso"


def _code_ids(con: duckdb.DuckDBPyConnection, t: Table, user: str, item: str) -> tuple[bool, bool]:
    """Dense integer codes for every user and item in the log, in id order; say which ids are integers.

    One pass per column over the log, each a hash table of distinct ids only. Text ids from CSV/TSV (and JSON
    integers, read as their digits) become integers only if every distinct one is an int64 written as it reads
    back (``007`` or a 30-digit id keeps the column as text), checked on the distinct ids, not every row. Integer
    columns beyond int64 (uint64, a hugeint) are kept as their decimal text. An empty id is refused here, with its
    row.
    """
    flags = []
    for key, table, col, what in (("u", "ucodes", user, "user id"), ("i", "icodes", item, "item id")):
        _read(con, t, f"CREATE TEMP TABLE {table}_raw AS SELECT DISTINCT {quote(col)} AS raw FROM {t.view}")
        if fetch_one(con, f"SELECT 1 FROM {table}_raw WHERE raw IS NULL") is not None:
            rn, _ = first_bad_row(con, t, f"{quote(col)} IS NULL", col)
            raise UserError(str(t.path), f"row {rn}: empty {what} in column '{col}'")
        native = t.columns[col].upper()
        if native in INTEGER_TYPES or native.startswith("DECIMAL"):  # DECIMAL(p, 0): check_id_column refused others
            row = fetch_one(con, f"SELECT bool_and(TRY_CAST(raw AS BIGINT) IS NOT NULL) FROM {table}_raw")
        elif t.typed and col not in t.integer_text:
            row = None  # strings in a typed file stay strings, even "2"
        else:  # text, or JSON integers: integers only if every id is one in int64, written as it reads back
            row = fetch_one(
                con,
                f"SELECT bool_and(CAST(TRY_CAST(raw AS BIGINT) AS VARCHAR) IS NOT DISTINCT FROM raw) FROM {table}_raw",
            )
        is_int = bool(row and row[0])
        typed = "CAST(raw AS BIGINT)" if is_int else "CAST(raw AS VARCHAR)"
        con.execute(
            f"CREATE TEMP TABLE {table} AS SELECT raw, {typed} AS {key}, CAST(raw AS VARCHAR) AS key, "
            f"(row_number() OVER (ORDER BY {typed}) - 1)::INTEGER AS code FROM {table}_raw"
        )
        con.execute(f"DROP TABLE {table}_raw")
        flags.append(is_int)
    return flags[0], flags[1]


def _fetch_codes(con: duckdb.DuckDBPyConnection) -> tuple[np.ndarray, np.ndarray]:
    arrays = con.execute("SELECT uc, ic FROM pairs_c").fetchnumpy()
    return np.asarray(arrays["uc"], dtype=np.int32), np.asarray(arrays["ic"], dtype=np.int32)


def _load_items(
    con: duckdb.DuckDBPyConnection, cfg: IngestConfig, stats: dict[str, Any], given_by: GivenBy, live: Absorbed | None
) -> np.ndarray:
    """Read and check the items table; return which item codes are usable (listed, with an image)."""
    assert cfg.items is not None
    t = open_table(con, cfg.items, cfg.format, "src_items")
    ic = cfg.item_columns
    default_id = cfg.columns.item
    id_flag, image_flag = "--items-id-col", "--image-col"
    id_col = t.required(
        ic.id or default_id, id_flag, "item id", ic.id is not None, given_by("ingest.item_columns.id", id_flag)
    )
    image = t.required(
        ic.image, image_flag, "image path", ic.image != "image", given_by("ingest.item_columns.image", image_flag)
    )
    check_id_columns(con, t, [id_col])
    mapped = {
        name: t.optional(getattr(ic, name), default=name, flag=given_by(f"ingest.item_columns.{name}", f"--{name}-col"))
        for name in ("title", "tags", "text")
    }
    used = {id_col, image, *(c for c in mapped.values() if c)}
    reserved = {"item_id", "item_idx", "image", "title", "tags", "text", "n_users"}
    extras = [c for c in t.columns if c not in used and c not in reserved]
    select = [f"{id_sql(id_col)} AS i", f"CAST({quote(image)} AS VARCHAR) AS image"]
    select += [f"CAST({quote(c)} AS VARCHAR) AS {name}" for name, c in mapped.items() if c]
    select += [quote(c) for c in extras]
    rn = "_row"  # the data row, kept to name a bad row; named unlike any of the file's columns
    while rn in t.columns:
        rn = "_" + rn
    con.execute("SET preserve_insertion_order = true")
    con.execute(
        f"CREATE TEMP TABLE items_raw AS SELECT row_number() OVER () AS {rn}, {', '.join(select)} FROM {t.view}"
    )
    con.execute("SET preserve_insertion_order = false")
    where = str(t.path)
    bad = fetch_one(con, f"SELECT {rn} FROM items_raw WHERE i IS NULL ORDER BY {rn} LIMIT 1")
    if bad:
        raise UserError(where, f"row {t.line(bad[0])}: empty item id in column '{id_col}'")
    conflict = fetch_one(
        con,
        "SELECT i, list(DISTINCT coalesce(image, '<empty>') ORDER BY coalesce(image, '<empty>')) FROM items_raw "
        f"GROUP BY i HAVING count(DISTINCT coalesce(image, '<empty>')) > 1 ORDER BY min({rn}) LIMIT 1",
    )
    if conflict:
        imgs = ", ".join(_path(img) for img in conflict[1][:2])
        raise UserError(where, f"item id '{_shown(conflict[0])}' appears more than once with different images ({imgs})")
    stats["dropped"]["duplicate_item_rows"] = _count(con, "items_raw") - int(
        fetch_one(con, "SELECT count(DISTINCT i) FROM items_raw")[0]  # type: ignore[index]
    )
    con.execute(
        f"CREATE TEMP TABLE items AS SELECT * FROM items_raw QUALIFY row_number() OVER (PARTITION BY i ORDER BY {rn}) = 1"
    )
    con.execute("DROP TABLE items_raw")
    if live is not None and live.snapshot.items:
        union_items(con, live, rn)

    root = cfg.image_root if cfg.image_root is not None else t.path.parent
    rows = con.execute(
        f"SELECT c.code, it.image, it.i, it.{rn} FROM icodes c JOIN items it ON c.key = it.i ORDER BY c.code"
    ).fetchall()
    con.execute(f"ALTER TABLE items DROP COLUMN {rn}")
    n_codes = _count(con, "icodes")
    listed = np.zeros(n_codes, dtype=bool)
    has_image = np.zeros(n_codes, dtype=bool)
    missing: list[str] = []
    outside: list[str] = []  # paths that lead out of the image root: refused, never opened
    blank: list[tuple[int, object]] = []  # empty image cells: (data row, item id)
    image_root = ImageRoot(root, cfg.allow_absolute_images, live.images if live is not None else None)
    for code, img, item_id, row in rows:
        listed[code] = True
        if img is None or not img.strip():
            blank.append((row, item_id))
            continue
        path = image_root.resolve(img)
        if path is not None and is_file(path):  # a name the OS refuses (too long, ...) is a missing image
            has_image[code] = True
        elif path is None:
            outside.append(_path(img))
        else:
            missing.append(_path(img))
    lines = t.lines([row for row, _ in blank[:EXAMPLES]])  # JSON Lines: the file's lines, for the messages
    blank_shown = [f"row {lines[row]}: item '{_shown(item_id)}'" for row, item_id in blank[:EXAMPLES]]
    unlisted = int((~listed).sum())
    examples = con.execute(
        "SELECT key FROM icodes WHERE key NOT IN (SELECT i FROM items) ORDER BY code LIMIT ?", [EXAMPLES]
    ).fetchall()
    if unlisted:
        log.warning(
            "%d items in the log are not in %s (e.g. %s); their interactions are dropped",
            unlisted,
            t.path.name,
            ", ".join(str(r[0]) for r in examples),
        )
    if outside:
        absolute = "" if cfg.allow_absolute_images else " (absolute paths need ingest.allow_absolute_images)"
        what = f"{len(outside)} of {len(rows)} image paths lead outside '{root}'{absolute}, e.g. {', '.join(outside[:EXAMPLES])}"
        if cfg.strict:
            raise UserError(where, f"{what}; --strict forbids dropping them")
        log.warning("%s; those items are dropped", what)
    if blank:
        empty = (
            f"{len(blank)} of {len(rows)} items have an empty image cell in column '{image}' (e.g. {blank_shown[0]})"
        )
        if cfg.strict or len(blank) == len(rows):
            why = "; --strict forbids dropping them" if len(blank) < len(rows) else "; expected image paths"
            raise UserError(where, empty + why)
        log.warning("%s; those items are dropped", empty)
    if rows and len(missing) + len(outside) + len(blank) == len(rows):
        raise UserError(
            "--image-root",
            f"none of the {len(rows)} images exist under '{root}' (e.g. {(missing or outside)[0]}); check --image-root",
        )
    if not rows:
        raise UserError(where, f"no item id in this file matches an item id in {cfg.interactions}")
    if missing:
        if cfg.strict:
            raise UserError(
                where,
                f"{len(missing)} of {len(rows)} images are missing under '{root}' (e.g. {missing[0]}); --strict forbids dropping them",
            )
        log.warning(
            "%d of %d images are missing under %s (e.g. %s); those items are dropped",
            len(missing),
            len(rows),
            root,
            ", ".join(missing[:EXAMPLES]),
        )
    stats["dropped"].update(
        items_not_in_items_file=unlisted,
        items_missing_image=len(missing) + len(blank),
        items_image_outside_root=len(outside),
    )
    stats["missing_images"] = {
        "count": len(missing) + len(blank),
        "empty_cells": len(blank),
        "examples": (missing[:EXAMPLES] + [f"{b} (empty cell)" for b in blank_shown])[:EXAMPLES],
        "image_root": str(Path(root).absolute()),
        "allow_absolute": cfg.allow_absolute_images,
    }
    stats["images_outside_root"] = {"count": len(outside), "examples": outside[:EXAMPLES]}
    stats["unknown_items"] = {"count": unlisted, "examples": [str(r[0]) for r in examples]}
    stats["items_file"] = {
        "rows": len(rows),
        "listed_without_interactions": int(
            fetch_one(con, "SELECT count(*) FROM items WHERE i NOT IN (SELECT key FROM icodes)")[0]
        ),
    }  # type: ignore[index]
    return listed & has_image


def _register_maps(con: duckdb.DuckDBPyConnection, result: FilterResult) -> None:
    """Tables code → dense index (in id order) for the surviving users and items, with their pair counts."""
    for name, keep, counts in (
        ("umap", result.keep_users, result.user_counts),
        ("imap", result.keep_items, result.item_counts),
    ):
        codes = np.flatnonzero(keep).astype(np.int32)
        arrow = pa.table(
            {"code": codes, "idx": np.arange(len(codes), dtype=np.int32), "n": counts[codes].astype(np.int32)}
        )
        con.register(f"{name}_arrow", arrow)
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
        con.unregister(f"{name}_arrow")


def _copy(con: duckdb.DuckDBPyConnection, select: str, path: Path) -> None:
    con.execute(f"COPY ({select}) TO {literal(str(path))} (FORMAT parquet, COMPRESSION zstd)")


def _write_interactions(con: duckdb.DuckDBPyConnection, lg: _Log, path: Path) -> None:
    counts = ", ".join(f"coalesce(p.{quote('n_' + e)}, 0)::INTEGER AS {quote('n_' + e)}" for e in lg.events)
    extra = (", p.value" if lg.has_value else "") + (", p.first_ts, p.last_ts" if lg.has_time else "")
    _copy(
        con,
        f"SELECT um.idx AS user_idx, im.idx AS item_idx, {counts}, p.weight::FLOAT AS weight{extra} "
        "FROM pairs_c p JOIN umap um ON p.uc = um.code JOIN imap im ON p.ic = im.code ORDER BY user_idx, item_idx",
        path,
    )


def _write_entities(con: duckdb.DuckDBPyConnection, cfg: IngestConfig, out: Path) -> None:
    _copy(
        con,
        "SELECT c.u AS user_id, m.idx AS user_idx, m.n AS n_items "
        "FROM umap m JOIN ucodes c ON m.code = c.code ORDER BY user_idx",
        out / "users.parquet",
    )
    item_cols = "it.* EXCLUDE (i), " if cfg.items is not None else ""
    join = "LEFT JOIN items it ON c.key = it.i" if cfg.items is not None else ""
    _copy(
        con,
        f"SELECT c.i AS item_id, m.idx AS item_idx, {item_cols}m.n AS n_users "
        f"FROM imap m JOIN icodes c ON m.code = c.code {join} ORDER BY item_idx",
        out / "items.parquet",
    )


def _write_comments(
    con: duckdb.DuckDBPyConnection, cfg: IngestConfig, user_int: bool, path: Path, given_by: GivenBy
) -> dict[str, int]:
    """Comments of the surviving items, keyed like the other tables; the user may have been filtered out."""
    assert cfg.comments is not None
    t = open_table(con, cfg.comments, cfg.format, "src_comments")
    cc = cfg.comment_columns
    key = "ingest.comment_columns."
    flag = f"--set {key}item="
    item = t.required(cc.item or cfg.columns.item, flag, "item id", cc.item is not None, given_by(key + "item", flag))
    flag = f"--set {key}text="
    text = t.required(cc.text, flag, "text", cc.text != "text", given_by(key + "text", flag))
    user = t.optional(cc.user, default=cfg.columns.user, flag=given_by(key + "user", key + "user"))
    check_id_columns(con, t, [item, user] if user else [item])
    time = t.optional(cc.time, default="timestamp", flag=given_by(key + "time", key + "time"))
    bad = fetch_one(con, f"SELECT count(*) FROM {t.view} WHERE {quote(item)} IS NULL")[0]  # type: ignore[index]
    if bad:
        rn, _ = first_bad_row(con, t, f"{quote(item)} IS NULL", item)
        raise UserError(str(t.path), f"row {rn}: empty item id in column '{item}'")
    ts_sql = timestamp_sql(time, t.columns[time], _time_mode(con, t, time)) if time else ""  # as interactions
    if time:
        cond = f"{quote(time)} IS NOT NULL AND {ts_sql} IS NULL"
        if fetch_one(con, f"SELECT count(*) FROM {t.view} WHERE {cond}")[0]:  # type: ignore[index]
            rn, raw = first_bad_row(con, t, cond, time)
            raise UserError(str(t.path), f"row {rn}: {_shown(raw)!r} in column '{time}' is not a time {TIME_FORMS}")
    u_sql = id_sql(user) if user else "NULL::VARCHAR"
    t_sql = f", {ts_sql} AS timestamp" if time else ""
    con.execute(
        f"CREATE TEMP TABLE comments AS SELECT {id_sql(item)} AS i, {u_sql} AS u, "
        f"CAST({quote(text)} AS VARCHAR) AS text{t_sql} FROM {t.view}"
    )
    total = _count(con, "comments")
    empty = int(fetch_one(con, "SELECT count(*) FROM comments WHERE text IS NULL OR trim(text) = ''")[0])  # type: ignore[index]
    u_out = "TRY_CAST(c.u AS BIGINT)" if user_int else "c.u"
    ts = ", c.timestamp" if time else ""
    _copy(
        con,
        f"SELECT ic.i AS item_id, im.idx AS item_idx, {u_out} AS user_id, um.idx AS user_idx, "
        f"c.text{ts} FROM comments c JOIN icodes ic ON c.i = ic.key JOIN imap im ON ic.code = im.code "
        "LEFT JOIN ucodes uc ON c.u = uc.key LEFT JOIN umap um ON uc.code = um.code "
        "WHERE c.text IS NOT NULL AND trim(c.text) <> '' ORDER BY item_idx",
        path,
    )
    kept = int(fetch_one(con, f"SELECT count(*) FROM read_parquet({literal(str(path))})")[0])  # type: ignore[index]
    return {"rows": total, "empty_text": empty, "kept": kept, "of_dropped_items": total - empty - kept}


def _density(pairs: int, users: int, items: int) -> float:
    return pairs / (users * items) if users and items else 0.0


def _table(interactions: int, pairs: int, users: int, items: int, events: dict[str, int]) -> dict[str, Any]:
    """One column of the dataset table (before or after filtering)."""
    return {
        "interactions": interactions,
        "pairs": pairs,
        "users": users,
        "items": items,
        "events": events,
        "density": _density(pairs, users, items),
    }


def _before_stats(con: duckdb.DuckDBPyConnection, lg: _Log) -> dict[str, Any]:
    return _table(lg.rows, _count(con, "pairs_c"), _count(con, "ucodes"), _count(con, "icodes"), lg.events_before)


def _after_stats(con: duckdb.DuckDBPyConnection, lg: _Log, tmp: Path) -> dict[str, Any]:
    src = f"read_parquet({literal(str(tmp / 'interactions.parquet'))})"
    sums = ", ".join(f"coalesce(sum({quote('n_' + e)}), 0)::BIGINT" for e in lg.events)
    row = fetch_one(con, f"SELECT count(*), {sums} FROM {src}")
    assert row is not None
    events = {e: int(n) for e, n in zip(lg.events, row[1:], strict=True)}
    return _table(sum(events.values()), int(row[0]), _count(con, "umap"), _count(con, "imap"), events)
