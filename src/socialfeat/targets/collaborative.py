"""Collaborative targets (collaborative feature learning): item factors to regress onto, and k-means
clusters of them as pseudo-classes for a softmax head."""

from __future__ import annotations

import numpy as np

from socialfeat.errors import UserError


def normalize_factors(factors: np.ndarray, how: str) -> np.ndarray:
    """Scale factor vectors for regression: ``l2`` (unit length — direction is what ranking uses),
    ``standardize`` (zero mean, unit variance per dimension) or ``none``."""
    x = factors.astype(np.float32, copy=True)
    if how == "l2":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-12)
    if how == "standardize":
        return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
    return x


def kmeans(vectors: np.ndarray, k: int, iterations: int, seed: int, spherical: bool) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means: (cluster per row, centroids). Spherical for unit vectors (cosine geometry)."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(x) < k:
        raise UserError("targets.clusters", f"{k} clusters need at least {k} items with factors; there are {len(x)}")
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=iterations,
        seed=seed,
        spherical=spherical,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=1_000_000,
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign.ravel().astype(np.int32), km.centroids.copy()


def representatives(vectors: np.ndarray, labels: np.ndarray, centroids: np.ndarray, n: int) -> list[list[int]]:
    """Per cluster, the rows closest to its centre (most typical members first)."""
    out = []
    for c in range(len(centroids)):
        rows = np.flatnonzero(labels == c)
        dist = np.linalg.norm(vectors[rows] - centroids[c], axis=1)
        out.append(rows[np.argsort(dist, kind="stable")[:n]].tolist())
    return out
