"""The local backend: ``implicit``'s conjugate-gradient ALS (its CUDA implementation when available)."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from socialfeat.factorize.base import (
    Factorizer,
    Factors,
    FitDiverged,
    IterationCallback,
    check_confidence,
    check_factors,
)

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    """True when implicit was built with CUDA and a GPU is visible."""
    try:
        import implicit.gpu

        return bool(implicit.gpu.HAS_CUDA) and implicit.gpu.num_gpus() > 0  # type: ignore[attr-defined]
    except (ImportError, AttributeError, RuntimeError):
        return False


class LocalALS(Factorizer):
    """implicit's ALS with the stored values used as confidences as they are (``alpha=1``)."""

    name = "local"

    def fit(self, confidence: sp.csr_matrix, callback: IterationCallback | None = None) -> Factors:
        check_confidence(confidence)
        cfg = self.config
        use_gpu = gpu_available() if cfg.use_gpu is None else cfg.use_gpu
        if use_gpu:
            from implicit.gpu.als import AlternatingLeastSquares
        else:
            from implicit.cpu.als import AlternatingLeastSquares
        from implicit.recommender_base import ModelFitError

        kwargs = {
            "factors": cfg.factors,
            "regularization": cfg.regularization,
            "alpha": 1.0,
            "iterations": cfg.iterations,
            "calculate_training_loss": cfg.log_loss,
            "random_state": self.seed,
        }
        if not use_gpu:
            kwargs.update(use_cg=True, num_threads=cfg.threads)
        started = time.perf_counter()
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads only contend
            model = AlternatingLeastSquares(**kwargs)
            if not use_gpu:
                model.cg_steps = cfg.cg_steps  # an attribute, not a constructor argument, in implicit 0.7
            try:
                model.fit(confidence.astype(np.float32, copy=False), show_progress=False, callback=callback)
            except ModelFitError as exc:  # NaN factors: float32 overflowed on confidences this large
                raise FitDiverged(str(exc)) from exc
        log.info("local ALS fit in %.1f s (%s)", time.perf_counter() - started, "gpu" if use_gpu else "cpu")
        if use_gpu:
            model = model.to_cpu()
        users = _exact_users(model, confidence, cfg.threads)
        return check_factors(
            Factors(
                users=np.ascontiguousarray(users, dtype=np.float32),
                items=np.ascontiguousarray(model.item_factors, dtype=np.float32),
            )
        )


def _exact_users(model: object, confidence: sp.csr_matrix, threads: int) -> np.ndarray:
    """Every user solved once more, exactly (Cholesky), against the final item factors.

    The fit ends on an item half-step, and its user half-steps are three conjugate-gradient steps: the users it
    leaves sit 1-4% from the optimum for the items it returns. The live catalogue folds a user in by the same normal
    equations, so without this step a user who logged nothing new would move when folded in. This is implicit's own
    ``recalculate_user``."""
    started = time.perf_counter()
    model.num_threads = threads  # type: ignore[attr-defined]
    with threadpool_limits(1, "blas"):
        users = model.recalculate_user(np.arange(confidence.shape[0]), confidence.astype(np.float32, copy=False))  # type: ignore[attr-defined]
    log.info("exact user half-step in %.1f s", time.perf_counter() - started)
    return users
