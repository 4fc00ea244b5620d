"""What every command module shares: the consoles, the --config/--set options, flag helpers and the command list.

Command modules import this module only (and ``tables`` for shared output); never each other or the package
``__init__``, which builds the app from their ``commands`` lists. So the command line has no import circle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (defaults < file < flags < --set).")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override any config key: --set filter.min_user_interactions=10")
]


class _WarningHandler(logging.Handler):
    """Warnings and info from the library as short lines on stderr, not log records."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"{record.levelname.lower()}: {record.getMessage()}", markup=False, highlight=False, soft_wrap=True)


def setup_logging(verbose: bool) -> None:
    """Library warnings (and info with --verbose) go to stderr as short lines."""
    root = logging.getLogger("socialfeat")
    root.handlers[:] = [_WarningHandler()]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def config_flags(**pairs: tuple[str, str, Any]) -> dict[str, tuple[str, Any]]:
    """Config overrides from the flags a user actually gave: key → (flag, value)."""
    return {
        key: (flag, value)
        for key, (flag, value) in ((k.replace("__", "."), v) for k, v in pairs.items())
        if value is not None
    }


def is_main_rank() -> bool:
    """Under torchrun only rank 0 prints."""
    return os.environ.get("RANK", "0") == "0"


class Commands:
    """The commands of one module, in the order they are defined; ``socialfeat.cli`` adds them to its app."""

    def __init__(self) -> None:
        self.entries: list[tuple[Callable[..., Any], dict[str, Any]]] = []

    def __call__(self, **options: Any) -> Callable[[F], F]:
        def register(fn: F) -> F:
            self.entries.append((fn, options))
            return fn

        return register
