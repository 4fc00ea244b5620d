"""Held-out ranking metrics for implicit feedback: top-k lists, recall/precision/nDCG/MAP, AUC, coverage.

Every user has training items (known, never ranked, never negatives) and held-out test items (relevant).
All functions are pure and vectorised over a batch of users; :func:`evaluate_ranking` streams users in
batches so that memory stays about ``batch_size × n_items`` floats. NaN scores count as ``-inf``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""``score_fn(user_rows)``: a fresh dense rows × items array of scores; :func:`evaluate_ranking` may overwrite it."""


def _as_float_scores(scores: np.ndarray, reuse: bool = False) -> np.ndarray:
    """A 2-D float copy of ``scores`` with NaN replaced by -inf, so that NaN always ranks last. With ``reuse``, a
    float array that owns its data (a score function's fresh result) is changed in place instead of copied: at
    ~100M scores per batch the copy had been the one part of the ranking whose cost per score grew with the
    catalogue."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users × items), got shape {scores.shape}")
    floating = np.issubdtype(scores.dtype, np.floating)
    own = reuse and floating and scores.flags.owndata and scores.flags.writeable and scores.flags.c_contiguous
    work = scores if own else scores.astype(scores.dtype if floating else np.float64, copy=True)
    np.copyto(work, -np.inf, where=np.isnan(work))
    return work


def _row_mask(matrix: sp.spmatrix | sp.sparray, rows: np.ndarray, n_cols: int) -> np.ndarray:
    """Dense bool mask (len(rows) × n_cols): True where row rows[j] of ``matrix`` has a stored entry."""
    csr = sp.csr_matrix(matrix)
    if csr.shape[1] != n_cols:
        raise ValueError(f"sparse matrix has {csr.shape[1]} columns, scores have {n_cols}")
    sub = csr[np.asarray(rows, dtype=np.int64)]
    mask = np.zeros((len(rows), n_cols), dtype=bool)
    mask[np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), sub.indices] = True
    return mask


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, NaN where den == 0 (a user with nothing relevant has no recall)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _default_rows(rows: np.ndarray | None, n: int) -> np.ndarray:
    """``rows`` as an int array of length n (default 0..n-1)."""
    if rows is None:
        return np.arange(n)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape != (n,):
        raise ValueError(f"rows must have length {n}, got shape {rows.shape}")
    return rows


def top_k(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, rows: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the k highest-scoring items per row, best first, never an item of row rows[j] of ``exclude``.

    Ties go to the lower item index (also at the k-th place); rows with fewer than k candidates are padded with -1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    work = _as_float_scores(scores)
    n, n_items = work.shape
    valid = np.ones_like(work, dtype=bool)
    if exclude is not None:
        valid &= ~_row_mask(exclude, _default_rows(rows, n), n_items)
    out = np.full((n, k), -1, dtype=np.int64)
    if n == 0 or n_items == 0:
        return out
    work[~valid] = -np.inf
    return _top_k_of(work, valid, k)


def _top_k_of(work: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """top_k on prepared scores: ``work`` holds -inf where ``valid`` is False (modified: nothing else reads it)."""
    n, n_items = work.shape
    out = np.full((n, k), -1, dtype=np.int64)
    if n == 0 or n_items == 0:
        return out
    kk = min(k, n_items)
    # t = the kk-th largest score per row; take everything above t, then items equal to t by index
    t = np.partition(work, n_items - kk, axis=1)[:, n_items - kk][:, None]
    above = work > t
    at = (work == t) & valid
    need = kk - above.sum(axis=1)
    crowded = np.flatnonzero(at.sum(axis=1) > need)  # ties straddle the k-th place: keep only the lowest indices
    if len(crowded):
        # the lowest-indexed `need` of each crowded row's ties, by position among its tied columns (nonzero is
        # row-major); a cumulative sum over the whole row cost 8 bytes per item and dominated popularity's ranking
        r, c = np.nonzero(at[crowded])
        starts = np.searchsorted(r, np.arange(len(crowded)))
        drop = (np.arange(len(r)) - starts[r]) >= need[crowded][r]
        at[crowded[r[drop]], c[drop]] = False
    r, c = np.nonzero(above | at)
    order = np.lexsort((c, -work[r, c], r))  # by row, then score descending, then index ascending
    r, c = r[order], c[order]
    starts = np.searchsorted(r, np.arange(n))
    out[r, np.arange(len(r)) - starts[r]] = c
    return out


def hits(ranked: np.ndarray, relevant: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Bool (n × k): whether ranked[j, r] is stored in row rows[j] of ``relevant``; padding (-1) never hits."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D, got shape {ranked.shape}")
    return _hits_of(ranked, _row_mask(relevant, _default_rows(rows, ranked.shape[0]), relevant.shape[1]))


def _hits_of(ranked: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """hits on a prepared dense mask of the relevant items, one row per ranked row."""
    present = ranked >= 0
    return np.take_along_axis(relevant, np.where(present, ranked, 0), axis=1) & present


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Per row: fraction of the relevant items that made the list (NaN where nothing is relevant)."""
    return _safe_div(np.asarray(hits).sum(axis=1), n_relevant)


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Per row: fraction of the k list slots that hold a relevant item (padding counts as a miss)."""
    return np.asarray(hits).sum(axis=1) / float(k)


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 2) for ranks 0..k-1: the DCG weight of each list position."""
    return 1.0 / np.log2(np.arange(k) + 2.0)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Per row: binary-gain DCG of the list over the ideal DCG of min(n_relevant, k) hits (NaN if none relevant)."""
    hits = np.asarray(hits, dtype=np.float64)
    k = hits.shape[1]
    disc = _discounts(k)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(np.asarray(n_relevant), k)]
    return _safe_div(hits @ disc, ideal)


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Per row: Σ_r P@(r+1)·hit_r / min(n_relevant, k), rewarding relevant items early (NaN if none relevant)."""
    hits = np.asarray(hits, dtype=np.float64)
    k = hits.shape[1]
    prec = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return _safe_div((prec * hits).sum(axis=1), np.minimum(np.asarray(n_relevant), k))


def auc(scores: np.ndarray, relevant: sp.csr_matrix, exclude: sp.csr_matrix | None, rows: np.ndarray) -> np.ndarray:
    """Per row: P(relevant score > negative score) + 0.5·P(tie), negatives = items neither relevant nor excluded.

    NaN where a row has no relevant or no negative item. Relevant items count as positives even when excluded.
    """
    work = _as_float_scores(scores)
    n, n_items = work.shape
    rows = _default_rows(rows, n)
    pos = _row_mask(relevant, rows, n_items)
    out_of_play = None if exclude is None else _row_mask(exclude, rows, n_items) & ~pos
    return _auc_of(work, pos, out_of_play)


# Up to this many positives a row's AUC is counted in linear passes over the row (one per positive); more, and the
# row's negatives are sorted once and every positive binary-searched.
_COUNT_POSITIVES = 16


def _auc_of(work: np.ndarray, pos: np.ndarray, out_of_play: np.ndarray | None) -> np.ndarray:
    """auc on prepared scores (no NaN; not modified): ``pos`` the positives, ``out_of_play``
    the excluded items that are not positives (neither positive nor negative).

    From the positives' ranks (Mann–Whitney U): with the items out of play set to NaN, which compares neither below
    nor equal, a positive scored p ranks #(< p) + (#(= p) + 1)/2 among positives and negatives, and U = Σ ranks −
    n_pos(n_pos + 1)/2 counts exactly the (positive, negative) pairs won plus half the ties. Rows are taken most
    positives first, so pass j reads only the rows that have a j-th positive: cost ∝ positives × items."""
    n, n_items = work.shape
    n_pos = pos.sum(axis=1)
    n_neg = n_items - n_pos - (0 if out_of_play is None else out_of_play.sum(axis=1))
    out = np.full(n, np.nan)
    ok = np.flatnonzero((n_pos > 0) & (n_neg > 0))
    few = ok[n_pos[ok] <= _COUNT_POSITIVES]
    if len(few):
        few = few[np.argsort(-n_pos[few], kind="stable")]
        w = work[few]  # one copy, rows in descending order of positives; the items out of play become NaN
        if out_of_play is not None:
            w[out_of_play[few]] = np.nan
        r, c = np.nonzero(pos[few])
        counts = n_pos[few]
        slot = np.arange(len(r)) - (np.cumsum(counts) - counts)[r]
        scored = np.zeros((len(few), int(counts[0])), w.dtype)
        scored[r, slot] = w[r, c]
        rank_sums = np.zeros(len(few))
        for j in range(scored.shape[1]):
            m = int(np.count_nonzero(counts > j))  # a prefix: rows in descending order of positives
            block, p = w[:m], scored[:m, j : j + 1]
            rank_sums[:m] += np.count_nonzero(block < p, axis=1) + (np.count_nonzero(block == p, axis=1) + 1) / 2.0
        u = rank_sums - counts * (counts + 1) / 2.0
        out[few] = u / (counts.astype(np.float64) * n_neg[few])
    for i in ok[n_pos[ok] > _COUNT_POSITIVES]:  # many positives: sort the negatives once, binary-search each one
        neg = ~pos[i] if out_of_play is None else ~(pos[i] | out_of_play[i])
        s, negatives = work[i, pos[i]], np.sort(work[i, neg])
        left = np.searchsorted(negatives, s, side="left")
        lower, tied = left.sum(), (np.searchsorted(negatives, s, side="right") - left).sum()
        out[i] = (lower + 0.5 * tied) / (float(n_pos[i]) * float(n_neg[i]))
    return out


def coverage(ranked: np.ndarray, n_items: int) -> float:
    """Fraction of the catalogue that appears in at least one list (padding -1 ignored)."""
    ranked = np.asarray(ranked)
    return float(np.unique(ranked[ranked >= 0]).size / n_items) if n_items > 0 else float("nan")


def _canonical(matrix: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """CSR with sorted, de-duplicated indices (copied only if needed), so row lengths count distinct items."""
    csr = sp.csr_matrix(matrix)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def evaluate_ranking(
    score_fn: ScoreFn,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    k: int,
    users: np.ndarray | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean recall/precision/nDCG/MAP@k and AUC over users with ≥1 test item, train items excluded, plus coverage.

    Users are scored ``batch_size`` at a time via ``score_fn(user_rows)`` (dense, rows × items); the result
    does not depend on ``batch_size``. Keys: recall, precision, ndcg, map, auc (NaN-mean), coverage, users.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    train, test = _canonical(train), _canonical(test)
    if train.shape != test.shape:
        raise ValueError(f"train {train.shape} and test {test.shape} must have the same shape")
    n_users, n_items = test.shape
    users = np.arange(n_users) if users is None else np.asarray(users, dtype=np.int64).ravel()
    n_test = np.diff(test.indptr)
    users = users[n_test[users] > 0]
    batches = [users[start : start + batch_size] for start in range(0, len(users), batch_size)]

    def one(batch: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        scores = np.asarray(score_fn(batch))
        if scores.shape != (len(batch), n_items):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(len(batch), n_items)}")
        work = _as_float_scores(scores, reuse=True)  # the score function's own array, overwritten from here on
        del scores
        excluded = _row_mask(train, batch, n_items)
        relevant = _row_mask(test, batch, n_items)
        out_of_play = excluded & ~relevant
        aucs = _auc_of(work, relevant, out_of_play)
        work[excluded] = -np.inf
        ranked = _top_k_of(work, ~excluded, k)
        h = _hits_of(ranked, relevant)
        n_rel = n_test[batch]
        return {
            "recall": recall_at_k(h, n_rel),
            "precision": precision_at_k(h, k),
            "ndcg": ndcg_at_k(h, n_rel),
            "map": average_precision_at_k(h, n_rel),
            "auc": aucs,
        }, ranked

    parts: dict[str, list[np.ndarray]] = {m: [] for m in ("recall", "precision", "ndcg", "map", "auc")}
    seen = np.zeros(n_items, dtype=bool)
    # batches on up to two threads (numpy releases the GIL in the heavy passes); results are taken in order
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        for values, ranked in pool.map(one, batches):
            for name, v in values.items():
                parts[name].append(v)
            seen[ranked[ranked >= 0]] = True
    result: dict[str, float] = {}
    for name, chunks in parts.items():
        values = np.concatenate(chunks) if chunks else np.empty(0)
        values = values[~np.isnan(values)]  # only AUC can be NaN here (a user with no negatives)
        result[name] = float(values.mean()) if values.size else float("nan")
    result["coverage"] = float(seen.sum() / n_items) if n_items else float("nan")
    result["users"] = int(len(users))
    return result


def popularity_scores(train: sp.csr_matrix) -> ScoreFn:
    """Baseline scorer: every user scores an item by how many training users interacted with it (float32: counts
    are exact below 2²⁴ users, and half the bytes of float64 per batch)."""
    csr = _canonical(train)
    counts = np.bincount(csr.indices, minlength=csr.shape[1]).astype(
        np.float64 if csr.shape[0] >= 2**24 else np.float32
    )

    def score(user_rows: np.ndarray) -> np.ndarray:
        return np.repeat(counts[None, :], len(np.atleast_1d(user_rows)), axis=0)

    return score


def random_scores(n_items: int, seed: int) -> ScoreFn:
    """Baseline scorer: uniform random scores drawn per (seed, user), so they do not depend on batching."""

    def score(user_rows: np.ndarray) -> np.ndarray:
        user_rows = np.atleast_1d(np.asarray(user_rows))
        out = np.empty((len(user_rows), n_items))
        for j, user in enumerate(user_rows):
            out[j] = np.random.default_rng([seed, int(user)]).random(n_items)
        return out

    return score
