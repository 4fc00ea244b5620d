"""CLI commands of the serve stage; imported by socialfeat.cli, which owns ``app``."""

from __future__ import annotations
