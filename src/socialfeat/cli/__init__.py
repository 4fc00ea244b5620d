"""The ``socialfeat`` command line: each subcommand parses its flags, then calls one library function.

This package builds the app; each command module (``data``, ``training``, ``evaluate``, ``search``, ``transfer``,
``report``, ``pipeline``, ``serve``, ``export``) lists its commands and imports only ``options`` and ``tables``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from socialfeat import __version__
from socialfeat.cli import content, data, evaluate, export, live, pipeline, report, search, serve, training, transfer
from socialfeat.cli.options import err, one_line, out, range_message, setup_logging
from socialfeat.errors import Interrupted, UserError, fixable_os_error

__all__ = ["app", "main", "out", "err", "one_line"]

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


def _interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also as DuckDB reports it: it turns the signal into ``RuntimeError: Query interrupted`` (or its
    InterruptException), with the KeyboardInterrupt at most in the exception's context."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt) or type(seen).__name__ == "InterruptException":
            return True
        if isinstance(seen, RuntimeError) and str(seen) == "Query interrupted":
            return True
        seen = seen.__context__
    return False


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command so that Ctrl-C reaches :func:`main` as :class:`Interrupted` (typer would exit 130 silently)
    and a file-system fault the user can fix (permission, read-only, disk full, file too large) as a UserError."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (UserError, Interrupted):
            raise
        except BaseException as exc:
            if _interrupt(exc):
                raise Interrupted() from exc
            user = fixable_os_error(exc) if isinstance(exc, Exception) else None
            if user is None:
                raise
            raise user from exc

    return command


# the order of the help's command list, as it always was; export and content came last
for _module in (data, training, evaluate, pipeline, report, search, live, serve, transfer, export, content):
    for _fn, _options in _module.commands.entries:
        app.command(**_options)(guarded(_fn))


try:  # typer ≥ 0.2x carries its own copy of click; older typer uses click itself
    from typer._click import exceptions as _click
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as _click  # type: ignore[no-redef]


def _usage_line(exc: Exception) -> str:
    """Click's usage error as one line: ``--k: '1e3' is not a valid integer (see: socialfeat recommend --help)``."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "socialfeat"
    param = getattr(exc, "param", None)
    if isinstance(exc, _click.BadParameter) and not isinstance(exc, _click.MissingParameter) and param is not None:
        opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or getattr(param, "opts", [])
        is_option = getattr(param, "param_type_name", "") == "option"
        hint = opts[0] if opts and is_option else (param.name or "argument").upper()
        text = f"{hint}: {range_message(param, exc) or exc.message}"
    else:
        text = exc.format_message()
    return f"{text.rstrip('.')} (see: {command} --help)"


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback; Ctrl-C says what
    was kept and exits 130."""
    try:
        code = app(args=argv, prog_name="socialfeat", standalone_mode=False)
    except UserError as exc:
        err.print(one_line(f"error: {exc}"), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Interrupted as exc:
        err.print(one_line(f"interrupted: {exc.kept}"), markup=False, highlight=False, soft_wrap=True)
        sys.exit(130)
    except KeyboardInterrupt:  # before a command started (while parsing or importing)
        err.print("interrupted: nothing was written", markup=False)
        sys.exit(130)
    except _click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:  # a bare command: its help
            out.print(exc.ctx.get_help(), markup=False, highlight=False)
            sys.exit(2)
        err.print(one_line(f"error: {_usage_line(exc)}"), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except _click.ClickException as exc:
        err.print(one_line(f"error: {exc.format_message()}"), markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted", markup=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
