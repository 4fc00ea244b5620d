"""``recommend``: who would engage with a new image (its predicted item factors against every user's factors), and
what to show a known user — warm items by their true factors, cold items by the factors the model predicts from
their pixels, both scored u·v as the factorization does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from socialfeat.config import Config
from socialfeat.embed import read_features
from socialfeat.errors import UserError
from socialfeat.factorize.splits import read_split
from socialfeat.index import check_column, column_of, describe, find_row, image_outputs, load_index, neighbours

log = logging.getLogger(__name__)

FACTORS = "head_factors"  # the learned source's column holding the predicted item factors


@dataclass
class Audience:
    """The users a new image would reach, best first, the items most like it, and its predicted factors."""

    users: list[dict[str, Any]]
    similar: list[dict[str, Any]]
    factors: np.ndarray


def _need(path: Path, command: str) -> Path:
    if not path.is_file():
        run = path.parent.parent
        raise UserError(str(run), f"no {path.parent.name}/{path.name}; run `socialfeat {command} {run}` first")
    return path


def _matrix(table: Any, column: str) -> np.ndarray:
    col = table.column(column).combine_chunks()
    return col.flatten().to_numpy().reshape(len(table), col.type.list_size).astype(np.float32, copy=False)


def user_factors(run: str | os.PathLike[str]) -> tuple[list, np.ndarray]:
    """(user ids, factor matrix) of the run's factorization."""
    table = pq.read_table(
        _need(Path(run) / "factors" / "user_factors.parquet", "factorize"), columns=["user_id", "factors"]
    )
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
    config: Config, run: str | os.PathLike[str], image: str | os.PathLike[str], k: int | None = None
) -> Audience:
    """A new image → the learned model's predicted item factors v̂ → the k users with the largest u·v̂, plus the
    k items most like the image under the learned features."""
    run = Path(run)
    k = k or config.index.k
    ids, users = user_factors(run)
    index = load_index(run, "learned", config.index.column, config)
    outputs = image_outputs(config, run, image, "learned")
    if FACTORS not in outputs:
        raise UserError(
            str(run / "model"), "the trained model has no 'factors' head; train with train.targets including factors"
        )
    v = outputs[FACTORS]  # as the head predicts it, norm included: the norm carries the item's reach
    if v.shape[0] != users.shape[1]:
        raise UserError(str(run / "model"), f"predicts {v.shape[0]} factors, the factorization has {users.shape[1]}")
    scores = users @ v
    best = top_k(scores, k)
    rows = [{"rank": r, "user_id": ids[i], "score": float(scores[i])} for r, i in enumerate(best, start=1)]
    return Audience(rows, neighbours(run, index, column_of(outputs, config.index.column), k), v)


def _seen(run: Path, user_id: Any) -> set:
    """Ids of the items ``user_id`` interacted with, from the ingested dataset (cold items' interactions too)."""
    dataset = run / "dataset"
    users = pq.read_table(_need(dataset / "users.parquet", "ingest --out"), columns=["user_id", "user_idx"])
    users = users.filter(pc.equal(users.column("user_id"), user_id))
    if len(users) == 0:
        return set()
    user_idx = users.column("user_idx")[0].as_py()
    inter = pq.read_table(
        _need(dataset / "interactions.parquet", "ingest --out"),
        columns=["item_idx"],
        filters=[("user_idx", "=", user_idx)],
    )
    items = pq.read_table(dataset / "items.parquet", columns=["item_id", "item_idx"])
    items = items.filter(pc.is_in(items.column("item_idx"), value_set=inter.column("item_idx").combine_chunks()))
    return set(items.column("item_id").to_pylist())


def for_user(
    config: Config, run: str | os.PathLike[str], user_id: Any, k: int | None = None, include_seen: bool = False
) -> list[dict[str, Any]]:
    """Rank every item for a known user by u·v: warm items with their true factors, cold ones with predicted
    factors (``head_factors`` of features/learned.parquet); items the user already saw are left out by default."""
    run = Path(run)
    k = k or config.index.k
    ids, users = user_factors(run)
    row = find_row(ids, user_id)
    if row < 0:
        raise UserError(str(user_id), "unknown user: not in factors/user_factors.parquet (users need interactions)")
    user, u = ids[row], users[row]
    warm = pq.read_table(_need(run / "factors" / "item_factors.parquet", "factorize"), columns=["item_id", "factors"])
    warm_ids = warm.column("item_id").to_pylist()
    check_column(run, "learned", FACTORS, where=str(run / "model"))  # no such column: the model has no factors head
    feat_ids, predicted = read_features(run, "learned", FACTORS)
    known = set(warm_ids)
    cold = [r for r, i in enumerate(feat_ids) if i not in known]
    item_ids = warm_ids + [feat_ids[r] for r in cold]
    vectors = np.concatenate([_matrix(warm, "factors"), predicted[cold].astype(np.float32, copy=False)])
    scores = vectors @ u
    is_warm = np.arange(len(item_ids)) < len(warm_ids)
    seen = _seen(run, user)
    if not include_seen and seen:
        scores = np.where([i in seen for i in item_ids], -np.inf, scores)
    best = [i for i in top_k(scores, k) if np.isfinite(scores[i])]
    splits = read_split(run)
    rows = describe(run, [item_ids[i] for i in best], [float(scores[i]) for i in best])
    for row, i in zip(rows, best, strict=True):
        row.update(
            warm=bool(is_warm[i]),
            factors="true" if is_warm[i] else "predicted",
            split=splits.get(item_ids[i]),
            seen=item_ids[i] in seen,
        )
    return rows
