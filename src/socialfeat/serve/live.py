"""The explorer's view of the run's live store: what was added, removed and logged since the batch run, kept beside
the batch indexes so that every page and API answer shows it.

One :class:`~socialfeat.live.catalogue.Live` object is built on the explorer's own Recommender (no second copy of
the factors) when the run has a store or the explorer is writable; a read-only explorer opens it as soon as another
process (``socialfeat add``) creates one. Requests run in a thread pool, so one lock guards it. Every read first
syncs: a version check in the store, and when another process wrote, a replay of what changed since. Each feature
source keeps the live items' normalised vectors in a flat inner-product index (exact cosine), updated item by item;
searches merge it with the batch index, removed items left out.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from socialfeat.config import Config
from socialfeat.errors import UserError
from socialfeat.export import Inference
from socialfeat.index import ItemIndex, nearest, normalize
from socialfeat.live.catalogue import Live, Upload
from socialfeat.live.store import image_dir, store_path
from socialfeat.live.tables import NewEvent, NewItem
from socialfeat.recommend import Recommender, audience_of
from socialfeat.serve.errors import READ_ONLY, Conflict, NotFound, ReadOnly
from socialfeat.serve.search import SubstringIndex

log = logging.getLogger(__name__)


class LiveIndex:
    """The live items' vectors of one source, normalised, in an exact inner-product index: added and removed one
    item at a time (an ``IndexIDMap2`` over ``IndexFlatIP``), never rebuilt."""

    def __init__(self, dim: int) -> None:
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.item_of: dict[int, str] = {}
        self.key_of: dict[str, int] = {}
        self.next = 0

    def __len__(self) -> int:
        return len(self.key_of)

    def discard(self, item_ids: list[str]) -> None:
        keys = [self.key_of.pop(i) for i in item_ids if i in self.key_of]
        if keys:
            self.index.remove_ids(np.array(keys, dtype=np.int64))
            for key in keys:
                del self.item_of[key]

    def add(self, item_ids: list[str], vectors: np.ndarray) -> None:
        keys = np.arange(self.next, self.next + len(item_ids), dtype=np.int64)
        self.next += len(item_ids)
        self.index.add_with_ids(normalize(vectors), keys)
        for key, item in zip(keys.tolist(), item_ids, strict=True):
            self.item_of[key], self.key_of[item] = item, key

    def vector(self, item_id: str) -> np.ndarray | None:
        key = self.key_of.get(item_id)
        return None if key is None else self.index.reconstruct(key)

    def search(self, vector: np.ndarray, k: int, exclude: Any = None) -> list[tuple[str, float]]:
        n = min(k + 1, len(self))
        if n == 0:
            return []
        scores, keys = self.index.search(normalize(vector), n)
        pairs = [(self.item_of[int(key)], float(s)) for s, key in zip(scores[0], keys[0], strict=True) if key >= 0]
        return [(i, s) for i, s in pairs if i != exclude][:k]


class LiveView:
    """The run's live state as the explorer serves it; every method takes the lock."""

    def __init__(
        self,
        config: Config,
        run: Path,
        recommender: Recommender | None,
        encoders: dict[str, Inference],
        dims: dict[str, int],
        batch_rows: dict[str, int],
        no_audience: str | None = None,
    ) -> None:
        """``encoders``: the explorer's models by source (so an upload loads none); ``dims``: each source's vector
        width; ``batch_rows``: the row of each batch item id, for hiding removed ones."""
        self.config, self.run, self.rec, self.batch_rows = config, run, recommender, batch_rows
        self.writable = config.serve.writable
        self.lock = threading.RLock()
        self.live: Live | None = None
        self.version = -1  # the store version the indexes below hold
        self.indexes = {source: LiveIndex(dim) for source, dim in dims.items()}
        self.encoders = encoders
        self._items_cache: dict[str, Any] = {}  # what listings need, rebuilt when the live items change
        self._users_cache: dict[str, Any] = {}  # users first seen live, rebuilt when events come in
        if self.writable:
            if recommender is None:
                raise UserError("--writable", f"nothing can be added to this run: {no_audience}")
            from socialfeat.live.embedding import Embedder

            Embedder(config, run, self.encoders)  # the sources the explorer does not show, loaded now, not on upload
        if recommender is not None and (self.writable or store_path(run).is_file()):
            self.sync()

    # ------------------------------------------------------------------------------------------------ replay
    def sync(self) -> Live | None:
        """The live catalogue as of the store's latest version (None while the run has no store): a version check,
        and a replay of what changed when another process, or this one, wrote."""
        with self.lock:
            live = self.live
            if live is None:
                if self.rec is None or not store_path(self.run).is_file():
                    return None
                live = self.live = Live(self.config, self.run, recommender=self.rec)
            live.sync()
            if live.version != self.version:
                self._update(live)
            return live

    def _update(self, live: Live) -> None:
        """The indexes brought to ``live.version``: changed items leave them, those still shown come back with their
        vectors. Rows newer than that version (written meanwhile) wait for the next sync, as ``live`` does."""
        since = self.version
        changed = [i.item_id for i in live.store.items(since=since) if i.version <= live.version]
        shown = {i for i in changed if i in live.items}
        for source, index in self.indexes.items():
            index.discard(changed)
            ids, vectors = live.store.vectors(source, "features", since=since)
            rows = [n for n, i in enumerate(ids) if i in shown]
            if rows and vectors is not None:
                index.add([ids[n] for n in rows], vectors[rows])
        if changed or self._items_cache.get("removed") != live.removed:
            self._items_cache = {}
        self._users_cache = {}
        self.version = live.version

    def _items(self, live: Live) -> dict[str, Any]:
        """Live ids newest first, a substring index of their ids and titles, and the removed batch rows."""
        cache = self._items_cache
        if not cache:
            order = list(reversed(live.items))
            texts = (f"{i}\n{live.items[i].title or i}".lower() for i in order)
            hidden = np.zeros(len(self.batch_rows), dtype=bool)
            hidden[[self.batch_rows[i] for i in live.removed if i in self.batch_rows]] = True
            cache.update(order=order, search=SubstringIndex(texts), hidden=hidden, removed=set(live.removed))
        return cache

    # ------------------------------------------------------------------------------------------------ reads
    def hidden_rows(self) -> np.ndarray | None:
        """Which batch rows are removed (None: none are)."""
        with self.lock:
            live = self.sync()
            if live is None or not live.removed:
                return None
            return self._items(live)["hidden"]

    def find(self, query: str) -> list[str]:
        """Live ids whose id or title contains ``query`` (lowercase), newest first."""
        with self.lock:
            live = self.sync()
            if live is None or not live.items:
                return []
            cache = self._items(live)
            return [cache["order"][r] for r in cache["search"].find(query)]

    def is_removed(self, item_id: str) -> bool:
        with self.lock:
            return self.live is not None and item_id in self.live.removed

    def item(self, item_id: str) -> dict[str, Any] | None:
        """A live item as the pages show it (None for any other id)."""
        with self.lock:
            live = self.live
            found = live.items.get(item_id) if live is not None else None
            if live is None or found is None:
                return None
            tags = [t.strip() for t in (found.tags or "").split("|") if t.strip()]
            return {
                "id": item_id,
                "title": found.title or item_id,
                "tags": tags,
                "split": "live",
                "n_users": len(live.item_events.get(item_id, {})),
                "predicted_by": found.predicted_by,
                "factors": "folded" if live.is_warm_live(item_id) else "predicted",
            }

    def item_audience(self, item_id: str, k: int) -> list[dict[str, Any]] | None:
        with self.lock:
            live = self.live
            vector = live.item_vector(item_id) if live is not None else None
            return None if live is None or vector is None else live.audience(vector, k)

    def image(self, item_id: str) -> tuple[Path, str] | None:
        """(image file, its sha256) of a live item, for its thumbnail; None for any other id."""
        with self.lock:
            found = self.live.items.get(item_id) if self.live is not None else None
            return None if found is None else (image_dir(self.run) / found.image, found.sha256)

    def vector(self, item_id: str, source: str) -> np.ndarray | None:
        """A live item's (normalised) vector under a source; None when it is not a live item. A live item with
        no vector under this source is a NotFound."""
        with self.lock:
            if self.live is None or item_id not in self.live.items:
                return None
            found = self.indexes[source].vector(item_id)
            if found is None:
                raise NotFound(f"item '{item_id}' has no {source} features (live.sources left them out)")
            return found

    def nearest(
        self, source: str, index: ItemIndex, vector: np.ndarray, k: int, exclude: Any = None
    ) -> tuple[list, list[float]]:
        """The k nearest items of the batch index and the live items together, best first, removed ones left out:
        the batch index is asked for as many more as there are removed batch items."""
        with self.lock:
            live = self.sync()
            if live is None:
                pairs: list[tuple[Any, float]] = []
                removed: set[str] = set()
                skip = 0
            else:
                pairs = self.indexes[source].search(vector, k, exclude)
                removed = live.removed
                skip = int(self._items(live)["hidden"].sum()) if removed else 0
        ids, scores = nearest(index, vector, k + skip, exclude)
        pairs += [(i, s) for i, s in zip(ids, scores, strict=True) if str(i) not in removed]
        pairs.sort(key=lambda p: -p[1])
        return [i for i, _ in pairs[:k]], [s for _, s in pairs[:k]]

    def audience(self, v: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The k users predicted to engage with item factors ``v``: batch users (folded in again where they have
        live events) and users first seen live."""
        assert self.rec is not None
        with self.lock:
            live = self.sync()
            if live is None or not live.user_events:
                return audience_of(self.rec.user_ids, self.rec.users, v, k)
            return live.audience(v, k)

    def rank(self, user_id: str, k: int, include_seen: bool) -> list[dict[str, Any]]:
        """The k items for a user over batch and live items (a user first seen live too)."""
        assert self.rec is not None
        with self.lock:
            live = self.sync()
            if live is not None:
                try:
                    u = live.user_or_error(user_id)
                except UserError:
                    raise NotFound(f"unknown user '{user_id}'") from None
        if live is not None:
            batch = live.batch_scores(user_id, u)  # the product over the catalogue, outside the lock
            with self.lock:
                return live.rank(user_id, k, include_seen, batch)
        if self.rec.user_row(user_id) < 0:
            raise NotFound(f"unknown user '{user_id}'")
        return [{**r, "live": False} for r in self.rec.rank(user_id, k, include_seen)]

    def new_users(self) -> list[str]:
        """Users first seen in live events, in the order they came."""
        with self.lock:
            live = self.sync()
            if live is None or self.rec is None:
                return []
            if "users" not in self._users_cache:
                self._users_cache["users"] = [u for u in live.user_events if self.rec.user_row(u) < 0]
            return self._users_cache["users"]

    def health(self) -> dict[str, Any]:
        with self.lock:
            live = self.sync()
            counts = live.store.counts() if live is not None else {"items": 0, "removed": 0, "events": 0, "users": 0}
            shown = len(live.items) if live is not None else 0
            return {"writable": self.writable, **counts, "items": shown}

    # ------------------------------------------------------------------------------------------------ writes
    def _writer(self) -> Live:
        if not self.writable:
            raise ReadOnly(READ_ONLY)
        live = self.sync()
        if live is None:
            assert self.rec is not None  # a writable explorer has factors (checked at start-up)
            live = self.live = Live(self.config, self.run, recommender=self.rec)
        return live

    def add(self, item: NewItem, data: bytes, replace: bool, k: int) -> dict[str, Any]:
        """Add (or replace) one uploaded item; the same id with the same bytes changes nothing. The image is
        embedded between two holds of the lock, so searches, rankings and events do not wait for the model."""
        digest = hashlib.sha256(data).hexdigest()
        with self.lock:
            live = self._writer()
            unchanged = self._check_add(live, item, digest, replace)
        upload = Upload(item, data)
        embedded = None if unchanged else live.embed([upload], where="image", encoders=self.encoders)
        with self.lock:
            live = self._writer()
            self._check_add(live, item, digest, replace)  # again: another request may have taken the id meanwhile
            (added,) = live.add(
                [upload], replace=replace, where="image", k=k, encoders=self.encoders, embedded=embedded
            )
            self.sync()
            audience = added.audience or live.audience(live.items[item.item_id].factors, k)
            return {
                "item_id": added.item_id,
                "status": added.status,
                "predicted_by": added.predicted_by,
                "audience": audience,
                "version": live.version,
            }

    @staticmethod
    def _check_add(live: Live, item: NewItem, digest: str, replace: bool) -> bool:
        """A 409 for an id the batch holds or one added with other bytes (unless ``replace``); True when the
        same id holds these very bytes (nothing to embed)."""
        live.check_item_id(item.item_id, "item_id")
        if item.item_id in live.item_row:
            gone = " (removed, but a batch item's id stays taken)" if item.item_id in live.removed else ""
            raise Conflict(f"item '{item.item_id}' is in the batch catalogue already{gone}; choose another id")
        current = live.items.get(item.item_id)
        if current is not None and not replace and current.sha256 != digest:
            raise Conflict(f"item '{item.item_id}' was added with other image bytes; send replace=true to replace it")
        return current is not None and current.sha256 == digest

    def remove(self, item_id: str) -> dict[str, Any]:
        with self.lock:
            live = self._writer()
            if item_id in live.removed:
                raise NotFound(f"item '{item_id}' was removed already")
            if not live.known_item(item_id):
                raise NotFound(f"unknown item '{item_id}'")
            live.remove([item_id])
            self.sync()
            return {"removed": item_id, "version": live.version}

    def log(self, events: list[NewEvent]) -> dict[str, Any]:
        with self.lock:
            live = self._writer()
            logged = live.log(events, where="events")
            self.sync()
            return {
                "events": logged.events,
                "users": logged.users,
                "new_users": logged.new_users,
                "warm_items": logged.warm_items,
                "version": live.version,
            }
