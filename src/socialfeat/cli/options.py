"""What every command module shares: the consoles, the --config/--set options, flag helpers and the command list.

Command modules import this module only (and ``tables`` for shared output); never each other or the package
``__init__``, which builds the app from their ``commands`` lists. So the command line has no import circle.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from socialfeat.config import Config

F = TypeVar("F", bound=Callable[..., Any])

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (defaults < file < flags < --set).")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override any config key: --set filter.min_user_interactions=10")
]


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]} | {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def one_line(text: str) -> str:
    """The error line as printed: control characters (a newline in a file name, a NUL in a header) escaped, so
    the message stays one line and reads the same on any terminal."""
    return text.translate(_CONTROL)


_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")  # what Rich's markup parser takes for a tag (rich.markup.RE_TAGS)


def shown(value: object) -> str:
    """User text (a title, tag, id, path, event name) as Rich prints it: literally, never as markup (``[/]``,
    ``[bold red]x``, ``Sunset [b/w]`` print as written), with control characters and ANSI escapes made visible
    (``\\x1b[31m``), so that no value can restyle, rewrite or break a line of the output.

    Every user value printed through a console with markup on (``out.print``, a table cell, title or caption) goes
    through here. It escapes as :func:`rich.markup.escape` does (a backslash before each tag, the backslashes before
    it doubled), but leaves a trailing backslash alone: Rich doubles it for markup that might follow, which prints it
    twice when none does, and the CLI's output puts no markup after a value.
    """
    return _TAG.sub(lambda m: f"{m[1]}{m[1]}\\{m[2]}", one_line(str(value)))


class _WarningHandler(logging.Handler):
    """Warnings and info from the library as short lines on stderr, not log records."""

    def emit(self, record: logging.LogRecord) -> None:
        line = one_line(f"{record.levelname.lower()}: {record.getMessage()}")  # a warning may quote an id or title
        err.print(line, markup=False, highlight=False, soft_wrap=True)


def setup_logging(verbose: bool) -> None:
    """Library warnings (and info with --verbose) go to stderr as short lines."""
    root = logging.getLogger("socialfeat")
    root.handlers[:] = [_WarningHandler()]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def limits(key: str) -> dict[str, float]:
    """typer's ``min``/``max`` for a flag that sets config ``key``: its Field's bounds, so the flag is checked while
    parsing (nan, inf and 10**30 included) with the very range the config holds. An exclusive bound (``gt=0``) is
    inclusive here; the config then refuses the bound itself, naming the flag too."""
    field: Any = None
    model: Any = Config
    for part in key.split("."):
        field = model.model_fields[part]
        model = field.annotation
    found: dict[str, float] = {}
    for rule in field.metadata:
        for attr, name in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(rule, attr, None) is not None:
                found[name] = getattr(rule, attr)
    return found


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def range_message(param: Any, exc: BaseException) -> str | None:
    """A bounded number option's refusal, naming its range: ``expected an integer from 1 to 1000, got '1e400'``.

    Typer checks ``min``/``max`` with pydantic while parsing (nan and inf fail them too), but words every refusal as
    one bound ("less than or equal to 1000", even for nan); the user needs the whole range, and their value."""
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if (low is None and high is None) or not hasattr(exc.__cause__, "errors"):  # not typer's check: its own words
        return None
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    kind = "an integer" if annotation is int else "a number"
    if low is not None and high is not None:
        span = f"from {_bound(low)} to {_bound(high)}"
    else:
        span = f"≥ {_bound(low)}" if low is not None else f"≤ {_bound(high)}"
    errors = exc.__cause__.errors()  # type: ignore[union-attr]
    given = str(errors[0].get("input", "")) if errors else ""
    given = given if len(given) <= 40 else given[:39] + "…"
    return f"expected {kind} {span}" + (f", got '{given}'" if given else "")


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
