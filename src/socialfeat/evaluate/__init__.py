"""Evaluation of feature sources: cold-start audience prediction, behavioural retrieval and linear probes."""

from __future__ import annotations

from socialfeat.evaluate.stage import SOURCES, EvaluateResult, evaluate

__all__ = ["SOURCES", "EvaluateResult", "evaluate"]
