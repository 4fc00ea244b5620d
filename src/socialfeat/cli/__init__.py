"""The ``socialfeat`` command line: each subcommand parses its flags, then calls one library function.

This package builds the app; each command module (``data``, ``training``, ``evaluate``, ``search``, ``transfer``,
``report``, ``pipeline``, ``serve``, ``export``) lists its commands and imports only ``options`` and ``tables``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from socialfeat import __version__
from socialfeat.cli import content, data, evaluate, export, pipeline, report, search, serve, training, transfer
from socialfeat.cli.options import err, out, setup_logging
from socialfeat.errors import UserError

__all__ = ["app", "main", "out", "err"]

app = typer.Typer(
    name="socialfeat",
    help="Learn image features from how people engage with images: views, likes, comments, shares.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"socialfeat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show informational messages.")] = False,
) -> None:
    """socialfeat: collaborative feature learning and VisE-style pseudo labels from engagement logs."""
    setup_logging(verbose)


# the order of the help's command list, as it always was; export and content came last
for _module in (data, training, evaluate, pipeline, report, search, serve, transfer, export, content):
    for _fn, _options in _module.commands.entries:
        app.command(**_options)(_fn)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="socialfeat")
    except UserError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; no partial output was kept", markup=False)
        sys.exit(130)
