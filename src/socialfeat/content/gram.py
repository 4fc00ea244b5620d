"""What every ridge of the content stage is solved from: each block standardised on the warm items that have it, and
the products Gᵢⱼ = Zᵢᵀ Zⱼ and Zᵢᵀ Y over the warm items, for every pair of blocks, in one pass over the warm rows.

Each source's own map at each λ (late fusion), the joint map at each (λ per source, dropout rate) and its fallbacks
are then d × d solves; the rows are read again only to predict the items being scored (the valid items during a
search, the test items for a row, every item once for the chosen model). Nothing holds a standardised or float64
copy of the catalogue: dense rows are standardised a chunk at a time in their own dtype (float32), and the sparse
tags one-hot is never centred in memory — its products are written with X's sparse products and the column means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from socialfeat.content.sources import Block
from socialfeat.errors import UserError
from socialfeat.linalg import solve_ridge_system
from socialfeat.measures.coldstart import ColdStartData, factor_scores, rank_users
from socialfeat.measures.metrics import standardizer

CHUNK_CELLS = 4_000_000  # dense cells standardised at once (≈ 16 MB of float32)

Features = np.ndarray | sp.csr_matrix


def valid_auc(v: np.ndarray, data: ColdStartData) -> float:
    """Mean per-user AUC of predicted factors of the valid cold items (``v`` aligned with ``data.valid``) over the
    valid-user sample: what every choice of the content stage (λ, fusion weights, dropout) is made on."""
    return rank_users(factor_scores(data.user_factors, v), data.valid_truth, None, data.valid_users)["auc"]


def _float(x: np.ndarray) -> np.dtype:
    return x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)


def moments(x: Features, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per column of ``x[rows]`` in float64, std 1 where a column is constant; a dense ``x`` is summed a
    chunk of rows at a time (no copy of the rows), a sparse one as evaluate standardises it."""
    d = x.shape[1]
    if len(rows) < 2:
        return np.zeros(d), np.ones(d)
    if sp.issparse(x):
        return standardizer(sp.csr_matrix(x)[rows])
    step = max(1, CHUNK_CELLS // max(d, 1))
    total = np.zeros(d)
    for i in range(0, len(rows), step):
        total += x[rows[i : i + step]].sum(axis=0, dtype=np.float64)
    mean = total / len(rows)
    squares = np.zeros(d)
    for i in range(0, len(rows), step):
        c = x[rows[i : i + step]] - mean
        squares += (c * c).sum(axis=0)
    std = np.sqrt(squares / len(rows))
    return mean, np.where(std > 1e-12, std, 1.0)


@dataclass
class Standard:
    """One block as Z = (X − mean) / std on the items that have it and 0 on those that lack it (an absent block is
    its warm mean: it adds nothing), mean and std taken over the warm items that have it. Never materialised."""

    x: Features
    has: np.ndarray
    mean: np.ndarray  # float64
    std: np.ndarray

    @classmethod
    def fit(cls, block: Block, train: np.ndarray) -> Standard:
        x = block.features if sp.issparse(block.features) else np.asarray(block.features)
        if sp.issparse(x):
            x = sp.csr_matrix(x)
        mean, std = moments(x, train[block.has[train]])
        return cls(x, np.asarray(block.has, dtype=bool), mean, std)

    @property
    def sparse(self) -> bool:
        return sp.issparse(self.x)

    @property
    def width(self) -> int:
        return int(self.x.shape[1])

    def dense(self, items: np.ndarray) -> np.ndarray:
        """Z of ``items`` (a dense block only), in the block's float dtype."""
        dtype = _float(self.x)
        z = (np.asarray(self.x[items], dtype=dtype) - self.mean.astype(dtype)) / self.std.astype(dtype)
        z[~self.has[items]] = 0
        return z

    def masked(self, items: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
        """(X of ``items`` with the rows that lack the block zeroed, float64; the 0/1 mask): a sparse block's rows."""
        m = self.has[items].astype(np.float64)
        return sp.diags(m) @ sp.csr_matrix(self.x[items], dtype=np.float64), m

    def project(self, items: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Z[items] @ w (float64, len(items) × w's columns), a chunk of rows at a time; 0 for an item lacking it."""
        w = np.asarray(w, dtype=np.float64)
        if self.sparse:
            x, m = self.masked(items)
            return x @ (w / self.std[:, None]) - m[:, None] * ((self.mean / self.std) @ w)[None, :]
        out = np.empty((len(items), w.shape[1]))
        step = max(1, CHUNK_CELLS // max(self.width, 1))
        wd = w.astype(_float(self.x))
        for i in range(0, len(items), step):
            out[i : i + step] = self.dense(items[i : i + step]) @ wd
        return out


def _cross(a: Standard, pa: tuple, b: Standard, pb: tuple) -> np.ndarray:
    """Z_aᵀ Z_b over one chunk of rows, from each block's chunk (dense Z, or the masked sparse X and its mask)."""
    if not a.sparse and not b.sparse:
        return np.asarray(pa[0].T @ pb[0], dtype=np.float64)
    if not a.sparse:  # dense a, sparse b: (X̃_bᵀ Z_a)ᵀ − (Z_aᵀ m_b) mean_bᵀ, over std_b
        za, (xb, mb) = pa[0], pb
        g = np.asarray((xb.T @ za).T, dtype=np.float64) - np.outer(za.T @ mb, b.mean)
        return g / b.std[None, :]
    if not b.sparse:
        return _cross(b, pb, a, pa).T
    (xa, ma), (xb, mb) = pa, pb
    q = ma * mb  # rows that have both
    xqa, xqb = sp.diags(q) @ xa, sp.diags(q) @ xb
    g = (xqa.T @ xqb).toarray()
    g -= np.outer(np.asarray(xqa.sum(axis=0)).ravel(), b.mean) + np.outer(a.mean, np.asarray(xqb.sum(axis=0)).ravel())
    g += q.sum() * np.outer(a.mean, b.mean)
    return g / np.outer(a.std, b.std)


def _t_dot(s: Standard, part: tuple, y: np.ndarray) -> np.ndarray:
    """Zᵀ y over one chunk of rows."""
    if not s.sparse:
        z = part[0]
        return np.asarray(z.T @ y.astype(z.dtype), dtype=np.float64)
    x, m = part
    return (x.T @ y - np.outer(s.mean, m @ y)) / s.std[:, None]


class Grams:
    """Every block's standardisation, and Gᵢⱼ = Zᵢᵀ Zⱼ (i ≤ j) and Zᵢᵀ Y over the warm items (Y: their factors,
    centred), from one pass over the warm rows a chunk at a time."""

    def __init__(self, blocks: list[Block], data: ColdStartData) -> None:
        self.names = [b.name for b in blocks]
        self.blocks = {b.name: Standard.fit(b, data.train) for b in blocks}
        targets = np.asarray(data.item_factors)
        self.mean_v = targets.mean(axis=0).astype(np.float64)
        self.fit_items = {b.name: int(b.has[data.train].sum()) for b in blocks}
        self.mean_has = {  # each block's own map predicts the mean factor of the warm items that have it
            b.name: targets[b.has[data.train]].mean(axis=0).astype(np.float64)
            if self.fit_items[b.name]
            else self.mean_v
            for b in blocks
        }
        order = {name: i for i, name in enumerate(self.names)}
        pairs = [(a, b) for a in self.names for b in self.names if order[a] <= order[b]]
        self.gram = {(a, b): np.zeros((self.blocks[a].width, self.blocks[b].width)) for a, b in pairs}
        self.rhs = {n: np.zeros((self.blocks[n].width, targets.shape[1])) for n in self.names}
        dense = sum(s.width for s in self.blocks.values() if not s.sparse)
        step = max(256, CHUNK_CELLS // max(dense, 1))
        for i in range(0, len(data.train), step):
            rows = data.train[i : i + step]
            y = targets[i : i + step] - self.mean_v
            parts = {n: s.masked(rows) if s.sparse else (s.dense(rows),) for n, s in self.blocks.items()}
            for a, b in pairs:
                if a == b and not self.blocks[a].sparse:
                    z = parts[a][0]
                    self.gram[(a, a)] += z.T @ z  # one operand: numpy takes the symmetric product (half the work)
                else:
                    self.gram[(a, b)] += _cross(self.blocks[a], parts[a], self.blocks[b], parts[b])
            for n, s in self.blocks.items():
                self.rhs[n] += _t_dot(s, parts[n], y)

    def block(self, a: str, b: str) -> np.ndarray:
        """G_ab = Z_aᵀ Z_b."""
        return self.gram[(a, b)] if (a, b) in self.gram else self.gram[(b, a)].T

    def ridge_path(self, name: str, lambdas: list[float]) -> list[np.ndarray]:
        """One block's own ridge W = (G + λI)⁻¹ Zᵀ Y for each λ: each source's map of late fusion (the same weights
        as :func:`socialfeat.measures.coldstart.fit_ridge_map` on that block, from the Gram already built)."""
        if self.fit_items[name] < 2:
            raise UserError(name, f"only {self.fit_items[name]} warm items have features; cannot fit the ridge mapping")
        g, eye = self.block(name, name), np.eye(self.blocks[name].width)
        return [solve_ridge_system(g + lam * eye, self.rhs[name], lam) for lam in lambdas]
