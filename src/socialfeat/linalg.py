"""The one solver every ridge uses: (G + λI) W = R, which cannot fail on a valid input.

G is a Gram matrix ZᵀZ. In exact arithmetic G + λI is positive definite, but a Gram built from float32 products of
hundreds of thousands of rows carries rounding of about 1e-7 × ‖G‖. With a small λ and nearly collinear or
rank-deficient features, that rounding leaves a slightly negative eigenvalue and Cholesky fails (seen at 423K items:
"6-th leading minor not positive definite"). The fallback is the nearest system the ridge promised: a symmetric
eigendecomposition with every eigenvalue floored at λ, which is what G + λI has when G is positive semidefinite.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

log = logging.getLogger(__name__)

FALLBACKS = {"count": 0}  # how often the eigendecomposition was needed in this process (tests and benches read it)


def solve_ridge_system(a: np.ndarray, rhs: np.ndarray, floor: float) -> np.ndarray:
    """X (float64) with ``a @ X = rhs``, for ``a`` = G + λI (symmetric, positive definite up to rounding).

    Cholesky first (the fast path). When rounding has made ``a`` indefinite, ``a`` is symmetrised and solved through
    its eigendecomposition with eigenvalues floored at ``floor`` (the smallest λ on the diagonal), and a warning says
    by how much the smallest eigenvalue missed.
    """
    a = np.asarray(a, dtype=np.float64)
    rhs = np.asarray(rhs, dtype=np.float64)
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(rhs)):
        raise ValueError("ridge system holds NaN or infinite values")
    try:
        return cho_solve(cho_factor(a, check_finite=False), rhs, check_finite=False)
    except LinAlgError:
        pass
    values, vectors = np.linalg.eigh((a + a.T) / 2)
    floored = np.maximum(values, floor if floor > 0 else np.finfo(np.float64).eps * max(1.0, np.abs(values).max()))
    FALLBACKS["count"] += 1
    log.warning(
        "ridge system (%d × %d) not positive definite in floating point (smallest eigenvalue %.3g, λ %.3g): "
        "solved by eigendecomposition with eigenvalues floored at λ",
        len(a),
        len(a),
        values.min(),
        floor,
    )
    scale = floored[:, None] if rhs.ndim == 2 else floored
    return vectors @ ((vectors.T @ rhs) / scale)
