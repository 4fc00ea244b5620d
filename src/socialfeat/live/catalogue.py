"""A run's live catalogue: the batch outputs plus what the live store added, removed and logged since.

:class:`Live` is what every reader and writer of live state goes through: ``add``, ``remove`` and ``log`` (the CLI
and ``serve --writable``), and ``similar``, ``recommend``, the explorer and ``report`` when they read. It loads the
batch side once (user and item factors, the Gram matrices of the fit) and replays the store over it. ``sync`` picks
up what another process wrote since, so a server and a cron job can share one run.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from socialfeat.artifacts import read_json, read_schema, read_table, reading, require_columns
from socialfeat.config import Config
from socialfeat.data.images import ImageRoot
from socialfeat.errors import UserError
from socialfeat.live.foldin import fold_in, gram
from socialfeat.live.store import LiveItem, LiveStore, image_dir
from socialfeat.live.tables import NewEvent, NewItem
from socialfeat.recommend import Recommender, audience_of, top_k

log = logging.getLogger(__name__)

BATCH = 32  # images per forward pass when several items are added at once
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


# (the new items, their embeddings {(source, column): (n, d)}) → (predicted factors, what predicted them) per item
Predictor = Callable[[list[NewItem], dict[tuple[str, str], np.ndarray]], list[tuple[np.ndarray, str]]]


@dataclass
class Added:
    """What ``add`` did with one item: ``added``, ``replaced`` or ``unchanged``, and who it would reach."""

    item_id: str
    status: str
    predicted_by: str
    audience: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Logged:
    """What ``log`` did: events stored, users whose vectors were folded in again, live items that turned warm."""

    events: int
    users: int
    new_users: int
    warm_items: list[str]


@dataclass
class Upload:
    """An item whose image arrives as bytes (the API) rather than as a path."""

    item: NewItem
    data: bytes


@dataclass
class Embedded:
    """Uploads' outputs and predicted factors, made by :meth:`Live.embed` before ``add`` takes a server's lock.

    Embedding is the slow part of an add (~50-100 ms a photo on one core), and it reads no live state. A server
    runs it first, so reads and events need not wait for it.
    """

    digests: list[str]
    outputs: dict[tuple[str, str], np.ndarray]
    predicted: list[tuple[np.ndarray, str]]


def live_params(run: Path) -> dict[str, Any]:
    """What fold-in must share with the fit: factorize's params and the event weights the dataset was made with."""
    metrics = read_json(run / "factors" / "metrics.json", run=run)
    params = dict(metrics.get("params", {}))
    from socialfeat.artifacts import run_config
    from socialfeat.config import load_config

    recorded = run_config(run, "factors", "")
    cfg = load_config(recorded) if recorded is not None else load_config()
    params["event_weights"] = dict(cfg.ingest.event_weights)
    params.setdefault("regularization", cfg.factorize.regularization)
    params.setdefault("confidence", cfg.factorize.confidence)
    params.setdefault("alpha", cfg.factorize.alpha)
    params.setdefault("epsilon", cfg.factorize.epsilon)
    return params


def confidence(weight: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """c = 1 + α·w (linear) or 1 + α·log(1 + w/ε) (log), in float32 as factorize computes it."""
    w = np.asarray(weight, dtype=np.float32)
    if params["confidence"] == "log":
        return (1.0 + params["alpha"] * np.log1p(w / params["epsilon"])).astype(np.float32)
    return (1.0 + params["alpha"] * w).astype(np.float32)


def absorbed_version(run: Path) -> int:
    """The store version the batch dataset already holds (``run`` absorbs the store into the next dataset)."""
    stats = run / "dataset" / "stats.json"
    if not stats.is_file():
        return 0
    return int(read_json(stats, run=run).get("live", {}).get("version", 0))


class Live:
    """The batch run with its live state replayed over it; see the module docstring."""

    def __init__(
        self, config: Config, run: str | os.PathLike[str], recommender: Recommender | None = None, create: bool = False
    ) -> None:
        self.config, self.run = config, Path(run)
        self.rec = recommender or Recommender(self.run)
        rec = self.rec
        self.params = live_params(self.run)
        self.reg = float(self.params["regularization"])
        self.n_warm = int(rec.is_warm.sum())  # warm rows come first: the items the fit had
        self.item_row = {str(i): r for r, i in enumerate(rec.item_ids)}
        self.int_items = _integer_ids(self.run / "dataset" / "items.parquet", "item_id", self.run)
        self.int_users = _integer_ids(self.run / "dataset" / "users.parquet", "user_id", self.run)
        self.store = LiveStore(self.run, create=create)
        self.absorbed = absorbed_version(self.run)
        self.version = 0
        self.items: dict[str, LiveItem] = {}
        self.removed: set[str] = set()
        self.user_events: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.item_events: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.item_counts: dict[str, int] = defaultdict(int)
        self._user_vec: dict[str, np.ndarray] = {}
        self._item_vec: dict[str, np.ndarray] = {}
        self._batch_pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._block: tuple[list[str], np.ndarray] | None = None  # (ids, a buffer with room): see live_block
        self._block_rows: dict[str, int] = {}
        self._outside: np.ndarray | None = None  # rows of items the dataset does not hold
        self._users_block: tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None = None
        self._log: BatchLog | None = None  # opened at the first event of a batch user
        self._embedders: dict[int, Any] = {}  # by the encoders' id: one Embedder (and content model) per caller
        self.sync()

    @cached_property
    def item_gram(self) -> np.ndarray:
        """YᵀY of the warm items, for users' fold-ins: computed at the first event, not by every reader (~3 s at
        the seed's 423K items on a busy 2-core machine)."""
        return gram(self.rec.vectors[: self.n_warm])

    @cached_property
    def user_gram(self) -> np.ndarray:
        """XᵀX of the batch users, for live items' fold-ins once they are warm."""
        return gram(self.rec.users)

    def warm_up(self) -> None:
        """Compute now what a process's first event would (YᵀY, the batch log's row-group index): a server calls
        this at start-up, so no request pays for it."""
        self.item_gram  # noqa: B018 - a cached property
        if self._log is None:
            self._log = BatchLog(self.run, self.rec)

    # ------------------------------------------------------------------------------------------------ replay
    def sync(self) -> bool:
        """Replay what the store gained since the last sync (another process's writes too); True if anything."""
        if not self.store.exists:
            self.store = LiveStore(self.run)  # created by another process since
            if not self.store.exists:
                return False
        # one state of the store: events another process commits meanwhile wait for the next sync (never counted twice)
        with self.store.snapshot():
            version = self.store.version()
            if version == self.version:
                return False
            changed, gone = [], False
            for item in self.store.items(since=self.version):
                # removed, absorbed into the batch since, or replaced (it moves to the end, as the store orders it)
                gone = self.items.pop(item.item_id, None) is not None or gone
                if not (item.removed or item.item_id in self.item_row):
                    self.items[item.item_id] = item
                    changed.append(item.item_id)
                self._item_vec.pop(item.item_id, None)
            self.removed = self.store.removed()
            for e in self.store.events(since=self.version):
                if e.version <= self.absorbed and self._in_batch(e.user_id, e.item_id):
                    continue  # the batch run absorbed it: its fit has this event already
                self._count(e.user_id, e.item_id, e.weight)
                changed.extend(self.user_events[e.user_id])  # live items folded in with this user's vector
        self.version = version
        self._users_block = None
        if gone:
            self._block = None
        elif self._block is not None:
            self._refresh_block(changed)
        return True

    def _in_batch(self, user: str, item: str) -> bool:
        """Whether the dataset holds the pair of an absorbed event: its user and its item passed the popularity
        filter. An event the filter dropped (a live item or a user with too few events) stays live."""
        row = self.item_row.get(item)
        return row is not None and bool(self.rec.in_dataset[row]) and self.rec.user_row(user) >= 0

    def _refresh_block(self, changed: list[str]) -> None:
        """Keep the ranking block current without a rebuild (which costs a Python call per live item): new items
        appended in the order added, the rows of replaced items and items with new events written again."""
        assert self._block is not None
        ids, buffer = self._block
        for item in dict.fromkeys(changed):
            if item not in self.items:
                continue
            row = self._block_rows.get(item)
            if row is None:
                row = self._block_rows[item] = len(ids)
                ids.append(item)
                if row == len(buffer):
                    buffer = np.concatenate([buffer, np.zeros_like(buffer)])
            buffer[row] = self.item_vector(item)
        self._block = (ids, buffer)

    def _count(self, user: str, item: str, weight: float) -> None:
        self.user_events[user][item] += weight
        self.item_events[item][user] += weight
        self.item_counts[item] += 1
        self._user_vec.pop(user, None)
        for other in self.user_events[user]:  # live items this user engaged with were folded in with their vector
            self._item_vec.pop(other, None)

    # ------------------------------------------------------------------------------------------------ vectors
    def known_item(self, item_id: str) -> bool:
        return (item_id in self.item_row or item_id in self.items) and item_id not in self.removed

    def item_vector(self, item_id: str) -> np.ndarray | None:
        """An item's factors: true for warm batch items, predicted for cold ones, and for a live item its content
        prediction until ``live.warm_after`` events have come in, then its fold-in over the users who engaged."""
        row = self.item_row.get(item_id)
        if row is not None:
            return self.rec.vectors[row]
        item = self.items.get(item_id)
        if item is None:
            return None
        if self.item_counts.get(item_id, 0) < self.config.live.warm_after:
            return item.factors
        cached = self._item_vec.get(item_id)
        if cached is None:
            users = list(self.item_events[item_id])
            weights = np.array([self.item_events[item_id][u] for u in users], dtype=np.float32)
            vectors = np.stack([self._base_user_vector(u) for u in users])
            cached = self._item_vec[item_id] = fold_in(
                vectors, self.user_gram, confidence(weights, self.params), self.reg
            )
        return cached

    def is_warm_live(self, item_id: str) -> bool:
        return item_id in self.items and self.item_counts.get(item_id, 0) >= self.config.live.warm_after

    def _base_user_vector(self, user_id: str) -> np.ndarray:
        """A user's vector for folding in an item: the fold-in of their events when they have live ones."""
        vector = self.user_vector(user_id)
        return vector if vector is not None else np.zeros(self.rec.users.shape[1], np.float32)

    def _predicted(self, item_id: str) -> np.ndarray | None:
        """The vector a user's fold-in uses for an item: true factors for warm batch items, the prediction for
        cold and live ones (never a live item's own fold-in, so no user waits on another)."""
        row = self.item_row.get(item_id)
        if row is not None:
            return self.rec.vectors[row]
        item = self.items.get(item_id)
        return item.factors if item is not None else None

    def user_vector(self, user_id: str) -> np.ndarray | None:
        """A user's factors: the batch fit's, or — once they have live events — the fold-in of their batch pairs
        (warm items, as the fit had them) plus their live events; None for a user never seen."""
        row = self.rec.user_row(user_id)
        live = self.user_events.get(user_id)
        if not live:
            return self.rec.users[row] if row >= 0 else None
        cached = self._user_vec.get(user_id)
        if cached is not None:
            return cached
        weights: dict[int, float] = {}
        extra: dict[str, float] = {}
        if row >= 0:
            rows, w = self.batch_pairs(row)
            weights = dict(zip(rows.tolist(), w.tolist(), strict=True))
        for item, weight in live.items():
            r = self.item_row.get(item)
            if r is not None:
                weights[r] = weights.get(r, 0.0) + weight
            elif item in self.items:
                extra[item] = extra.get(item, 0.0) + weight
        rows = np.fromiter(weights, dtype=np.int64, count=len(weights))
        vectors = [self.rec.vectors[rows]]
        if extra:  # np.stack of nothing raises: only live items' factors, when the user has events on them
            vectors.append(np.stack([self.items[i].factors for i in extra]))
        w = np.array(list(weights.values()) + list(extra.values()), dtype=np.float32)
        cached = fold_in(np.concatenate(vectors), self.item_gram, confidence(w, self.params), self.reg)
        self._user_vec[user_id] = cached
        return cached

    def batch_pairs(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows of warm items, weights) of one batch user's interactions: the pairs the fit had for them."""
        key = str(self.rec.user_ids[row])
        found = self._batch_pairs.get(key)
        if found is None:
            if self._log is None:
                self._log = BatchLog(self.run, self.rec)
            idx, w = self._log.pairs(row)
            inside = idx < len(self.rec._idx_to_row)
            rows = self.rec._idx_to_row[idx[inside]]
            w = w.astype(np.float32)[inside]
            keep = (rows >= 0) & (rows < self.n_warm)
            found = (rows[keep], w[keep])
            if len(self._batch_pairs) > 10_000:
                self._batch_pairs.clear()
            self._batch_pairs[key] = found
        return found

    def live_block(self) -> tuple[list[str], np.ndarray]:
        """(ids, factor vectors) of the live items, in the order added: what user rankings score besides the batch."""
        if self._block is None:
            ids = list(self.items)
            buffer = np.zeros((max(64, 2 * len(ids)), self.rec.vectors.shape[1]), np.float32)  # room to append
            for row, item in enumerate(ids):
                buffer[row] = self.item_vector(item)
            self._block, self._block_rows = (ids, buffer), {item: row for row, item in enumerate(ids)}
        ids, buffer = self._block
        return ids, buffer[: len(ids)]

    # ------------------------------------------------------------------------------------------------ answers
    def scores(self, user_id: str, include_seen: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(u·v of every batch item then every live item, with -inf where an item is hidden — removed, not in the
        dataset, or seen unless ``include_seen`` —, which entries were seen, the live ids): what ``rank`` orders,
        and what the fresh-content evaluation ranks a new item in."""
        scores, seen_rows, ids, block_scores, block_seen = self._masked(user_id, include_seen)
        seen = np.zeros(len(scores), dtype=bool)
        seen[seen_rows] = True
        return np.concatenate([scores, block_scores]), np.concatenate([seen, block_seen]), ids

    def _masked(
        self, user_id: str, include_seen: bool, batch: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
        """(batch scores, rows the user saw, live ids, live scores, which live items the user saw), hidden items at
        -inf. Masked in place, and the seen live items found from the user's own events: no pass over the
        catalogue or the live items beyond the two products. ``batch``: (u, its batch scores) from
        :meth:`batch_scores`, made outside a server's lock; the ranking is then as of that vector."""
        if batch is None:
            batch = self.batch_scores(user_id)
        u, scores = batch
        rec = self.rec
        row = rec.user_row(user_id)
        live_seen = self.user_events.get(user_id, {})
        seen_rows = np.concatenate([
            rec.seen(row) if row >= 0 else np.zeros(0, np.int64),
            np.array([r for item in live_seen if (r := self.item_row.get(item)) is not None], dtype=np.int64),
        ])  # fmt: skip
        if self._outside is None:
            self._outside = np.flatnonzero(~rec.in_dataset)  # rows no ranking offers
        scores[self._outside] = -np.inf
        if not include_seen:
            scores[seen_rows] = -np.inf
        scores[np.array([r for i in self.removed if (r := self.item_row.get(i)) is not None], dtype=np.int64)] = -np.inf
        ids, block = self.live_block()
        block_scores = block @ u
        block_seen = np.zeros(len(ids), dtype=bool)
        for item in live_seen:
            r = self._block_rows.get(item)
            if r is not None:
                block_seen[r] = True
        if not include_seen:
            block_scores[block_seen] = -np.inf
        return scores, seen_rows, ids, block_scores, block_seen

    def user_or_error(self, user_id: str) -> np.ndarray:
        """The user's vector (folded in where they have live events); a UserError for an unknown user."""
        u = self.user_vector(user_id)
        if u is None:
            raise UserError(str(user_id), "unknown user: no factors and no live events")
        return u

    def batch_scores(self, user_id: str, u: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(u, u·v of every batch item): the one product over the whole catalogue. The batch factors never
        change, so given ``u`` this reads no live state and a server runs it outside its lock."""
        u = self.user_or_error(user_id) if u is None else u
        return u, self.rec.vectors @ u

    def rank(
        self, user_id: str, k: int, include_seen: bool = False, batch: tuple[np.ndarray, np.ndarray] | None = None
    ) -> list[dict[str, Any]]:
        """The k items with the largest u·v for a user (batch or live), batch and live items together; removed
        items never, seen ones only with ``include_seen``. ``batch``: see :meth:`_masked`."""
        rec = self.rec
        scores, seen_rows, ids, block_scores, block_seen = self._masked(user_id, include_seen, batch)
        seen = set(seen_rows.tolist())
        n = len(rec.item_ids)
        # the k best of each part, merged as one ranking of both would order them: ties keep batch before live
        found = [*top_k(scores, k).tolist(), *(n + top_k(block_scores, k)).tolist()]
        score = {i: float(scores[i] if i < n else block_scores[i - n]) for i in found}
        out = []
        for i in sorted(found, key=lambda i: (-score[i], i))[:k]:
            if not np.isfinite(score[i]):
                continue
            if i < n:
                out.append({"item_id": rec.item_ids[i], "score": score[i], "warm": bool(rec.is_warm[i]),
                            "seen": i in seen, "live": False})  # fmt: skip
            else:
                item = ids[i - n]
                out.append({"item_id": item, "score": score[i], "warm": self.is_warm_live(item),
                            "seen": bool(block_seen[i - n]), "live": True})  # fmt: skip
        return out

    def audience(self, v: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The k users with the largest u·v̂: batch users (folded in again where they have live events) and users
        first seen live."""
        rec = self.rec
        if not self.user_events:
            return audience_of(rec.user_ids, rec.users, v, k)
        rows, known, new_ids, new = self.live_users()
        scores = rec.users @ v
        scores[rows] = known @ v
        if not new_ids:
            return _ranked_users(rec.user_ids, scores, k)
        return _ranked_users(list(rec.user_ids) + new_ids, np.concatenate([scores, new @ v]), k)

    def live_users(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """(rows of batch users with live events, their folded-in vectors, ids of users first seen live, theirs):
        stacked once per store version, so scoring every user for an added item is two products, not a loop."""
        if self._users_block is None:
            rows, known, new_ids, new = [], [], [], []
            for user in self.user_events:
                vector = self.user_vector(user)
                assert vector is not None
                row = self.rec.user_row(user)
                if row >= 0:
                    rows.append(row)
                    known.append(vector)
                else:
                    new_ids.append(user)
                    new.append(vector)
            width = self.rec.users.shape[1]
            self._users_block = (
                np.array(rows, dtype=np.int64),
                np.stack(known) if known else np.zeros((0, width), np.float32),
                new_ids,
                np.stack(new) if new else np.zeros((0, width), np.float32),
            )
        return self._users_block

    def describe(self, item_id: str) -> dict[str, Any] | None:
        """Title and image path of a live item (None for others)."""
        item = self.items.get(item_id)
        if item is None:
            return None
        return {"title": item.title, "image": str(image_dir(self.run) / item.image)}

    # ------------------------------------------------------------------------------------------------ writes
    def check_item_id(self, item_id: str, where: str) -> None:
        if self.int_items and not _is_int(item_id):
            raise UserError(where, f"item id '{item_id}': this run's item ids are integers")

    def check_user_id(self, user_id: str, where: str) -> None:
        if self.int_users and not _is_int(user_id):
            raise UserError(where, f"user id '{user_id}': this run's user ids are integers")

    def remove(self, ids: list[str]) -> list[str]:
        """Take items out of search and recommendations; an unknown or already removed id is a UserError, and
        then nothing is removed."""
        self.sync()
        for item_id in ids:
            if item_id in self.removed:
                raise UserError(item_id, "already removed")
            if not self.known_item(item_id):
                raise UserError(item_id, "unknown item: not in the batch catalogue or the live store")
        with self._writer().write() as version:
            for item_id in dict.fromkeys(ids):
                self.store.remove(item_id, version)
        self.sync()
        return list(dict.fromkeys(ids))

    def log(self, events: list[NewEvent], where: str = "events") -> Logged:
        """Store events (all or none) and fold in the users and live items they touch."""
        self.sync()
        weights = self.params["event_weights"]
        rows = []
        for e in events:
            self.check_user_id(e.user_id, where)
            self.check_item_id(e.item_id, where)
            if not self.known_item(e.item_id):
                why = "removed" if e.item_id in self.removed else "unknown item: add it first"
                raise UserError(where, f"row {e.row}: item '{e.item_id}': {why}")
            weight = float(weights.get(e.event, 1.0)) * (1.0 if e.value is None else e.value)
            if not np.isfinite(np.float32(weight)):
                raise UserError(where, f"row {e.row}: the event's weight {weight:g} is not a float32 number")
            rows.append((e.user_id, e.item_id, e.event, e.value, e.ts, weight))
        before = {e.user_id for e in events if self.rec.user_row(e.user_id) < 0 and e.user_id not in self.user_events}
        with self._writer().write() as version:
            self.store.put_events(rows, version)
        self.sync()
        users = {e.user_id for e in events}
        for user in users:
            self.user_vector(user)  # folded in now, so the next request finds it ready
        warm = sorted({e.item_id for e in events if self.is_warm_live(e.item_id)})
        return Logged(len(rows), len(users), len(before), warm)

    def _embedder(self, encoders: dict[str, Any] | None) -> Any:
        """One Embedder per encoders dict: its content model and sessions are loaded once, not per add."""
        from socialfeat.live.embedding import Embedder

        key = id(encoders) if encoders is not None else 0
        found = self._embedders.get(key)
        if found is None or (encoders is not None and found.encoders is not encoders):
            found = self._embedders[key] = Embedder(self.config, self.run, encoders)
        return found

    def _embed_plan(
        self,
        plan: list[tuple[NewItem, bytes, str]],
        where: str,
        encoders: dict[str, Any] | None,
        predict: Predictor | None,
    ) -> Embedded:
        embedder = self._embedder(encoders)
        outputs = embedder.embed([data for _, data, _ in plan], where, [it.row for it, _, _ in plan])
        predicted = embedder.factors(plan, outputs) if predict is None else predict([it for it, _, _ in plan], outputs)
        return Embedded([d for _, _, d in plan], outputs, predicted)

    def embed(
        self,
        items: list[NewItem] | list[Upload],
        image_root: Path | None = None,
        where: str = "items",
        encoders: dict[str, Any] | None = None,
    ) -> Embedded:
        """Every item's outputs and predicted factors, read from the run's models only: no live state, so a
        server calls it outside its lock and passes the result to ``add``. A bad image is the same UserError."""
        images = _image_bytes(items, image_root, self.config, where)
        plan = [
            (getattr(i, "item", i), data, hashlib.sha256(data).hexdigest())
            for i, data in zip(items, images, strict=True)
        ]
        return self._embed_plan(plan, where, encoders, None)

    def _writer(self) -> LiveStore:
        if not self.store.exists:
            self.store = LiveStore(self.run, create=True)
        return self.store

    def add(
        self,
        items: list[NewItem] | list[Upload],
        image_root: Path | None = None,
        replace: bool = False,
        where: str = "items",
        k: int = 10,
        encoders: dict[str, Any] | None = None,
        predict: Predictor | None = None,
        embedded: Embedded | None = None,
    ) -> list[Added]:
        """Add items (all or none): decode and check every image, embed them in batches under every source the
        run has features for, predict their factors as ``recommend --image`` does, store them in one transaction.
        The same id with the same image bytes is a no-op; other bytes need ``replace``. ``predict`` replaces the
        run's rule for the factors (the fresh-content evaluation adds items with other predictors). ``embedded``:
        what :meth:`embed` made for these ``items`` beforehand (used where the bytes still match)."""
        self.sync()
        images = _image_bytes(items, image_root, self.config, where)
        before = set(self.items)  # what ``replaced`` means: the id held another image until now
        plan: list[tuple[NewItem, bytes, str]] = []
        chosen: list[int] = []  # each planned item's place in ``items``, to pick its rows of ``embedded``
        results: dict[str, Added] = {}
        for n, (item, data) in enumerate(zip([getattr(i, "item", i) for i in items], images, strict=True)):
            self.check_item_id(item.item_id, where)
            digest = hashlib.sha256(data).hexdigest()
            if item.item_id in self.item_row:
                raise UserError(where, f"row {item.row}: item '{item.item_id}' is in the batch catalogue already")
            current = self.items.get(item.item_id)
            if current is not None and current.sha256 == digest:
                results[item.item_id] = Added(item.item_id, "unchanged", current.predicted_by)
                continue
            if current is not None and not replace:
                raise UserError(
                    where, f"row {item.row}: item '{item.item_id}' was added with other image bytes; give --replace"
                )
            plan.append((item, data, digest))
            chosen.append(n)
        if embedded is not None and [d for _, _, d in plan] == [embedded.digests[n] for n in chosen]:
            outputs = {key: value[chosen] for key, value in embedded.outputs.items()}
            predicted = [embedded.predicted[n] for n in chosen]
        else:
            found = self._embed_plan(plan, where, encoders, predict)
            outputs, predicted = found.outputs, found.predicted
        stored: list[tuple[LiveItem, dict[tuple[str, str], np.ndarray]]] = []
        folder = image_dir(self.run)
        folder.mkdir(parents=True, exist_ok=True)
        for n, (item, data, digest) in enumerate(plan):
            name = digest + _suffix(data)
            _write_image(folder / name, data)  # before the commit: an acknowledged item always has its image
            vectors = {key: out[n] for key, out in outputs.items()}
            factors, by = predicted[n]
            live = LiveItem(item.item_id, digest, name, item.title, item.text, item.tags, item.extra, factors, by,
                            time.time(), 0, False)  # fmt: skip
            stored.append((live, vectors))
        if stored:
            with self._writer().write() as version:
                for live, vectors in stored:
                    live.version = version
                    self.store.put_item(live, vectors)
            self.sync()
        for live, _ in stored:
            status = "replaced" if live.item_id in before else "added"
            results[live.item_id] = Added(live.item_id, status, live.predicted_by, self.audience(live.factors, k))
        order = [getattr(i, "item", i).item_id for i in items]
        return [results[i] for i in dict.fromkeys(order)]


class BatchLog:
    """Batch users' pairs from the dataset's log, for fold-in: each user's rows come from the row groups whose
    user_idx range holds them (ingest sorts the log by user, so that is one or two groups). The file is opened and
    checked once, and the user ids mapped to user_idx once: a user's first event costs one row-group read, not two
    filtered reads that open, check and scan whole files."""

    def __init__(self, run: Path, rec: Recommender) -> None:
        import pyarrow.parquet as pq

        dataset = run / "dataset"
        users = read_table(dataset / "users.parquet", columns=["user_id", "user_idx"], run=run)
        self.user_idx = np.full(len(rec.user_ids), -1, dtype=np.int64)  # by the Recommender's user row
        for user, idx in zip(users.column("user_id").to_pylist(), users.column("user_idx").to_pylist(), strict=True):
            r = rec.user_row(user)
            if r >= 0:
                self.user_idx[r] = idx
        path = dataset / "interactions.parquet"
        with reading(path, "Parquet", run):
            require_columns(path, ["user_idx", "item_idx", "weight"], run)
            self.file = pq.ParquetFile(path)
        meta = self.file.metadata
        col = self.file.schema_arrow.get_field_index("user_idx")
        stats = [meta.row_group(g).column(col).statistics for g in range(meta.num_row_groups)]
        known = all(st is not None and st.has_min_max for st in stats)
        self.low = np.array([st.min for st in stats], dtype=np.int64) if known else None
        self.high = np.array([st.max for st in stats], dtype=np.int64) if known else None

    def pairs(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(item_idx, weight) of the user at the Recommender's ``row``; empty for a user the dataset lacks."""
        uidx = int(self.user_idx[row])
        if uidx < 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.low is None or self.high is None:  # no statistics: every group, filtered
            groups = list(range(self.file.metadata.num_row_groups))
        else:
            groups = np.flatnonzero((self.low <= uidx) & (self.high >= uidx)).tolist()
        if not groups:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        table = self.file.read_row_groups(groups, columns=["user_idx", "item_idx", "weight"])
        mine = table.column("user_idx").to_numpy() == uidx
        return table.column("item_idx").to_numpy()[mine].astype(np.int64), table.column("weight").to_numpy()[mine]


def _ranked_users(user_ids: list, scores: np.ndarray, k: int) -> list[dict[str, Any]]:
    return [{"rank": r, "user_id": user_ids[i], "score": float(scores[i])} for r, i in enumerate(top_k(scores, k), 1)]


def _integer_ids(path: Path, column: str, run: Path) -> bool:
    return pa.types.is_integer(read_schema(path, run=run).field(column).type)


def _is_int(text: str) -> bool:
    try:
        return str(int(text)) == text and -(2**63) <= int(text) < 2**63
    except ValueError:
        return False


def _image_bytes(items: list[NewItem] | list[Upload], root: Path | None, config: Config, where: str) -> list[bytes]:
    """Each item's image bytes: an upload's own, or the file under the image root (confined as ingest confines)."""
    out = []
    resolver = ImageRoot(root if root is not None else Path.cwd(), config.ingest.allow_absolute_images)
    for entry in items:
        if isinstance(entry, Upload):
            out.append(entry.data)
            continue
        path = resolver.resolve(entry.image)
        if path is None:
            raise UserError(
                where, f"row {entry.row}: image '{entry.image}' leads outside the image root '{resolver.root}'"
            )
        try:
            out.append(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            raise UserError(
                where, f"row {entry.row}: image '{entry.image}' not found under '{resolver.root}'"
            ) from None
        except IsADirectoryError:
            raise UserError(where, f"row {entry.row}: image '{entry.image}' is a folder") from None
        except ValueError:  # a NUL in the path (no file has such a name): the OS call refuses it
            raise UserError(where, f"row {entry.row}: image path {entry.image!r} holds a NUL character") from None
        except OSError as e:
            raise UserError(where, f"row {entry.row}: image '{entry.image}': {e.strerror or e}") from None
    return out


def _suffix(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return FORMATS.get(im.format or "", ".img")
    except Exception:  # noqa: BLE001 - decoded already; a name is all this picks
        return ".img"


def _write_image(path: Path, data: bytes) -> None:
    """Write once, durably: content addressed, so an existing file already holds these bytes."""
    if path.is_file() and path.stat().st_size == len(data):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
