"""Factorize: implicit-feedback matrix factorization behind one factory, with held-out ranking metrics."""

from __future__ import annotations

from socialfeat.config import FactorizeConfig
from socialfeat.factorize.base import Factorizer, Factors


def create_factorizer(config: FactorizeConfig, seed: int = 0) -> Factorizer:
    """The backend named by ``config.backend``: ``local`` (implicit) or ``spark`` (Spark MLlib, lazy import)."""
    if config.backend == "spark":
        from socialfeat.factorize.spark import SparkALS

        return SparkALS(config, seed)
    from socialfeat.factorize.local import LocalALS

    return LocalALS(config, seed)


__all__ = ["Factorizer", "Factors", "create_factorizer"]
