"""``recommend``: who would engage with a new image (its predicted item factors against every user's factors), and
what to show a known user — warm items by their true factors, cold items by the factors the model predicts from
their pixels, both scored u·v as the factorization does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from socialfeat.artifacts import read_table, reading, rerun_command
from socialfeat.config import Config
from socialfeat.data.splits import read_split
from socialfeat.errors import UserError
from socialfeat.features import content_older_than, read_features
from socialfeat.freshness import check_current
from socialfeat.index import check_column, column_of, describe, image_outputs, load_index, neighbours

if TYPE_CHECKING:
    from socialfeat.content import ContentModel

log = logging.getLogger(__name__)

FACTORS = "head_factors"  # the learned source's column holding the predicted item factors
LOG_BATCH = 1 << 20  # interactions read per batch when the log is indexed: the columns are the only full copy


@dataclass
class Audience:
    """The users a new image would reach, best first, the items most like it, and its predicted factors."""

    users: list[dict[str, Any]]
    similar: list[dict[str, Any]]
    factors: np.ndarray
    notes: list[str] = field(default_factory=list)  # which content sources scored it
    query: np.ndarray | None = None  # the image's vector in the learned index (what ``similar`` searched with)


def _matrix(table: Any, column: str) -> np.ndarray:
    col = table.column(column).combine_chunks()
    return col.flatten().to_numpy().reshape(len(table), col.type.list_size).astype(np.float32, copy=False)


def user_factors(run: str | os.PathLike[str]) -> tuple[list, np.ndarray]:
    """(user ids, factor matrix) of the run's factorization."""
    table = read_table(Path(run) / "factors" / "user_factors.parquet", columns=["user_id", "factors"], run=run)
    return table.column("user_id").to_pylist(), _matrix(table, "factors")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest scores, best first; ties keep their original order."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    cut = scores[part].min()
    candidates = np.flatnonzero(scores >= cut)  # every tie at the cut-off, so the order is well defined
    return candidates[np.argsort(-scores[candidates], kind="stable")][:k]


def audience(
    config: Config,
    run: str | os.PathLike[str],
    image: str | os.PathLike[str] | None,
    k: int | None = None,
    title: str | None = None,
    text: str | None = None,
    tags: list[str] | None = None,
) -> Audience:
    """A new item → predicted item factors v̂ → the k users with the largest u·v̂, plus the k items most like its
    image under the learned features. With only an image, v̂ is the learned model's factors head; with a title,
    text or tags too, the run's content model fuses every source given (see :mod:`socialfeat.content`)."""
    run = Path(run)
    k = k or config.index.k
    check_current(run, ["features/learned"] if image is not None else ["factors"])  # the model and its inputs
    ids, users = user_factors(run)
    hybrid = title is not None or text is not None or tags is not None
    if title is not None and not title.strip():
        raise UserError("--title", "empty title; give the item's title or leave the flag out")
    if not hybrid and image is None:
        raise UserError("--image", "give a new image (and optionally --title, --text, --tags)")
    outputs: dict[str, np.ndarray] = {}
    if image is not None:
        outputs = image_outputs(config, run, image, "learned")
    if not hybrid:
        if FACTORS not in outputs:
            raise UserError(
                str(run / "model"),
                "the trained model has no 'factors' head; train with train.targets including factors",
            )
        v = outputs[FACTORS]  # as the head predicts it, norm included: the norm carries the item's reach
        notes: list[str] = []
    else:
        v, notes = _content_factors(config, run, image, outputs, title, text, tags)
    rows = audience_of(ids, users, v, k)
    similar = []
    query = None
    if outputs:
        index = load_index(run, "learned", config.index.column, config)
        query = column_of(outputs, config.index.column)
        similar = neighbours(run, index, query, k)
    return Audience(rows, similar, v, notes, query)


def _content_factors(
    config: Config,
    run: Path,
    image: str | os.PathLike[str] | None,
    outputs: dict[str, np.ndarray],
    title: str | None,
    text: str | None,
    tags: list[str] | None,
) -> tuple[np.ndarray, list[str]]:
    from socialfeat.content import ContentModel

    model = ContentModel(run)
    older = content_older_than(run, list(model.maps))  # the rule evaluate and `recommend --user` follow too
    if older is not None:
        rerun = rerun_command(run, "content")
        raise UserError(str(run / "content"), f"made from an older {older}; rerun: {rerun}")
    features = None
    source = model.image_source
    if image is not None and source is not None:
        features = outputs["features"] if source == "learned" else image_outputs(config, run, image, source)["features"]
    score = content_score(model, features, title, text, tags)
    return score.factors, score.notes


@dataclass
class ContentScore:
    """A new item's factors from the run's content model, the sources that scored it, each one's share when the
    model is a late fusion (renormalised over those given; None for a joint ridge, whose sources do not add up
    separately) and notes on what was left out or ignored: what ``recommend`` and the explorer both show."""

    factors: np.ndarray
    sources: list[str]
    weights: dict[str, float] | None
    notes: list[str]


def content_score(
    model: ContentModel,
    image_features: np.ndarray | None,
    title: str | None = None,
    text: str | None = None,
    tags: list[str] | None = None,
) -> ContentScore:
    """Fuse the content model's sources over what the item brings: ``image_features`` are the pooled features of
    ``model.image_source``, computed by the caller (the CLI from a file, the explorer from the upload it already
    embedded). A field the model cannot use is a :class:`UserError` naming it."""
    blocks, notes = model.blocks_for(image_features, title, text, tags)
    used = [b for b in model.weights if b in blocks]
    left = [b for b in model.weights if b not in blocks]
    if left:
        notes.append(f"scored from {', '.join(used) or 'nothing'}; not given: {', '.join(left)}")
    factors = model.predict(blocks)  # no source at all: a UserError
    return ContentScore(factors, used, model.shares(used), notes)


def audience_of(user_ids: list, users: np.ndarray, v: np.ndarray, k: int) -> list[dict[str, Any]]:
    """The k users with the largest u·v̂ for predicted item factors v̂, best first."""
    if v.shape[0] != users.shape[1]:
        raise UserError("model", f"predicts {v.shape[0]} factors, the factorization has {users.shape[1]}")
    scores = users @ v
    return [
        {"rank": r, "user_id": user_ids[i], "score": float(scores[i])} for r, i in enumerate(top_k(scores, k), start=1)
    ]


def cold_factors(run: Path) -> tuple[list, np.ndarray, str]:
    """(item ids, predicted factors, what predicted them) for ranking cold items: the content model's predictions
    (``content/item_factors.parquet``: image, text, tags and numeric sources together) when the run has a content
    model at least as new as the factors and image features it was fit on, else the learned model's factors head."""
    path = run / "content" / "item_factors.parquet"
    if path.is_file():
        table = read_table(path, columns=["item_id", "factors", "sources"], run=run)
        older = content_older_than(run, pc.list_flatten(table.column("sources")).unique().to_pylist())
        if older is None:
            return table.column("item_id").to_pylist(), _matrix(table, "factors"), "content"
        log.warning(
            "%s is older than %s; cold items ranked by the factors head (rerun `socialfeat content %s`)",
            run / "content", older, run,
        )  # fmt: skip
    check_current(run, ["features/learned"])  # the head of the model trained on these factors, not an older one
    check_column(run, "learned", FACTORS, where=str(run / "model"))  # no such column: the model has no factors head
    ids, predicted = read_features(run, "learned", FACTORS)
    return ids, predicted, "image"


class Recommender:
    """What ranking items for a user needs, loaded once: user factors, every item's factor vector (warm: true,
    cold: predicted — by the content model when the run has one, else by the learned model's ``factors`` head)
    and where each of the dataset's items sits among them.

    Who saw what comes from the dataset's interactions in one of two ways. By default each call reads that one
    user's rows (a filtered read: ``recommend --user`` answers one user and never loads the log). With
    ``index_log`` the log's two integer columns are read once into a CSR (user row → item rows), so a server
    answers every user from memory: the web explorer keeps one of those, as of its start-up."""

    def __init__(self, run: str | os.PathLike[str], index_log: bool = False) -> None:
        run = Path(run)
        check_current(run, ["factors"])  # factors of an older dataset would offer items the user engaged with since
        self.run = run
        self.user_ids, self.users = user_factors(run)
        self._user_rows = {str(u): r for r, u in enumerate(self.user_ids)}
        warm = read_table(run / "factors" / "item_factors.parquet", columns=["item_id", "factors"], run=run)
        warm_ids = warm.column("item_id").to_pylist()
        feat_ids, predicted, self.cold_source = cold_factors(run)
        known = set(warm_ids)
        cold = [r for r, i in enumerate(feat_ids) if i not in known]
        self.item_ids = warm_ids + [feat_ids[r] for r in cold]
        self.vectors = np.concatenate([_matrix(warm, "factors"), predicted[cold].astype(np.float32, copy=False)])
        self.is_warm = np.arange(len(self.item_ids)) < len(warm_ids)
        self._idx_to_row, self.in_dataset = self._dataset_rows(run)
        self._log = self._index_log(run) if index_log else None

    def _dataset_rows(self, run: Path) -> tuple[np.ndarray, np.ndarray]:
        """(the row of ``item_ids`` of each dataset item_idx, -1 for none; which rows the dataset holds)."""
        items = read_table(run / "dataset" / "items.parquet", columns=["item_id", "item_idx"], run=run)
        item_row = {i: r for r, i in enumerate(self.item_ids)}
        idx = items.column("item_idx").to_numpy()
        rows = np.array([item_row.get(i, -1) for i in items.column("item_id").to_pylist()], dtype=np.int64)
        idx_to_row = np.full(int(idx.max()) + 1 if len(idx) else 0, -1, dtype=np.int64)
        idx_to_row[idx] = rows
        in_dataset = np.zeros(len(self.item_ids), dtype=bool)
        in_dataset[rows[rows >= 0]] = True
        return idx_to_row, in_dataset

    def _index_log(self, run: Path) -> tuple[np.ndarray, np.ndarray]:
        """(indptr per user row, rows of ``item_ids``): the log's user_idx and item_idx columns read in batches
        into two int32 arrays, interactions of users or items the rankings do not hold left out. Sorting is
        needed only when the log is not in user order (ingest writes it sorted by user_idx)."""
        dataset = run / "dataset"
        users = read_table(dataset / "users.parquet", columns=["user_id", "user_idx"], run=run)
        uidx = users.column("user_idx").to_numpy()
        to_user = np.full(int(uidx.max()) + 1 if len(uidx) else 0, -1, dtype=np.int32)
        to_user[uidx] = [self._user_rows.get(str(u), -1) for u in users.column("user_id").to_pylist()]
        to_item = self._idx_to_row.astype(np.int32)
        path = dataset / "interactions.parquet"
        with reading(path, "Parquet", run):  # missing, or not the file stats.json recorded: one line
            size = pq.ParquetFile(path).metadata.num_rows
        user_rows = np.empty(size, dtype=np.int32)
        item_rows = np.empty(size, dtype=np.int32)
        filled = 0
        for user_idx, item_idx in _log_batches(path, run):
            u, i = _lookup(to_user, user_idx), _lookup(to_item, item_idx)
            keep = (u >= 0) & (i >= 0)
            count = int(keep.sum())
            user_rows[filled : filled + count] = u[keep]
            item_rows[filled : filled + count] = i[keep]
            filled += count
        if filled < len(item_rows):  # rows left out: keep a compact copy, not a view of the longer array
            user_rows, item_rows = user_rows[:filled].copy(), item_rows[:filled].copy()
        if filled and np.any(user_rows[1:] < user_rows[:-1]):
            order = np.argsort(user_rows, kind="stable")
            user_rows, item_rows = user_rows[order], item_rows[order]
        indptr = np.zeros(len(self.user_ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(user_rows, minlength=len(self.user_ids)), out=indptr[1:])
        return indptr, item_rows

    def seen(self, row: int) -> np.ndarray:
        """Rows of ``item_ids`` the user at ``row`` interacted with (cold items' interactions too): from the indexed
        log, else from that user's rows of the dataset's interactions alone (a filtered read: the log is sorted by
        user)."""
        if self._log is not None:
            indptr, items = self._log
            return items[indptr[row] : indptr[row + 1]].astype(np.int64)
        dataset = self.run / "dataset"
        users = read_table(
            dataset / "users.parquet",
            columns=["user_idx"],
            run=self.run,
            filters=[("user_id", "=", self.user_ids[row])],
        )
        if users.num_rows == 0:
            return np.zeros(0, dtype=np.int64)
        uidx = users.column("user_idx")[0].as_py()
        inter = read_table(
            dataset / "interactions.parquet", columns=["item_idx"], run=self.run, filters=[("user_idx", "=", uidx)]
        )
        idx = inter.column("item_idx").to_numpy()
        rows = self._idx_to_row[idx[idx < len(self._idx_to_row)]]
        return rows[rows >= 0]

    def user_row(self, user_id: Any) -> int:
        """Row of a user id (matched as text, as the CLI and URLs give it); -1 if unknown."""
        return self._user_rows.get(str(user_id), -1)

    def rank(self, user_id: Any, k: int, include_seen: bool = False) -> list[dict[str, Any]]:
        """The k items with the largest u·v for a known user: item_id, score, warm, seen; unknown user → UserError.
        Items the dataset does not hold are never offered; those the user engaged with only with ``include_seen``."""
        row = self.user_row(user_id)
        if row < 0:
            raise UserError(str(user_id), "unknown user: not in factors/user_factors.parquet (users need interactions)")
        scores = self.vectors @ self.users[row]
        seen = np.zeros(len(self.item_ids), dtype=bool)
        seen[self.seen(row)] = True
        hidden = ~self.in_dataset if include_seen else seen | ~self.in_dataset
        scores = np.where(hidden, -np.inf, scores)
        best = [i for i in top_k(scores, k) if np.isfinite(scores[i])]
        return [
            {
                "item_id": self.item_ids[i],
                "score": float(scores[i]),
                "warm": bool(self.is_warm[i]),
                "seen": bool(seen[i]),
            }
            for i in best
        ]


def _log_batches(path: Path, run: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The log's (user_idx, item_idx) columns, ``LOG_BATCH`` rows at a time; a damaged file is one line."""
    with reading(path, "Parquet", run):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=LOG_BATCH, columns=["user_idx", "item_idx"]):
            yield batch.column("user_idx").to_numpy(), batch.column("item_idx").to_numpy()


def _lookup(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``table[keys]``, with -1 for keys outside the table."""
    out = np.full(len(keys), -1, dtype=table.dtype)
    inside = (keys >= 0) & (keys < len(table))
    out[inside] = table[keys[inside]]
    return out


def for_user(
    config: Config, run: str | os.PathLike[str], user_id: Any, k: int | None = None, include_seen: bool = False
) -> list[dict[str, Any]]:
    """Rank every item for a known user by u·v: warm items with their true factors, cold ones with predicted
    factors (the content model's when there is one, else ``head_factors`` of features/learned.parquet); items the
    user already saw are left out by default."""
    run = Path(run)
    recommender = Recommender(run)
    ranked = recommender.rank(user_id, k or config.index.k, include_seen)
    splits = read_split(run)
    rows = describe(run, [r["item_id"] for r in ranked], [r["score"] for r in ranked])
    for row, r in zip(rows, ranked, strict=True):
        row.update(
            warm=r["warm"],
            factors="true" if r["warm"] else "predicted",
            predicted_by=None if r["warm"] else recommender.cold_source,
            split=splits.get(r["item_id"]),
            seen=r["seen"],
        )
    return rows
