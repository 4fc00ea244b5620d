"""What the CLI turns into one line instead of a traceback: user mistakes (exit 2), faults of the machine the user
can fix (exit 2), and interrupts (exit 130)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import threading
from collections.abc import Iterator


class UserError(Exception):
    """A mistake in the user's input, config or flags — not a bug.

    ``where`` names the file or option at fault, ``message`` says what was expected.
    The CLI prints ``error: <where>: <message>`` without a traceback.
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = str(where)
        self.message = message


class Interrupted(BaseException):
    """Ctrl-C, carried past typer (which would turn it into a silent exit 130) with what was kept.

    A BaseException like KeyboardInterrupt, so that every ``except Exception`` lets it through and every atomic
    writer still removes its temporary output on the way out.
    """

    def __init__(self, kept: str = "nothing was written; earlier outputs are as they were") -> None:
        super().__init__(kept)
        self.kept = kept


# Faults of the file system a user can fix, as the OS words them (strerror) → what to do.
FIXABLE = {
    errno.EACCES: "check the folder's permissions or choose another path",
    errno.EPERM: "check the folder's permissions or attributes (chattr) or choose another path",
    errno.EROFS: "choose a path on a writable file system",
    errno.ENOSPC: "free some space or choose a path on another disk",
    errno.EDQUOT: "free some space or choose a path on another disk",
    errno.EFBIG: "the file system or a limit (ulimit -f) refuses a file this large; choose another path or raise it",
}


def fixable_os_error(exc: BaseException, path: object = None) -> UserError | None:
    """The one-line UserError for a fault the user can fix (permission denied, read-only file system, no space
    left, file too large), from an OSError or from a library (DuckDB, Arrow) that words the same fault in its own
    exception; None for anything else, which keeps its traceback. ``path`` names the output the user gave (else
    the file the error names)."""
    code = None
    if isinstance(exc, OSError) and exc.errno in FIXABLE:
        code, path = exc.errno, path or exc.filename
    elif isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb", "pyarrow"):
        text = str(exc).lower()
        code = next((c for c in FIXABLE if errno_text(c).lower() in text), None)
        if path is None and code is not None:
            quoted = re.search(r'"(/[^"]+)"', str(exc))  # DuckDB quotes the file it could not write
            path = quoted.group(1) if quoted else None
    if code is None:
        return None
    what = f"{errno_text(code).lower()}; nothing half-written was kept"
    return UserError(str(path) if path else "output", f"{what}: {FIXABLE[code]}")


def errno_text(code: int) -> str:
    """The OS's words for an error number ("No space left on device"), as libraries quote them."""
    return os.strerror(code)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (and SIGALRM, which timeouts raise through) while the process forks, then deliver it.

    A KeyboardInterrupt raised inside fork's own callbacks (logging's after-fork lock release) is printed as
    "Exception ignored" with a traceback, and the Ctrl-C is lost. Meanwhile a handler only notes the signal; once
    the fork is done the usual handler is back and the signal is raised again. (A thread's signal mask would not
    do: the kernel may hand the signal to another thread, and Python runs its handler in the main thread anyway.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def note(signum: int, _frame: object) -> None:
        held.append(signum)

    kinds = (signal.SIGINT, signal.SIGALRM)
    old = {kind: signal.signal(kind, note) for kind in kinds}
    try:
        yield
    finally:
        for kind, handler in old.items():
            signal.signal(kind, handler)
        for kind in dict.fromkeys(held):
            signal.raise_signal(kind)
