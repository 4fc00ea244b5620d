"""ALS fold-in: one user's (or one item's) vector from its interactions, against the other side's fixed factors.

These are the normal equations of one ALS half-step (Hu, Koren & Volinsky 2008), the step implicit's
``recalculate_user`` and ``partial_fit_users`` take:

    x_u = (YᵀY + Yᵤᵀ (Cᵤ − I) Yᵤ + λI)⁻¹ Yᵤᵀ cᵤ

with Yᵤ the factors of the items user u engaged with, cᵤ their confidences (c = 1 + α·w, as factorize computes
them from the pair's weight w) and λ factorize's regularization, unscaled as in implicit. YᵀY is computed once.
"""

from __future__ import annotations

import numpy as np

from socialfeat.linalg import solve_ridge_system


def gram(factors: np.ndarray) -> np.ndarray:
    """FᵀF in float64: the term every fold-in shares."""
    f = np.asarray(factors, dtype=np.float64)
    return f.T @ f


def fold_in(others: np.ndarray, others_gram: np.ndarray, conf: np.ndarray, regularization: float) -> np.ndarray:
    """One vector (float32) from the factors ``others`` (rows: the items or users engaged with) and their
    confidences ``conf`` (≥ 1); an empty history gives the zero vector, as ALS gives a row with no data."""
    k = others_gram.shape[0]
    if len(conf) == 0:
        return np.zeros(k, dtype=np.float32)
    f = np.asarray(others, dtype=np.float64)
    c = np.asarray(conf, dtype=np.float64)
    a = others_gram + (f.T * (c - 1.0)) @ f + regularization * np.eye(k)
    b = f.T @ c
    return solve_ridge_system(a, b, regularization).astype(np.float32)
