"""CLI commands of the transfer stage; imported by socialfeat.cli, which owns ``app``."""

from __future__ import annotations
