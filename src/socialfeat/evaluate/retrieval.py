"""Behavioural retrieval: do an image's nearest neighbours in a feature space share its audience?

For a seeded sample of items with at least one interaction, the cosine nearest neighbours in the source's feature
space are compared with the query by the Jaccard overlap of their user sets, against random pairs of items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from socialfeat.artifacts import read_table
from socialfeat.measures.metrics import jaccard, top_k

SPARSE_CELLS = 4_000_000  # query × item similarities computed at once for a sparse source (≈ 16 MB of float32)


@dataclass
class Audiences:
    """Binary item × user matrix of who engaged with what (warm log and the hidden cold log), by item_idx."""

    sets: sp.csr_matrix
    cold: np.ndarray  # bool per item_idx: a valid/test cold item

    @property
    def active(self) -> np.ndarray:
        """Items with at least one interaction: the only ones an overlap can be measured for."""
        return np.diff(self.sets.indptr) > 0


def load_audiences(run: Path, n_items: int, cold: np.ndarray) -> Audiences:
    """Union of dataset/interactions and factors/cold_interactions as a binary item × user matrix."""
    users, items = [], []
    for path in (run / "dataset" / "interactions.parquet", run / "factors" / "cold_interactions.parquet"):
        if path.is_file():
            t = read_table(path, columns=["user_idx", "item_idx"])
            users.append(t.column("user_idx").to_numpy().astype(np.int64))
            items.append(t.column("item_idx").to_numpy().astype(np.int64))
    u = np.concatenate(users) if users else np.zeros(0, np.int64)
    i = np.concatenate(items) if items else np.zeros(0, np.int64)
    n_users = int(u.max()) + 1 if len(u) else 0
    m = sp.csr_matrix((np.ones(len(u), np.float32), (i, u)), shape=(n_items, n_users))
    m.sum_duplicates()
    m.data[:] = 1.0
    return Audiences(m, np.asarray(cold, dtype=bool))


def _nearest_sparse(vectors: sp.spmatrix, queries: np.ndarray, k: int) -> np.ndarray:
    """:func:`nearest` for a sparse matrix (the metadata one-hot), never densified: exact cosine by sparse products
    over query chunks; ties go to the lower row index."""
    x = sp.csr_matrix(vectors, dtype=np.float32)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x, dtype=np.float32)
    n = x.shape[0]
    out = np.full((len(queries), k), -1, dtype=np.int64)
    kk = min(k, n - 1)
    if kk < 1:
        return out
    step = max(1, SPARSE_CELLS // max(n, 1))
    for start in range(0, len(queries), step):
        q = np.asarray(queries[start : start + step])
        sims = (x[q] @ x.T).toarray()
        sims[np.arange(len(q)), q] = -np.inf  # never its own neighbour
        out[start : start + len(q), :kk] = top_k(sims, kk)
    return out


def nearest(vectors: np.ndarray | sp.spmatrix, queries: np.ndarray, k: int) -> np.ndarray:
    """For each query row of ``vectors``, the k most cosine-similar other rows (exact inner product on unit vectors,
    faiss IndexFlatIP; sparse products for a sparse matrix); -1 pads when there are fewer than k other rows."""
    if sp.issparse(vectors):
        return _nearest_sparse(vectors, queries, k)
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(x)  # zero vectors stay zero: equally (un)similar to everything
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    kk = min(k + 1, len(x))
    _, found = index.search(x[queries], kk)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for j, (q, row) in enumerate(zip(queries, found, strict=True)):
        others = row[(row != q) & (row >= 0)][:k]  # the query itself is usually, but not always, first
        out[j, : len(others)] = others
    return out


def overlap_test(
    vectors: np.ndarray | sp.spmatrix, sets: sp.csr_matrix, queries: np.ndarray, k: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Mean Jaccard overlap of query audiences with their k nearest neighbours (among the rows of ``vectors``,
    whose audiences are the rows of ``sets``) and with k random other rows; lift = their ratio."""
    n = vectors.shape[0]
    neighbours = nearest(vectors, queries, k)
    q_rep = np.repeat(queries, k)
    nb = neighbours.ravel()
    ok = nb >= 0
    overlap = jaccard(sets, q_rep[ok], nb[ok])
    # random partners: uniform over the other rows (shift past the query so it is never its own partner)
    partners = rng.integers(0, n - 1, size=len(q_rep)) if n > 1 else np.zeros(len(q_rep), np.int64)
    partners = partners + (partners >= q_rep)
    random = jaccard(sets, q_rep, partners) if n > 1 else np.zeros(0)
    mean = float(overlap.mean()) if len(overlap) else float("nan")
    base = float(random.mean()) if len(random) else float("nan")
    return {
        "overlap": mean,
        "random_overlap": base,
        "lift": mean / base if base > 0 else float("nan"),
        "queries": len(queries),
    }


def retrieval_row(
    features: np.ndarray | sp.spmatrix, has: np.ndarray, audiences: Audiences, k: int, max_queries: int, seed: int
) -> dict[str, Any]:
    """Overlap@k over all items (pool = items with features and an audience), and over cold queries with cold
    neighbours only: the case the features exist for, where no interaction has shaped the factors."""
    pool = np.nonzero(has & audiences.active)[0]
    rng = np.random.default_rng(seed)
    if len(pool) < 2:
        return {"overlap": float("nan"), "random_overlap": float("nan"), "lift": float("nan"), "queries": 0}
    queries = np.sort(rng.choice(len(pool), size=min(max_queries, len(pool)), replace=False))
    result = overlap_test(features[pool], audiences.sets[pool], queries, k, rng)
    cold_pool = pool[audiences.cold[pool]]
    if len(cold_pool) > k:
        cold_rng = np.random.default_rng([seed, 1])
        cold_q = np.sort(cold_rng.choice(len(cold_pool), size=min(max_queries, len(cold_pool)), replace=False))
        cold = overlap_test(features[cold_pool], audiences.sets[cold_pool], cold_q, k, cold_rng)
        result.update({f"cold_{key}": value for key, value in cold.items()})
    result["neighbours"] = k
    return result
