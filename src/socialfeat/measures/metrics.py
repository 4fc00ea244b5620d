"""Pure metric functions that evaluate, content and selection share: per-user ranking metrics on dense score
matrices, audience overlap, ridge regression (primal and dual, one Gram matrix for every λ, dense or on a
standardised sparse matrix) and probe accuracies.

Nothing here reads files or draws random numbers, so each function is checked against a naive reference in
tests/evaluate/test_evaluate_metrics.py. Scores are ``users × items``; NaN scores rank last. Work stays in the
dtype it is given (float32 in the stages): only vectors and d × d systems are float64, never an n × d matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from socialfeat.linalg import solve_ridge_system

# row chunks of a dense n × d matrix are standardised this many cells at a time (≈ 16 MB of float32)
CHUNK_CELLS = 4_000_000


def _clean_scores(scores: np.ndarray) -> np.ndarray:
    """2-D float scores with NaN replaced by -inf, so that a missing score always ranks last; float32 and float64
    keep their dtype, and the input is copied only when it has a NaN to replace."""
    s = np.asarray(scores)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float32)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (users × items), got shape {s.shape}")
    nan = np.isnan(s)
    if nan.any():
        s = s.copy()
        np.copyto(s, -np.inf, where=nan)
    return s


def _tie_groups(sv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last): for each position of row-wise ascending sorted values ``sv``, the first and the last position
    of its group of equal values (int32)."""
    n = sv.shape[1]
    idx = np.arange(n, dtype=np.int32)
    starts = np.ones(sv.shape, dtype=bool)
    np.not_equal(sv[:, 1:], sv[:, :-1], out=starts[:, 1:])
    first = np.maximum.accumulate(np.where(starts, idx, np.int32(0)), axis=1)
    starts[:, :-1] = starts[:, 1:]  # now: a group ends here
    starts[:, -1] = True
    last = np.minimum.accumulate(np.where(starts, idx, np.int32(n - 1))[:, ::-1], axis=1)[:, ::-1]
    return first, last


def _sorted_average_ranks(sv: np.ndarray) -> np.ndarray:
    """1-based average ranks of row-wise ascending sorted values ``sv`` (ties share the mean of their positions)."""
    n_rows, n = sv.shape
    pos = np.arange(1, n + 1, dtype=np.float64)
    rows = np.nonzero((sv[:, 1:] == sv[:, :-1]).any(axis=1))[0]
    ranks = np.broadcast_to(pos, sv.shape).copy()
    if len(rows):  # only rows with ties need their groups found
        first, last = _tie_groups(sv[rows])
        ranks[rows] = (first + last) / 2.0 + 1.0
    return ranks


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Per row, 1-based ascending ranks of the scores with ties given their average rank (like scipy's rankdata)."""
    s = _clean_scores(scores)
    order = np.argsort(s, axis=1)
    sv = np.take_along_axis(s, order, axis=1)
    ranks = np.empty(sv.shape)
    np.put_along_axis(ranks, order, _sorted_average_ranks(sv), axis=1)
    return ranks


def _rank_sums_by_sorting(s: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Per row, the sum of the positives' average ranks, from a sort of the row."""
    order = np.argsort(s, axis=1)  # tie order is irrelevant: tied scores share their average rank
    sv = np.take_along_axis(s, order, axis=1)
    return (_sorted_average_ranks(sv) * np.take_along_axis(pos, order, axis=1)).sum(axis=1)


def _rank_sums_by_counting(s: np.ndarray, pos: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """Per row, the sum of the positives' average ranks, by counting: a positive scored p has average rank
    #(< p) + (#(= p) + 1) / 2. Rows are taken most positives first, so pass j reads only the leading rows that
    have a j-th positive: the work is (positives × items), linear, where a sort is n log n per row."""
    order = np.argsort(-n_pos, kind="stable")
    s, pos, n_pos = s[order], pos[order], n_pos[order]
    r, c = np.nonzero(pos)
    slot = np.arange(len(r)) - (np.cumsum(n_pos) - n_pos)[r]  # j-th positive of its row
    width = int(n_pos[0]) if len(n_pos) else 0
    scored = np.zeros((len(s), width), s.dtype)
    scored[r, slot] = s[r, c]
    total = np.zeros(len(s))
    for j in range(width):
        m = int(np.count_nonzero(n_pos > j))  # a prefix: rows are in descending order of positives
        rows, p = s[:m], scored[:m, j : j + 1]
        total[:m] += np.count_nonzero(rows < p, axis=1) + (np.count_nonzero(rows == p, axis=1) + 1) / 2.0
    out = np.empty(len(s))
    out[order] = total
    return out


# Up to this many positives, a row's AUC is counted (one pass per positive); more, and a sort is cheaper. A sort of a
# 42,000-item row costs about as much as 25 counting passes (measured on 100 rows of 42,000 float32 scores).
COUNT_POSITIVES = 16


def auc_per_user(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per row: P(score of a positive > score of a negative), ties counting ½; negatives = every other item.

    ``positives`` is a bool matrix of the same shape. NaN for a row without a positive or without a negative.
    Computed from the positives' average ranks (Mann–Whitney U): counted in linear passes for a row with few
    positives (the usual user), from a sort for the rest — never n_pos × n_neg comparisons.
    """
    pos = np.asarray(positives, dtype=bool)
    if pos.shape != np.shape(scores):
        raise ValueError(f"positives {pos.shape} and scores {np.shape(scores)} differ in shape")
    s = _clean_scores(scores)
    n_pos = pos.sum(axis=1)
    n_neg = pos.shape[1] - n_pos
    rank_sums = np.zeros(len(pos))
    few = n_pos <= COUNT_POSITIVES
    if few.all():
        rank_sums = _rank_sums_by_counting(s, pos, n_pos)
    elif few.any():
        rank_sums[few] = _rank_sums_by_counting(s[few], pos[few], n_pos[few])
    if not few.all():
        rank_sums[~few] = _rank_sums_by_sorting(s[~few], pos[~few])
    u = rank_sums - n_pos * (n_pos + 1) / 2.0
    out = np.full(len(pos), np.nan)
    ok = (n_pos > 0) & (n_neg > 0)
    out[ok] = u[ok] / (n_pos[ok] * n_neg[ok])
    return out


def auc_item_influence(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, int]:
    """(Σ over rows of each column's influence on the row's AUC, rows with a defined AUC): what lets a bootstrap
    resample the items (columns) as well as the users (rows) without ranking every row again.

    Weighting column k by w_k moves row u's AUC, to first order, by (w_k − 1)·φ_uk. For a positive k,
    φ_uk = (V_k − AUC_u)/n_pos with V_k its share of the negatives ranked below it; for a negative k,
    φ_uk = (V'_k − AUC_u)/n_neg with V'_k the share of the positives ranked above it (DeLong's placement values;
    ties count ½). One sort per row gives every placement; a row with few positives is counted instead, one pass
    per positive.
    """
    pos = np.asarray(positives, dtype=bool)
    if pos.shape != np.shape(scores):
        raise ValueError(f"positives {pos.shape} and scores {np.shape(scores)} differ in shape")
    s = _clean_scores(scores)
    n_rows, n = s.shape
    if n_rows == 0 or n == 0:
        return np.zeros(n), 0
    n_pos = pos.sum(axis=1)
    few = n_pos <= COUNT_POSITIVES
    if few.all():
        return _influence_by_counting(s, pos, n_pos)
    total, defined = _influence_by_sorting(s[~few], pos[~few])
    if few.any():
        counted, more = _influence_by_counting(s[few], pos[few], n_pos[few])
        total, defined = total + counted, defined + more
    return total, defined


def _influence_by_counting(s: np.ndarray, pos: np.ndarray, n_pos: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`auc_item_influence` for rows with few positives: one pass per positive slot counts, for every item,
    the positives above it, and for every positive the items below it (as :func:`_rank_sums_by_counting`)."""
    n_rows, n = s.shape
    keep = (n_pos > 0) & (n_pos < n)
    s, pos, n_pos = s[keep], pos[keep], n_pos[keep]
    if not len(s):
        return np.zeros(n), 0
    order = np.argsort(-n_pos, kind="stable")
    s, pos, n_pos = s[order], pos[order], n_pos[order]
    r, c = np.nonzero(pos)
    slot = np.arange(len(r)) - (np.cumsum(n_pos) - n_pos)[r]
    width = int(n_pos[0])
    scored = np.full((len(s), width), np.nan, s.dtype)
    scored[r, slot] = s[r, c]
    above = np.zeros(s.shape, np.float32)  # positives above each item, ties ½
    below = np.zeros((len(s), width))  # items below each positive, ties ½ (itself included: ½)
    for j in range(width):
        m = int(np.count_nonzero(n_pos > j))
        rows, p = s[:m], scored[:m, j : j + 1]
        greater, equal = p > rows, p == rows
        above[:m] += greater
        above[:m] += np.float32(0.5) * equal
        below[:m, j] = np.count_nonzero(greater, axis=1) + 0.5 * np.count_nonzero(equal, axis=1)
    with np.errstate(invalid="ignore"):
        pp = (scored[:, :, None] > scored[:, None, :]) + 0.5 * (scored[:, :, None] == scored[:, None, :])
    neg_below = below - pp.sum(axis=2)  # NaN slots compare false: they add nothing
    n_neg = (n - n_pos).astype(np.float64)
    v_pos = neg_below / n_neg[:, None]
    valid = np.arange(width)[None, :] < n_pos[:, None]
    auc = np.where(valid, v_pos, 0.0).sum(axis=1) / n_pos
    coef = (1.0 / (n_pos * n_neg)).astype(np.float32)
    phi = above * coef[:, None] - (auc / n_neg).astype(np.float32)[:, None]  # a negative's φ
    phi[pos] = 0.0
    total = phi.sum(axis=0, dtype=np.float64)
    np.add.at(total, c, ((v_pos - auc[:, None]) / n_pos[:, None])[r, slot])  # each positive's own φ
    return total, len(s)


def _influence_by_sorting(s: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`auc_item_influence` from one sort per row: tie groups from the sorted scores, positive counts from a
    running sum."""
    n_rows, n = s.shape
    if n_rows == 0:
        return np.zeros(n), 0
    order = np.argsort(s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, axis=1)
    ps = np.take_along_axis(pos, order, axis=1)
    through = np.cumsum(ps, axis=1, dtype=np.int32)  # positives at or below each sorted position
    start, end = _tie_groups(ss)
    del ss
    pos_below = np.take_along_axis(through - ps, start, axis=1)  # positives strictly below the group
    pos_through = np.take_along_axis(through, end, axis=1)  # positives in or below the group
    del through
    n_pos = pos_through[:, -1].astype(np.float64)
    n_neg = n - n_pos
    ok = (n_pos > 0) & (n_neg > 0)
    tied_pos = pos_through - pos_below
    with np.errstate(invalid="ignore", divide="ignore"):
        # a positive: negatives below it, ties ½; a negative: positives above it, ties ½
        v_pos = ((start - pos_below) + 0.5 * ((end + 1 - start) - tied_pos)) / n_neg[:, None]
        v_neg = ((n_pos[:, None] - pos_through) + 0.5 * tied_pos) / n_pos[:, None]
        auc = np.where(ps, v_pos, 0.0).sum(axis=1) / n_pos
        phi = np.where(ps, (v_pos - auc[:, None]) / n_pos[:, None], (v_neg - auc[:, None]) / n_neg[:, None])
    del v_pos, v_neg, start, end, pos_below, pos_through, tied_pos
    out = np.empty_like(phi)
    np.put_along_axis(out, order, phi, axis=1)
    return out[ok].sum(axis=0), int(ok.sum())


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first; ties go to the lower item index.

    A partition finds each row's k-th best score t in linear time; the top k are every score above t and the
    lowest-indexed of those equal to t, and only those k are sorted — not the whole row.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = _clean_scores(scores)
    n_rows, n = s.shape
    if k >= n:
        return np.argsort(-s, axis=1, kind="stable")
    t = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th highest score
    keep = s > t
    equal = s == t
    need = k - keep.sum(axis=1)  # slots left for scores equal to t: the lowest-indexed of them take them
    crowded = np.nonzero(equal.sum(axis=1) > need)[0]  # rows where more scores tie at t than slots remain
    keep |= equal
    if len(crowded):
        keep[crowded] &= ~equal[crowded] | (np.cumsum(equal[crowded], axis=1) <= need[crowded, None])
    cols = np.nonzero(keep)[1].reshape(n_rows, k)  # row-major: ascending index within each row
    order = np.lexsort((cols, -np.take_along_axis(s, cols, axis=1)), axis=1)  # best first, ties by index
    return np.take_along_axis(cols, order, axis=1)


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


def standardizer(x: np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per column of ``x`` in float64, std 1 where a column is constant (it then maps to 0, not to inf).

    A dense float32 ``x`` is never copied whole to float64: the mean accumulates in float64 and the squared
    deviations are summed over row chunks. A sparse ``x`` uses E[x²] − mean², so a one-hot is never densified.
    """
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float64)  # nnz-sized: scipy sums in the matrix's own dtype
        n = max(x.shape[0], 1)
        mean = np.asarray(x.sum(axis=0)).ravel() / n
        square = np.asarray(x.multiply(x).sum(axis=0)).ravel() / n
        std = np.sqrt(np.maximum(square - mean**2, 0.0))
    else:
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        mean = x.mean(axis=0, dtype=np.float64)
        squares = np.zeros(x.shape[1])
        step = max(1, CHUNK_CELLS // max(x.shape[1], 1))
        for i in range(0, len(x), step):
            squares += ((x[i : i + step] - mean) ** 2).sum(axis=0)
        std = np.sqrt(squares / max(len(x), 1))
    return mean, np.where(std > 1e-12, std, 1.0)


@dataclass(frozen=True)
class Standardized:
    """Z = (X − mean) / std for a sparse X, never materialised (a centred one-hot is dense): the products ridge
    needs are written with X's sparse products and the column means, in float64 (nnz-sized work)."""

    x: sp.csr_matrix
    mean: np.ndarray
    std: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape

    def _x(self) -> sp.csr_matrix:
        return sp.csr_matrix(self.x, dtype=np.float64)

    def gram(self) -> np.ndarray:
        """ZᵀZ = D⁻¹(XᵀX − n·mean·meanᵀ)D⁻¹ (d × d, dense)."""
        x = self._x()
        g = (x.T @ x).toarray() - x.shape[0] * np.outer(self.mean, self.mean)
        return g / np.outer(self.std, self.std)

    def outer(self) -> np.ndarray:
        """ZZᵀ (n × n, dense): for the dual, when the columns outnumber the rows."""
        x = self._x()
        scaled = x @ sp.diags(1.0 / self.std**2)
        c = scaled @ self.mean  # X D⁻² mean, per row
        g = (scaled @ x.T).toarray() - c[:, None] - c[None, :] + float(self.mean @ (self.mean / self.std**2))
        return g

    def t_dot(self, y: np.ndarray) -> np.ndarray:
        """Zᵀy = D⁻¹(Xᵀy − mean·(1ᵀy))."""
        y = np.asarray(y, dtype=np.float64)
        return (self._x().T @ y - np.outer(self.mean, y.sum(axis=0))) / self.std[:, None]

    def dot(self, w: np.ndarray) -> np.ndarray:
        """Zw = X(D⁻¹w) − (D⁻¹mean)ᵀw."""
        w = np.asarray(w, dtype=np.float64)
        return self._x() @ (w / self.std[:, None]) - (self.mean / self.std) @ w


def ridge_path(z: np.ndarray | Standardized, y: np.ndarray, lambdas: Sequence[float]) -> list[np.ndarray]:
    """W (float64, d × f) minimising ‖Z W − Y‖² + λ‖W‖² for each λ (no intercept: centre Z and Y first).

    Primal W = (ZᵀZ + λI)⁻¹ZᵀY when d ≤ n; dual W = Zᵀ(ZZᵀ + λI)⁻¹Y when the features outnumber the items, so
    1,280-d features on 1,785 items or 100,000-d one-hots on 2,000 items both solve a system no bigger than
    min(n, d)². One Gram matrix serves every λ; each λ costs one Cholesky factorisation (measured faster than one
    eigendecomposition for up to about ten λ). A dense Z keeps its dtype (float32: the Gram is built in float32 and
    only the min(n, d)² system is solved in float64); a :class:`Standardized` sparse Z is never densified.
    """
    if any(not lam > 0 for lam in lambdas):
        raise ValueError(f"ridge λ must be > 0, got {list(lambdas)}")
    n, d = z.shape
    dual = d > n
    if isinstance(z, Standardized):
        y = np.asarray(y, dtype=np.float64)
        gram = z.outer() if dual else z.gram()
        rhs = y if dual else z.t_dot(y)
    else:
        z = np.asarray(z)
        if z.dtype not in (np.float32, np.float64):
            z = z.astype(np.float64)
        y = np.asarray(y, dtype=z.dtype)
        gram = np.asarray(z @ z.T if dual else z.T @ z, dtype=np.float64)
        rhs = np.asarray(y if dual else z.T @ y, dtype=np.float64)
    eye = np.eye(len(gram))
    out = []
    for lam in lambdas:
        solution = solve_ridge_system(gram + lam * eye, rhs, lam)
        if not dual:
            out.append(solution)
        elif isinstance(z, Standardized):
            out.append(z.t_dot(solution))
        else:
            out.append(np.asarray(z.T @ solution.astype(z.dtype), dtype=np.float64))
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
