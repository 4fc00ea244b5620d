"""Pure metric functions of the evaluate stage: per-user ranking metrics on dense score matrices, audience overlap,
ridge regression (primal and dual, one eigendecomposition for every λ) and probe accuracies.

Nothing here reads files or draws random numbers, so each function is checked against a naive reference in
tests/evaluate/test_metrics.py. Scores are ``users × items``; NaN scores rank last.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp


def _clean_scores(scores: np.ndarray) -> np.ndarray:
    """A 2-D float copy with NaN replaced by -inf, so that a missing score always ranks last."""
    s = np.array(scores, dtype=np.float64 if np.asarray(scores).dtype == np.float64 else np.float32, copy=True)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (users × items), got shape {s.shape}")
    np.copyto(s, -np.inf, where=np.isnan(s))
    return s


def _sorted_average_ranks(sv: np.ndarray) -> np.ndarray:
    """1-based average ranks of row-wise ascending sorted values ``sv`` (ties share the mean of their positions)."""
    n_rows, n = sv.shape
    pos = np.arange(1, n + 1, dtype=np.float64)
    tied = sv[:, 1:] == sv[:, :-1]
    rows = np.nonzero(tied.any(axis=1))[0]
    ranks = np.broadcast_to(pos, sv.shape).copy()
    if len(rows):  # only rows with ties need their groups found
        idx = np.arange(n, dtype=np.int32)
        starts_group = np.ones((len(rows), n), dtype=bool)
        starts_group[:, 1:] = ~tied[rows]
        ends_group = np.ones((len(rows), n), dtype=bool)
        ends_group[:, :-1] = starts_group[:, 1:]
        first = np.maximum.accumulate(np.where(starts_group, idx, 0), axis=1)
        last = np.minimum.accumulate(np.where(ends_group, idx, n)[:, ::-1], axis=1)[:, ::-1]
        ranks[rows] = (first + last) / 2.0 + 1.0
    return ranks


def _sort_rows(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = _clean_scores(scores)
    order = np.argsort(s, axis=1)  # tie order is irrelevant: tied scores share their average rank
    return order, np.take_along_axis(s, order, axis=1)


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Per row, 1-based ascending ranks of the scores with ties given their average rank (like scipy's rankdata)."""
    order, sv = _sort_rows(scores)
    ranks = np.empty(sv.shape)
    np.put_along_axis(ranks, order, _sorted_average_ranks(sv), axis=1)
    return ranks


def auc_per_user(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per row: P(score of a positive > score of a negative), ties counting ½; negatives = every other item.

    ``positives`` is a bool matrix of the same shape. NaN for a row without a positive or without a negative.
    Computed from average ranks (Mann–Whitney U), so the cost is a sort per row, not n_pos × n_neg comparisons.
    """
    pos = np.asarray(positives, dtype=bool)
    if pos.shape != np.shape(scores):
        raise ValueError(f"positives {pos.shape} and scores {np.shape(scores)} differ in shape")
    order, sv = _sort_rows(scores)
    pos_sorted = np.take_along_axis(pos, order, axis=1)
    n_pos = pos.sum(axis=1).astype(np.float64)
    n_neg = pos.shape[1] - n_pos
    u = (_sorted_average_ranks(sv) * pos_sorted).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    out = np.full(len(pos), np.nan)
    ok = (n_pos > 0) & (n_neg > 0)
    out[ok] = u[ok] / (n_pos[ok] * n_neg[ok])
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first; ties go to the lower item index."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = _clean_scores(scores)
    return np.argsort(-s, axis=1, kind="stable")[:, : min(k, s.shape[1])]


def _hits(ranked: np.ndarray, positives: np.ndarray) -> np.ndarray:
    return np.take_along_axis(np.asarray(positives, dtype=bool), ranked, axis=1)


def recall_at_k(ranked: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per row: positives among the ranked top k (``ranked`` from :func:`top_k`) over all positives of the row.

    The denominator is the number of positives, as in the factorize stage's held-out metrics; NaN without any.
    """
    n_pos = np.asarray(positives, dtype=bool).sum(axis=1)
    found = _hits(ranked, positives).sum(axis=1)
    out = np.full(len(n_pos), np.nan)
    np.divide(found, n_pos, out=out, where=n_pos > 0)
    return out


def ndcg_at_k(ranked: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per row: binary-gain DCG of the top k over the DCG of an ideal list (min(n_pos, k) hits first); NaN without
    positives."""
    hits = _hits(ranked, positives).astype(np.float64)
    k = hits.shape[1]
    disc = 1.0 / np.log2(np.arange(k) + 2.0)
    n_pos = np.asarray(positives, dtype=bool).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_pos, k)]
    out = np.full(len(n_pos), np.nan)
    np.divide(hits @ disc, ideal, out=out, where=ideal > 0)
    return out


def jaccard(sets: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|A ∩ B| / |A ∪ B| for each pair (rows a[i], b[i]) of a binary item × user matrix; 0 when both are empty."""
    m = sp.csr_matrix(sets, dtype=np.float64)
    m.data[:] = 1.0
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    sizes = np.asarray(m.sum(axis=1)).ravel()
    inter = np.asarray(m[a].multiply(m[b]).sum(axis=1)).ravel()
    union = sizes[a] + sizes[b] - inter
    out = np.zeros(len(a))
    np.divide(inter, union, out=out, where=union > 0)
    return out


def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per column of ``x``, std 1 where a column is constant (it then maps to 0, not to inf)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def ridge_path(z: np.ndarray, y: np.ndarray, lambdas: Sequence[float]) -> list[np.ndarray]:
    """W minimising ‖Z W − Y‖² + λ‖W‖² for each λ (no intercept: centre Z and Y first).

    Primal W = (ZᵀZ + λI)⁻¹ZᵀY when d ≤ n; dual W = Zᵀ(ZZᵀ + λI)⁻¹Y when the features outnumber the items, so
    1,280-d features on 1,785 items or 100,000-d one-hots on 2,000 items both solve a system no bigger than
    min(n, d)². One Gram matrix serves every λ; each λ costs one Cholesky factorisation (measured faster than one
    eigendecomposition for up to about ten λ).
    """
    from scipy.linalg import cho_factor, cho_solve

    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if any(not lam > 0 for lam in lambdas):
        raise ValueError(f"ridge λ must be > 0, got {list(lambdas)}")
    n, d = z.shape
    dual = d > n
    gram = z @ z.T if dual else z.T @ z
    rhs = y if dual else z.T @ y
    eye = np.eye(len(gram))
    out = []
    for lam in lambdas:
        solution = cho_solve(cho_factor(gram + lam * eye, check_finite=False), rhs, check_finite=False)
        out.append(z.T @ solution if dual else solution)
    return out


def ridge_fit(z: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """W of ridge regression for one λ (see :func:`ridge_path`)."""
    return ridge_path(z, y, [lam])[0]


def select_best(candidates: Sequence[float], scores: Sequence[float]) -> tuple[int, float]:
    """(index, score) of the best-scoring candidate; NaN scores never win, ties go to the later candidate (for
    ascending λ: the stronger regularisation, the simpler model)."""
    vals = np.asarray(scores, dtype=np.float64)
    if len(vals) != len(candidates) or len(vals) == 0:
        raise ValueError("need one score per candidate, at least one")
    if np.all(np.isnan(vals)):
        return len(vals) - 1, float("nan")
    best = np.nanmax(vals)
    idx = int(np.nonzero(vals == best)[0][-1])
    return idx, float(best)


def accuracy(predicted: Sequence[object], truth: Sequence[object]) -> float:
    """Fraction of equal pairs."""
    p, t = np.asarray(predicted, dtype=object), np.asarray(truth, dtype=object)
    if len(p) != len(t) or len(t) == 0:
        raise ValueError("need equally many predictions and labels, at least one")
    return float(np.mean(p == t))


def majority_rate(train: Sequence[object], test: Sequence[object]) -> float:
    """Accuracy on ``test`` of always answering the most frequent ``train`` label: the chance level of a probe."""
    values, counts = np.unique(np.asarray(train, dtype=str), return_counts=True)
    majority = values[np.argmax(counts)]
    return float(np.mean(np.asarray(test, dtype=str) == majority))


def mean_or_nan(values: np.ndarray) -> float:
    """Mean over the finite entries (users without a defined metric are skipped); NaN when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")
