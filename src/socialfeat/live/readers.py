"""``similar`` and ``recommend`` over the live catalogue: the batch answers with the store replayed over them.

Without a store these are the batch functions, unchanged. With one, removed items never appear, added items are
searched exactly beside the batch index (which stays as ``index`` built it), and users with live events are
scored with their folded-in vectors. The store is read afresh on every call, so the answer is never older than the
last acknowledged write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from socialfeat.config import Config
from socialfeat.data.splits import read_split
from socialfeat.errors import UserError
from socialfeat.freshness import check_current, feature_product
from socialfeat.index import ItemIndex, describe, find_row, item_info, load_index, nearest, neighbours, normalize
from socialfeat.index import similar as batch_similar
from socialfeat.live.catalogue import Live, absorbed_version
from socialfeat.live.store import LiveStore, image_dir, store_path
from socialfeat.recommend import Audience, Recommender, top_k
from socialfeat.recommend import audience as batch_audience
from socialfeat.recommend import for_user as batch_for_user


def has_live(run: str | os.PathLike[str]) -> bool:
    return store_path(run).is_file()


def merged_nearest(
    index: ItemIndex,
    live_ids: list[str],
    live_vectors: np.ndarray | None,
    removed: set[str],
    vector: np.ndarray,
    k: int,
    exclude: Any = None,
) -> tuple[list, list[float]]:
    """The k nearest of the batch index (removed items left out: it is asked for as many more) and of the live
    items (exact cosine), merged by score, best first."""
    skip = len(removed)
    ids, scores = nearest(index, vector, k + skip, exclude)
    pairs = [(i, s) for i, s in zip(ids, scores, strict=True) if str(i) not in removed]
    if live_vectors is not None and len(live_ids):
        q = normalize(np.asarray(vector, np.float32)[None])[0]
        cos = normalize(live_vectors) @ q
        if exclude is not None and str(exclude) in live_ids:  # list scans in C: no Python loop per live item
            cos[live_ids.index(str(exclude))] = -np.inf
        pairs += [(live_ids[n], float(cos[n])) for n in top_k(cos, k) if np.isfinite(cos[n])]
    pairs.sort(key=lambda p: -p[1])
    pairs = pairs[:k]
    return [i for i, _ in pairs], [s for _, s in pairs]


def describe_live(
    run: Path, store: LiveStore, ids: list, scores: list[float], live: set[str] | None = None
) -> list[dict[str, Any]]:
    """Result rows (rank, item_id, score, title, image) for batch and live items together; ``live`` names the live
    ones (default: every id the store holds, which after a rerun includes items the batch absorbed)."""
    is_live = (lambda i: str(i) in live) if live is not None else (lambda i: store.item(str(i)) is not None)
    info = item_info(run, [i for i in ids if not is_live(i)])
    rows = []
    for r, (i, s) in enumerate(zip(ids, scores, strict=True), start=1):
        item = store.item(str(i)) if i not in info and is_live(i) else None
        found = info.get(i) or (
            {"title": item.title, "image": str(image_dir(run) / item.image)} if item else {"title": None, "image": None}
        )
        rows.append({"rank": r, "item_id": i, "score": s, **found, "live": item is not None})
    return rows


def similar(
    config: Config,
    run: str | os.PathLike[str],
    item_id: Any = None,
    image: str | os.PathLike[str] | None = None,
    source: str | None = None,
    k: int | None = None,
    column: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`socialfeat.index.similar` over the live catalogue: an added item can be the query and the answer."""
    run = Path(run)
    if not has_live(run):
        return batch_similar(config, run, item_id=item_id, image=image, source=source, k=k, column=column)
    if (item_id is None) == (image is None):
        raise UserError("ITEM_ID/--image", "give exactly one: an item id or --image PATH")
    source = source or config.index.source
    column = column or config.index.column
    k = k or config.index.k
    if image is not None:
        from socialfeat.index import column_of, image_outputs

        check_current(run, [feature_product(source)])
        index = load_index(run, source, column, config)
        query = column_of(image_outputs(config, run, image, source), column)
        return near_vector(run, index, query, k, source, column)
    with LiveStore(run) as store:
        removed = store.removed()
        live_ids, live_vectors = store.vectors(source, column)
        text = str(item_id)
        if text in removed:
            raise UserError(text, "removed from the catalogue (socialfeat remove)")
        check_current(run, [feature_product(source)])
        index = load_index(run, source, column, config)
        live_ids, live_vectors = not_absorbed(run, index, live_ids, live_vectors)
        if text in live_ids:
            query = live_vectors[live_ids.index(text)]  # type: ignore[index]
            exclude: Any = text
        else:
            row = find_row(index.ids, item_id)
            if row < 0:
                raise UserError(text, f"unknown item: not in features/{source}.parquet of {run} or its live store")
            exclude = index.ids[row]
            query = index.index.reconstruct(row) if _exact(index) else _stored(run, source, column, exclude)
        found = merged_nearest(index, live_ids, live_vectors, removed, query, k, exclude)
        return describe_live(run, store, *found, set(live_ids))


def near_vector(
    run: str | os.PathLike[str], index: ItemIndex, vector: np.ndarray, k: int, source: str, column: str
) -> list[dict[str, Any]]:
    """The k items nearest to a query vector (a new image the caller embedded), live items included.

    Args:
        run: The run folder.
        index: The opened batch index of the source and column the vector belongs to.
        vector: The query, in the index's space.
        k: How many items to return.
        source: The feature source of the index (live items are stored per source).
        column: The feature column of the index.

    Returns:
        Result rows (rank, item_id, score, title, image, live), best first.
    """
    run = Path(run)
    if not has_live(run):
        return neighbours(run, index, vector, k)
    with LiveStore(run) as store:
        live_ids, live_vectors = not_absorbed(run, index, *store.vectors(source, column))
        found = merged_nearest(index, live_ids, live_vectors, store.removed(), vector, k)
        return describe_live(run, store, *found, set(live_ids))


def not_absorbed(
    run: Path, index: ItemIndex, ids: list[str], vectors: np.ndarray | None
) -> tuple[list[str], np.ndarray | None]:
    """The live items the batch has not absorbed: after ``run`` absorbed the store, an added item may be in the
    batch index too, and it must be found once."""
    if not ids or absorbed_version(run) == 0:
        return ids, vectors
    batch = {str(i) for i in index.ids}
    keep = [n for n, i in enumerate(ids) if i not in batch]
    if len(keep) == len(ids):
        return ids, vectors
    return [ids[n] for n in keep], (vectors[keep] if keep and vectors is not None else None)


def _exact(index: ItemIndex) -> bool:
    import faiss

    return isinstance(index.index, faiss.IndexFlat)


def _stored(run: Path, source: str, column: str, item_id: Any) -> np.ndarray:
    from socialfeat.index import _item_vector

    return _item_vector(run, source, column, item_id)


def for_user(
    config: Config, run: str | os.PathLike[str], user_id: Any, k: int | None = None, include_seen: bool = False
) -> list[dict[str, Any]]:
    """:func:`socialfeat.recommend.for_user` over the live catalogue: the user's folded-in vector (or a new
    user's), added items beside the batch ones, removed items never."""
    run = Path(run)
    if not has_live(run):
        return batch_for_user(config, run, user_id, k, include_seen)
    live = Live(config, run)
    ranked = live.rank(str(user_id), k or config.index.k, include_seen)
    splits = read_split(run)
    rows = describe_live(
        run,
        live.store,
        [r["item_id"] for r in ranked],
        [r["score"] for r in ranked],
        {r["item_id"] for r in ranked if r["live"]},
    )
    for row, r in zip(rows, ranked, strict=True):
        cold_by = "live" if r["live"] else live.rec.cold_source
        row.update(
            warm=r["warm"],
            factors="true" if r["warm"] and not r["live"] else ("folded" if r["warm"] else "predicted"),
            predicted_by=None if r["warm"] else cold_by,
            split="live" if r["live"] else splits.get(r["item_id"]),
            seen=r["seen"],
        )
    return rows


def audience(
    config: Config,
    run: str | os.PathLike[str],
    image: str | os.PathLike[str] | None,
    k: int | None = None,
    title: str | None = None,
    text: str | None = None,
    tags: list[str] | None = None,
) -> Audience:
    """:func:`socialfeat.recommend.audience` over the live catalogue: users first seen live can be in the
    audience, and the similar items include added ones."""
    run = Path(run)
    result = batch_audience(config, run, image, k, title, text, tags)
    if not has_live(run):
        return result
    k = k or config.index.k
    live = Live(config, run, Recommender(run))
    result.users = live.audience(result.factors, k)
    if result.query is not None:
        index = load_index(run, "learned", config.index.column, config)
        ids, vectors = live.store.vectors("learned", config.index.column)
        keep = [n for n, i in enumerate(ids) if i in live.items]  # absorbed by a rerun: the batch index has them
        ids, vectors = [ids[n] for n in keep], (vectors[keep] if keep and vectors is not None else None)
        found = merged_nearest(index, ids, vectors, live.removed, result.query, k)
        result.similar = describe_live(run, live.store, *found, set(ids))
    return result


def counts(run: str | os.PathLike[str]) -> dict[str, int]:
    """What a run's live store holds (zeros without one): what ``report`` shows."""
    with LiveStore(run) as store:
        return store.counts()


__all__ = ["audience", "counts", "describe", "for_user", "has_live", "merged_nearest", "near_vector", "similar"]
