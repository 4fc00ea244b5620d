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
    """The users a new image would reach, best first, the items most like it, and its predicted factors.

    Attributes:
        users: One dict per user, best first: ``rank``, ``user_id`` and ``score`` (u·v̂).
        similar: The items most like the image under the learned features, as :func:`socialfeat.index.similar`
            gives them; empty without an image.
        factors: The predicted item factors v̂.
        notes: Which content sources scored the item, and what was left out.
        query: The image's vector in the learned index; None without an image.
    """

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
    """Predict who would engage with a new item: its factors v̂, then the k users with the largest u·v̂.

    With only an image, v̂ is the learned model's factors head. With a title, text or tags too, the run's content
    model fuses every source given (see :mod:`socialfeat.content`).

    Args:
        config: The run's configuration; reads ``index`` and ``serve``.
        run: The run folder, holding ``factors/`` and ``model/``; ``content/`` for a title, text or tags.
        image: The new item's image file; None to score from title, text or tags alone.
        k: How many users and similar items; default ``config.index.k``.
        title: The item's title, read by the content model.
        text: The item's text, read by the content model.
        tags: The item's tags, read by the content model.

    Returns:
        The top users, the most similar items, the predicted factors and notes on what scored it.

    Raises:
        UserError: Nothing to score, an empty title, a model without a factors head, or a stale content model.
    """
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
    user's rows: ``recommend --user`` answers one user and never loads the log. With ``index_log`` the log is
    read once into memory, so a server answers every user fast; the web explorer keeps one, as of its start-up.

    Args:
        run: The run folder, holding ``factors/`` and ``dataset/``, and ``features/learned.parquet`` or
            ``content/`` for cold items.
        index_log: Read the whole interaction log once, for a server that answers many users.

    Attributes:
        run: The run folder.
        user_ids: The user ids, in the rows of ``users``.
        users: The user factor matrix.
        item_ids: Every rankable item: warm items, then cold ones.
        vectors: Each item's factor vector, true for warm items and predicted for cold ones.
        is_warm: Which rows of ``item_ids`` are warm.
        cold_source: What predicted the cold items' factors: ``content`` or ``image``.
        in_dataset: Which rows of ``item_ids`` the dataset holds; only those are offered.

    Raises:
        UserError: Factors older than the dataset, or no current prediction for the cold items.
    """

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
        """Which items a user interacted with, so that rankings can leave them out.

        Reads the indexed log, else only that user's rows of the dataset's interactions (the log is sorted by user).

        Args:
            row: The user's row, from :meth:`user_row`.

        Returns:
            Rows of ``item_ids``, cold items' included.
        """
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
        """The row of a user id, matched as text because the CLI and URLs give ids as text.

        Args:
            user_id: The user's id.

        Returns:
            The user's row in ``users``, or -1 for an unknown user.
        """
        return self._user_rows.get(str(user_id), -1)

    def rank(self, user_id: Any, k: int, include_seen: bool = False) -> list[dict[str, Any]]:
        """The k items with the largest u·v for a known user; items the dataset does not hold are never offered.

        Args:
            user_id: A user with factors.
            k: How many items.
            include_seen: Also offer items the user already engaged with.

        Returns:
            One dict per item, best first: ``item_id``, ``score``, ``warm`` and ``seen``.

        Raises:
            UserError: An unknown user, one without interactions in the factorization.
        """
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
    """Rank every item for a known user by u·v, cold items included, so new items reach users at once.

    Warm items use their true factors. Cold ones use predicted factors: the content model's when the run has one,
    else the learned model's ``head_factors``.

    Args:
        config: The run's configuration; reads ``index.k``.
        run: The run folder.
        user_id: A user with factors; matched as text.
        k: How many items; default ``config.index.k``.
        include_seen: Also offer items the user already engaged with.

    Returns:
        One dict per item, best first: ``rank``, ``item_id``, ``score``, ``title``, ``image``, ``warm``,
        ``factors``, ``predicted_by``, ``split`` and ``seen``.

    Raises:
        UserError: An unknown user, or factors or features older than their inputs.
    """
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
