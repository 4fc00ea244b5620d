"""One interface for every matrix-factorization backend (local implicit ALS, Spark MLlib ALS).

Like ``implicit``'s ``AlternatingLeastSquares`` factory: callers build a confidence matrix once and
ask :func:`socialfeat.factorize.create_factorizer` for a backend; every backend returns the same
:class:`Factors`, so the files written and the tests run are the same whichever computed them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from socialfeat.config import FactorizeConfig

# called after each iteration with (iteration, seconds it took, training loss or None)
IterationCallback = Callable[[int, float, "float | None"], None]


@dataclass
class Factors:
    """User and item latent factors: row ``u`` of ``users`` is user index ``u`` (float32)."""

    users: np.ndarray
    items: np.ndarray

    def scores(self, user_rows: np.ndarray) -> np.ndarray:
        """Predicted preference of the given users for every item (rows × items)."""
        return self.users[user_rows] @ self.items.T


class FitDiverged(Exception):
    """The fit produced NaN or infinite factors (confidences too large for float32 arithmetic).

    The stage turns it into a user error naming the dataset, since the data and config decide it, not the code.
    """


def check_confidence(confidence: sp.csr_matrix) -> None:
    """Refuse non-finite confidences before a fit: ALS would turn them into NaN factors after minutes of work.

    The stage checks the dataset first and names it; reaching this is a caller's bug, hence a plain ValueError.
    """
    if not np.isfinite(confidence.data).all():
        bad = int((~np.isfinite(confidence.data)).sum())
        raise ValueError(f"{bad} of {confidence.nnz} confidences are not finite; ALS needs finite confidences")


def check_factors(factors: Factors) -> Factors:
    """The fitted factors, or :class:`FitDiverged` when any is NaN or infinite."""
    for name, array in (("user", factors.users), ("item", factors.items)):
        if not np.isfinite(array).all():
            raise FitDiverged(f"{name} factors hold NaN or infinite values")
    return factors


class Factorizer(ABC):
    """Fits implicit-feedback matrix factorization (Hu, Koren & Volinsky 2008):

    minimize Σ_ui c_ui (p_ui − x_uᵀ y_i)² + λ (Σ‖x_u‖² + Σ‖y_i‖²), with p_ui = 1 where c_ui was given.
    """

    name: str = "base"

    def __init__(self, config: FactorizeConfig, seed: int) -> None:
        self.config = config
        self.seed = seed

    @abstractmethod
    def fit(self, confidence: sp.csr_matrix, callback: IterationCallback | None = None) -> Factors:
        """Fit on a users × items CSR matrix whose stored values are the confidences c_ui (≥ 1)."""
