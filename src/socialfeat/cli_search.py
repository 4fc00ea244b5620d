"""CLI commands of the search stage(s); imported by socialfeat.cli, which owns ``app``."""

from __future__ import annotations
