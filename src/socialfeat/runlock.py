"""One writer per run folder: a run-level lock, so that two processes never write one run at once.

A command that writes into a run takes ``RUN/.socialfeat.lock`` with ``flock`` and writes its PID and command line
into it; a second writer finds it held and refuses with one line naming that PID. The kernel drops a ``flock`` when
its process ends, so a killed process never leaves the run locked. Read-only commands (``similar``, ``recommend``,
``serve``) take no lock and work meanwhile. The lock is re-entrant within a process: ``run`` calls the stages, and
each stage takes the lock its caller already holds. Under torchrun only rank 0 takes it: the ranks are one writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from socialfeat.errors import UserError

log = logging.getLogger(__name__)

LOCK = ".socialfeat.lock"
_READ_TRIES = 20  # a holder writes its PID just after it takes the lock: wait up to ~0.2 s to read it

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class _Held:
    fd: int
    path: Path
    depth: int = 1


@dataclass
class _Scope:
    taken: list[Path] = field(default_factory=list)


_held: dict[Path, _Held] = {}
_scopes: list[_Scope] = []


def _rank_zero() -> bool:
    """Whether this process is the one writer of its job: always, except a torchrun rank other than 0."""
    return os.environ.get("RANK", "0") == "0"


def _command() -> str:
    """The command line that holds the lock, as the user typed it (``socialfeat train runs/r5``)."""
    argv = list(sys.argv) or ["socialfeat"]
    first = Path(argv[0])
    name = (
        "socialfeat" if first.name in ("__main__.py", "socialfeat") else "python -c" if argv[0] == "-c" else first.name
    )
    return " ".join([name, *argv[1:]])


def _holder(fd: int) -> dict[str, Any]:
    """What the process holding the lock wrote into it (PID, host, command, since); {} if it wrote nothing yet."""
    for _ in range(_READ_TRIES):
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            found = json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            found = None
        if isinstance(found, dict):
            return found
        time.sleep(0.01)
    return {}


def _busy(run: Path, holder: dict[str, Any]) -> UserError:
    pid = holder.get("pid", "unknown")
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    what = f" ({holder['command']}, since {holder.get('since', '?')})" if holder.get("command") else ""
    return UserError(
        str(run),
        f"in use by another socialfeat process, PID {pid}{where}{what}; nothing was changed: "
        "one process writes a run at a time; wait for it to finish (or stop it), then rerun",
    )


def _acquire(run: Path, shown: Path) -> _Held | None:
    """Take ``run``'s lock (non-blocking), or raise the one-line UserError naming the holder. None where the run
    folder cannot hold a lock file (read-only, no permission): the stage's own first write then says why."""
    path = run / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
                return None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _busy(shown, holder) from None
        except OSError as e:  # a file system without locks (some network mounts): go on, and say so
            os.close(fd)
            log.warning("%s cannot be locked (%s): nothing stops a second process writing this run", path, e.strerror)
            return None
        # the last holder unlinks the file as it lets go: a lock on an unlinked file would guard nothing
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
    return _Held(fd, path)


def _release(held: _Held) -> None:
    """Unlink the lock file while still holding it, then let go: nothing is left in the run."""
    with contextlib.suppress(OSError):
        held.path.unlink()
    with contextlib.suppress(OSError):
        fcntl.flock(held.fd, fcntl.LOCK_UN)
    os.close(held.fd)


def _key(run: str | os.PathLike[str]) -> Path:
    return Path(run).resolve()


def take(run: str | os.PathLike[str]) -> None:
    """Hold ``run``'s lock until the innermost :func:`writes_run` function returns (re-entrant). A missing run
    folder takes no lock: there is nothing to guard yet, and the stage says what is missing."""
    if not _scopes:
        raise RuntimeError("runlock.take outside a @writes_run function")
    if not _rank_zero() or not Path(run).is_dir():
        return
    key = _key(run)
    if key in _held:
        _held[key].depth += 1
    else:
        held = _acquire(key, Path(run))
        if held is None:
            return
        _held[key] = held
    _scopes[-1].taken.append(key)


def _let_go(key: Path) -> None:
    held = _held[key]
    held.depth -= 1
    if held.depth == 0:
        del _held[key]
        _release(held)


@contextlib.contextmanager
def locked(run: str | os.PathLike[str]) -> Iterator[None]:
    """``run``'s lock for the duration of the block (re-entrant within this process)."""
    with _scope():
        take(run)
        yield


@contextlib.contextmanager
def _scope() -> Iterator[None]:
    scope = _Scope()
    _scopes.append(scope)
    try:
        yield
    finally:
        _scopes.remove(scope)
        for key in reversed(scope.taken):
            _let_go(key)


def writes_run(where: str | Callable[..., Any] = "run") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a stage that writes into a run folder: it holds the run's lock while it runs.

    ``where`` is the parameter that holds the run folder, or a function of the stage's arguments (a dict by name,
    defaults filled in) that returns the run folder it writes, or None when it writes none. The stage may also
    call :func:`take` later, once it has made its run folder."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        import inspect

        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def stage(*args: P.args, **kwargs: P.kwargs) -> R:
            with _scope():
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                run = where(bound.arguments) if callable(where) else bound.arguments[where]
                if run is not None:
                    take(run)
                return fn(*args, **kwargs)

        return stage

    return decorate


def inside(path: str | os.PathLike[str] | None, run: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (an output; None means the stage's default, which is in the run) lies in ``run``."""
    if path is None:
        return True
    try:
        return Path(path).resolve().is_relative_to(Path(run).resolve())
    except (OSError, ValueError):
        return False


def run_holding(out: str | os.PathLike[str]) -> Path | None:
    """The run an output folder goes into (``RUN/dataset``: its parent, when that is a marked run), else None."""
    from socialfeat.atomic import output_kind

    parent = Path(out).absolute().parent
    return parent if parent.is_dir() and output_kind(parent) == "run" else None
