"""The live store: items added and events logged since the batch run, in one SQLite file, ``RUN/live/live.db``.

Why SQLite and not DuckDB: a platform writes from two processes at once (``serve --writable`` and a ``socialfeat
add`` cron job). DuckDB lets one process open a file for writing; SQLite in WAL mode lets many, one transaction at a
time, while readers never block. ``synchronous=FULL`` makes a commit durable before it returns, so an acknowledged
write survives a SIGKILL (and a power cut). The batch outputs stay immutable: the store only ever grows beside them.

Every write bumps ``meta.version`` inside its own transaction. A reader that saw version V asks for the rows with a
version above V: that is how a running server picks up what another process added.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from socialfeat.errors import UserError

SCHEMA = 1  # bump when a table changes; an older store is then refused with a hint, never misread
BUSY_MS = 30_000  # how long a writer waits for another process's transaction before giving up

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,           -- of the image bytes: the same id with the same bytes is a no-op
    image TEXT NOT NULL,            -- file name under live/images/ (content addressed)
    title TEXT, text TEXT, tags TEXT,
    extra TEXT,                     -- the other columns of the item table, as JSON
    factors BLOB NOT NULL,          -- predicted item factors, float32
    predicted_by TEXT NOT NULL,     -- content or image
    added_at REAL NOT NULL,
    version INTEGER NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vectors (
    item_id TEXT NOT NULL, source TEXT NOT NULL, col TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (item_id, source, col)
);
CREATE TABLE IF NOT EXISTS removals (
    item_id TEXT PRIMARY KEY, removed_at REAL NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL, item_id TEXT NOT NULL, event TEXT NOT NULL,
    value REAL, ts TEXT, weight REAL NOT NULL, logged_at REAL NOT NULL, version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id);
CREATE INDEX IF NOT EXISTS events_item ON events (item_id);
CREATE INDEX IF NOT EXISTS events_version ON events (version);
CREATE INDEX IF NOT EXISTS items_version ON items (version);
"""


def store_path(run: str | Path) -> Path:
    return Path(run) / "live" / "live.db"


def image_dir(run: str | Path) -> Path:
    return Path(run) / "live" / "images"


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


@dataclass
class LiveItem:
    """One added item as the store holds it."""

    item_id: str
    sha256: str
    image: str
    title: str | None
    text: str | None
    tags: str | None
    extra: dict[str, Any]
    factors: np.ndarray
    predicted_by: str
    added_at: float
    version: int
    removed: bool


@dataclass
class LiveEvent:
    """One logged event as the store holds it; ``weight`` is its weight under the run's event weights."""

    seq: int
    user_id: str
    item_id: str
    event: str
    value: float | None
    ts: str | None
    weight: float
    version: int


@dataclass
class Snapshot:
    """The store as of one version, for the next batch run: every item, and the events (user, item, event, value,
    time) logged up to that version, in the order logged."""

    version: int
    items: list[LiveItem]
    events: list[tuple[str, str, str, float | None, str | None]]


class LiveStore:
    """One connection to a run's live store. Cheap to open; open one per thread (SQLite connections are not shared
    across threads here)."""

    def __init__(self, run: str | Path, create: bool = False) -> None:
        self.run = Path(run)
        self.path = store_path(run)
        if not self.path.is_file() and not create:
            self.db: sqlite3.Connection | None = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            if create:
                self.db.execute("BEGIN IMMEDIATE")
                for statement in _statements(TABLES):  # executescript would commit mid-transaction
                    self.db.execute(statement)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('version', '0')")
                self.db.execute("COMMIT")
            self._check_schema()
        except sqlite3.DatabaseError as e:
            raise UserError(str(self.path), f"not a readable live store ({e}); move it aside to start afresh") from None

    @property
    def exists(self) -> bool:
        return self.db is not None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> LiveStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_schema(self) -> None:
        assert self.db is not None
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None or int(row[0]) != SCHEMA:
            found = "none" if row is None else row[0]
            raise UserError(str(self.path), f"live store schema {found}; this socialfeat reads schema {SCHEMA}")

    # ------------------------------------------------------------------------------------------------ writes
    @contextlib.contextmanager
    def write(self) -> Iterator[int]:
        """One write transaction: ``BEGIN IMMEDIATE`` takes the write lock at once (a second writer waits up to
        ``BUSY_MS``), the new version is yielded, and the commit is durable when the block returns. Any error
        rolls everything back, so nothing is ever half-added."""
        assert self.db is not None
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise UserError(str(self.path), f"cannot write the live store ({e}); another process holds it") from None
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            version = int(row[0]) + 1 if row else 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (str(version),))
            yield version
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads that see one state of the store: a read transaction (in WAL mode it never blocks a writer), so a
        version and the rows up to it agree even while another process commits between two of the reads."""
        assert self.db is not None
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def put_item(self, item: LiveItem, vectors: dict[tuple[str, str], np.ndarray]) -> None:
        """Insert or replace an item and its vectors; call inside :meth:`write`."""
        assert self.db is not None
        self.db.execute("DELETE FROM vectors WHERE item_id = ?", (item.item_id,))
        self.db.execute(
            "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (
                item.item_id,
                item.sha256,
                item.image,
                item.title,
                item.text,
                item.tags,
                json.dumps(item.extra, allow_nan=False),
                to_blob(item.factors),
                item.predicted_by,
                item.added_at,
                item.version,
            ),
        )
        self.db.executemany(
            "INSERT INTO vectors VALUES (?, ?, ?, ?)",
            [(item.item_id, s, c, to_blob(v)) for (s, c), v in vectors.items()],
        )
        self.db.execute("DELETE FROM removals WHERE item_id = ?", (item.item_id,))

    def remove(self, item_id: str, version: int) -> None:
        """Take an item out of search and recommendations; call inside :meth:`write`. A live item keeps its row
        (marked removed) so the events it gathered still reach the next batch run."""
        assert self.db is not None
        self.db.execute("UPDATE items SET removed = 1, version = ? WHERE item_id = ?", (version, item_id))
        self.db.execute("INSERT OR REPLACE INTO removals VALUES (?, ?, ?)", (item_id, time.time(), version))

    def put_events(self, rows: list[tuple[str, str, str, float | None, str | None, float]], version: int) -> None:
        """Append events (user, item, event, value, time, weight); call inside :meth:`write`."""
        assert self.db is not None
        now = time.time()
        self.db.executemany(
            "INSERT INTO events (user_id, item_id, event, value, ts, weight, logged_at, version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(*r, now, version) for r in rows],
        )

    # ------------------------------------------------------------------------------------------------ reads
    def version(self) -> int:
        if self.db is None:
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0]) if row else 0

    def item(self, item_id: str) -> LiveItem | None:
        if self.db is None:
            return None
        row = self.db.execute("SELECT * FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    def items(self, since: int = 0) -> list[LiveItem]:
        """Items (removed ones too) whose last change came after version ``since``, in the order they changed."""
        if self.db is None:
            return []
        rows = self.db.execute("SELECT * FROM items WHERE version > ? ORDER BY version, item_id", (since,))
        return [_item(r) for r in rows]

    def vectors(self, source: str, column: str, since: int = 0) -> tuple[list[str], np.ndarray | None]:
        """(item ids, vectors) of one feature column of the items added after version ``since`` and not removed."""
        if self.db is None:
            return [], None
        rows = self.db.execute(
            "SELECT v.item_id, v.vector FROM vectors v JOIN items i ON v.item_id = i.item_id "
            "WHERE v.source = ? AND v.col = ? AND i.version > ? AND i.removed = 0 ORDER BY i.version, i.item_id",
            (source, column, since),
        ).fetchall()
        if not rows:
            return [], None
        return [r[0] for r in rows], np.stack([from_blob(r[1]) for r in rows])

    def vector(self, item_id: str, source: str, column: str) -> np.ndarray | None:
        if self.db is None:
            return None
        row = self.db.execute(
            "SELECT vector FROM vectors WHERE item_id = ? AND source = ? AND col = ?", (item_id, source, column)
        ).fetchone()
        return from_blob(row[0]) if row else None

    def removed(self) -> set[str]:
        """Ids taken out of the catalogue: batch items and live ones."""
        if self.db is None:
            return set()
        return {r[0] for r in self.db.execute("SELECT item_id FROM removals")}

    def events(self, since: int = 0, user: str | None = None, item: str | None = None) -> list[LiveEvent]:
        """Events logged after version ``since``, of one user or one item when given, in the order logged."""
        if self.db is None:
            return []
        sql, args = (
            "SELECT seq, user_id, item_id, event, value, ts, weight, version FROM events WHERE version > ?",
            [since],
        )
        if user is not None:
            sql, args = sql + " AND user_id = ?", [*args, user]
        if item is not None:
            sql, args = sql + " AND item_id = ?", [*args, item]
        return [LiveEvent(*r) for r in self.db.execute(sql + " ORDER BY seq", args)]

    def for_batch(self, upto: int | None = None) -> Snapshot:
        """What the next batch run absorbs, read in one transaction (so one consistent state of the store): every
        item, removed ones too (their events count), and the events up to version ``upto`` (default: the current
        version; never above it)."""
        if self.db is None:
            return Snapshot(0, [], [])
        db = self.db
        with self.snapshot():  # one state of the store: no writer waits on it
            current = self.version()
            version = current if upto is None else max(0, min(int(upto), current))
            rows = db.execute(
                "SELECT item_id, sha256, image, title, text, tags, extra, predicted_by, added_at, version, removed "
                "FROM items ORDER BY item_id"
            ).fetchall()
            items = [_item((*r[:7], b"", *r[7:])) for r in rows]  # no factors: absorbing needs none
            events = db.execute(
                "SELECT user_id, item_id, event, value, ts FROM events WHERE version <= ? ORDER BY seq", (version,)
            ).fetchall()
        return Snapshot(version, items, events)

    def counts(self) -> dict[str, int]:
        """What the store holds: added (live) items, removed items, events, and the users they came from."""
        if self.db is None:
            return {"items": 0, "removed": 0, "events": 0, "users": 0, "version": 0}
        one = self.db.execute
        return {
            "items": one("SELECT count(*) FROM items WHERE removed = 0").fetchone()[0],
            "removed": one("SELECT count(*) FROM removals").fetchone()[0],
            "events": one("SELECT count(*) FROM events").fetchone()[0],
            "users": one("SELECT count(DISTINCT user_id) FROM events").fetchone()[0],
            "version": self.version(),
        }


def _statements(script: str) -> list[str]:
    """The DDL one statement at a time, comments dropped."""
    lines = [line.split("--")[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _item(row: tuple) -> LiveItem:
    return LiveItem(
        item_id=row[0],
        sha256=row[1],
        image=row[2],
        title=row[3],
        text=row[4],
        tags=row[5],
        extra=json.loads(row[6]) if row[6] else {},
        factors=from_blob(row[7]),
        predicted_by=row[8],
        added_at=row[9],
        version=row[10],
        removed=bool(row[11]),
    )
