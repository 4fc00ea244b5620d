"""The run report: one self-contained HTML file (``socialfeat report RUN``)."""

from __future__ import annotations

from socialfeat.report.report import report

__all__ = ["report"]
