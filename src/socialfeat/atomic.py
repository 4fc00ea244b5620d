"""Atomic outputs, and the one rule for where socialfeat may write.

Everything is written into a temporary sibling of the target first and renamed into place only when complete; an
existing previous output stays intact until then. A temporary sibling left by a killed process is removed by the
next write of the same target (its name carries the host and process id that made it).

**The ``--out`` rule** (:func:`claim_dir`, :func:`claim_file`; :func:`atomic_dir` applies it too): a command writes
into a new path, or replaces an earlier output *of the same kind* — recognised by the marker file socialfeat writes
into every folder it makes (``.socialfeat.json``), or for a file by what it holds. Never by file names: those are
the data contract's names too, and a user's project holds them. Anything else — a user's folder, the input itself,
a run root given where a dataset was meant, an output of a version before the marker — is refused with one line
naming the path and what is there, and left untouched. No flag deletes what socialfeat did not write.

A symbolic link given as the output is written through: the folder or file it points at is replaced, the link stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from socialfeat.errors import UserError, fixable_os_error

MARKER = ".socialfeat.json"  # inside every folder socialfeat writes: {"kind": ..., "written": ...}
STALE_TEMP_SECONDS = 24 * 3600  # a temporary sibling without a host/pid tag is swept once it is this old

# The stages whose provenance manifest (manifest.json) an output of a version before the marker holds: such a
# folder is never replaced (only the marker says what a folder is), but the refusal says how to proceed.
_PRE_MARKER_STAGES = ("ingest", "factorize", "targets", "train", "evaluate", "content")
# A run root holds these stage folders, each named after its kind; a run root given where one was meant gets a hint.
RUN_FOLDERS = ("dataset", "factors", "targets", "model", "eval")


# ---------------------------------------------------------------------------------------------------- the rule
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def own_kind(path: Path) -> str | None:
    """The kind a folder says it is in socialfeat's marker; None without one (file names never count)."""
    marker = _read_json(path / MARKER)
    if isinstance(marker, dict) and isinstance(marker.get("kind"), str):
        return marker["kind"]
    return None


def output_kind(path: Path) -> str | None:
    """The kind of socialfeat output a folder is, else None; a folder holding marked stage outputs is a ``run``."""
    kind = own_kind(path)
    if kind is not None:
        return kind
    if any(own_kind(path / kind) == kind for kind in RUN_FOLDERS):
        return "run"
    return None


def _pre_marker_stage(path: Path) -> str | None:
    """The stage named by the provenance manifest an unmarked folder holds (what versions before the marker
    wrote), else None. It only chooses the refusal's words: an unmarked folder is never replaced."""
    manifest = _read_json(path / "manifest.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("versions"), dict):
        return None
    stage = manifest.get("stage")
    return stage if stage in _PRE_MARKER_STAGES and "socialfeat" in manifest["versions"] else None


def _listing(path: Path, most: int = 4) -> str:
    names = []
    with contextlib.suppress(OSError):
        for i, entry in enumerate(sorted(os.scandir(path), key=lambda e: e.name)):
            if i == most:
                names.append("…")
                break
            names.append(entry.name + ("/" if entry.is_dir() else ""))
    return ", ".join(names)


def _same_or_inside(path: Path, folder: Path) -> bool:
    try:
        return path == folder or path.is_relative_to(folder)
    except ValueError:
        return False


def _check_inputs(target: Path, inputs: Iterable[str | os.PathLike[str] | None], flag: str) -> None:
    """The output may not be, or hold, one of the command's own inputs."""
    resolved = target.resolve()
    for given in inputs:
        if given is None:
            continue
        path = Path(given).resolve()
        if path == resolved:
            raise UserError(flag, f"{target} is the input {given}; nothing was changed: choose another output path")
        if _same_or_inside(path, resolved):
            raise UserError(flag, f"{target} holds the input {given}; nothing was changed: choose another output path")


def claim_dir(
    target: str | os.PathLike[str],
    kind: str,
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    flag: str | None = None,
) -> Path:
    """Check that ``target`` may become a ``kind`` folder: it is new, empty, or an earlier ``kind``; else raise
    one UserError naming what is there (and, for a run root given where its stage folder was meant, the path meant)."""
    target = Path(target)
    where = flag or str(target)
    through_link(target, kind, where)  # a link to nothing is refused here, before anything is made
    for parent in (target, *target.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == target else f"cannot hold it: {parent} is a file"
            raise UserError(where, f"{target} {what}; expected a folder for the {kind}; nothing was changed")
        if parent.exists():
            break
    _check_inputs(target, inputs, where)
    if not target.is_dir():
        return target
    try:
        empty = not any(os.scandir(target))
    except OSError as e:
        raise UserError(where, f"{target} cannot be read ({e.strerror}); nothing was changed") from None
    if empty:
        return target
    found = output_kind(target)
    if found == kind:
        return target
    if found == "run" and kind in RUN_FOLDERS:
        hint = f"; did you mean {target / kind}?"
        raise UserError(where, f"{target} is a run folder, not a {kind}; it was left untouched{hint}")
    stage = None if found else _pre_marker_stage(target)
    if stage is not None:
        raise UserError(
            where,
            f"{target} holds the {stage} output of a socialfeat older than its marker ({MARKER}); it was left "
            f"untouched: socialfeat replaces only marked outputs; move or delete that folder by hand, then rerun",
        )
    what = (
        f"holds a socialfeat {found}"
        if found
        else f"is a non-empty folder socialfeat did not write ({_listing(target)})"
    )
    raise UserError(
        where,
        f"{target} {what}; it was left untouched: the output goes into a new or empty folder, "
        f"or replaces an earlier {kind}",
    )


def claim_file(
    target: str | os.PathLike[str],
    kind: str,
    *,
    suffixes: tuple[str, ...],
    ours: Callable[[Path], bool],
    sidecars: tuple[Path, ...] = (),
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    flag: str | None = None,
) -> Path:
    """Check that ``target`` (and its sidecar files) may be written as a ``kind``: the suffix fits, and every one
    of them is new or an earlier socialfeat output (``ours``); else one UserError, and nothing is touched."""
    target = Path(target)
    where = flag or str(target)
    if target.suffix.lower() not in suffixes:
        raise UserError(where, f"expected a {' or '.join(suffixes)} file name for the {kind}, got '{target.name}'")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(where, f"{target} cannot be written: {parent} is a file, expected a folder")
        if parent.exists():
            break
    _check_inputs(target, inputs, where)
    for path in (target, *sidecars):
        if path.is_dir():
            raise UserError(where, f"{path} is a folder; expected a file name for the {kind}; nothing was changed")
        if path.exists() and not ours(path):
            raise UserError(
                where,
                f"{path} exists and is not a socialfeat {kind}; it was left untouched: choose a new file name",
            )
    return target


def _marker(kind: str) -> dict[str, Any]:
    from socialfeat import __version__

    return {"kind": kind, "socialfeat": __version__, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def mark(folder: str | os.PathLike[str], kind: str) -> None:
    """Write the marker that makes ``folder`` recognisable as a socialfeat ``kind`` (e.g. a run root)."""
    folder = Path(folder)
    if own_kind(folder) != kind:
        write_json(folder / MARKER, _marker(kind))


# ---------------------------------------------------------------------------------------------------- temporaries
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(name: str, what: str = "tmp") -> str:
    """``.NAME.tmp-HOST-PID-``: who made a temporary, so the next writer can tell a dead one from a busy one."""
    return f".{name}.{what}-{_host_tag()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings of ``target`` that a killed process left (this host's, by a process that no
    longer runs; an untagged one from an older version once it is a day old). Returns what was removed."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(?:([0-9a-f]{{8}})-(\d+)-)?")
    host, now, removed = _host_tag(), time.time(), []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            if m.group(2) is not None:
                dead = m.group(2) == host and not _alive(int(m.group(3)))
            else:
                dead = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
        except OSError:
            continue
        if dead:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------------- writers
def _missing_parents(path: Path) -> list[Path]:
    """Parents of ``path`` that do not exist yet, deepest first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _umask_mode(mode: int) -> int:
    """``mode`` less the process umask: temp files are private until they are renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def atomic_dir(
    target: str | os.PathLike[str], kind: str, *, inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` when the block succeeds.

    ``target`` must pass :func:`claim_dir` for ``kind`` (new, empty or an earlier ``kind``); the new folder gets
    the marker that says so. On an exception the temporary directory (and any parent folders this call created)
    is removed and ``target`` is left exactly as it was.
    """
    given = target
    target = through_link(Path(target).absolute(), kind, str(given))
    if target != Path(given).absolute():
        given = target  # a fault is then in the folder the link points at: named as such
    claim_dir(target, kind, inputs=inputs)
    created = _missing_parents(target)
    tmp = None
    try:
        with _fixable(given):
            target.parent.mkdir(parents=True, exist_ok=True)
            sweep_temporaries(target)
            tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name), dir=target.parent))
        with _fixable(given):
            yield tmp
            write_json(tmp / MARKER, _marker(kind))
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    with _fixable(given):
        _swap_in(tmp, target, created)


def through_link(target: Path, kind: str, where: str | None = None) -> Path:
    """The path to write for ``target``: a symbolic link is written through (the folder it points at is what is
    replaced, and the link stays); a link to nothing is refused, since where it points may be a typo."""
    if not target.is_symlink():
        return target
    real = Path(os.path.realpath(target))
    if not real.exists():
        named = "" if where is None or where == str(target) else f"{target} "
        raise UserError(
            where or str(target),
            f"{named}is a symbolic link to {real}, which does not exist; nothing was changed: "
            f"create that folder for the {kind}, or give the folder itself",
        )
    return real


def _swap_in(tmp: Path, target: Path, created: list[Path]) -> None:
    """Rename the finished ``tmp`` into place: the previous ``target`` is moved aside first and removed after.

    If a rename fails (an immutable folder, a file system gone read-only), the previous output is moved back and
    both temporaries are removed, so what the error says — nothing half-written was kept — holds."""
    old = None
    try:
        os.chmod(tmp, _umask_mode(0o777))
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name, "old"), dir=target.parent))
            os.replace(target, old / "content")
        os.replace(tmp, target)
    except BaseException:
        kept = old is not None and (old / "content").exists()
        if kept and not target.exists():
            with contextlib.suppress(OSError):
                os.replace(old / "content", target)
                kept = False
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not kept:  # never remove the previous output while it is only there
            shutil.rmtree(old, ignore_errors=True)
        _remove_empty(created)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _fixable(target: str | os.PathLike[str]) -> Iterator[None]:
    """A file-system fault the user can fix (permission, read-only, full disk, file too large) becomes one
    UserError; one in ``target``'s temporary sibling (or its folder) names ``target``, the path the user gave, not
    the temporary the OS saw; one in another file (an input that cannot be read) names that file."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        user = fixable_os_error(exc)
        if user is None:
            raise
        temp = str(Path(target).absolute().parent / f".{Path(target).name}.")
        ours = (Path(target).absolute(), Path(target).absolute().parent)
        if user.where == "output" or user.where.startswith(temp) or Path(user.where) in ours:
            user = fixable_os_error(exc, target)
        raise user from exc


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str], mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``target`` for writing; rename it into place on success."""
    target = Path(target)
    if target.is_symlink():  # written through: the file it points at is replaced, and the link stays
        target = Path(os.path.realpath(target))
    with _fixable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(target)
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target.name), dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _fixable(target), open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with _fixable(target):
            os.chmod(tmp, _umask_mode(0o666))
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically; a value that is not a finite number is written as null."""
    from socialfeat.jsonio import dumps

    text = dumps(obj, indent=2, sort_keys=False)
    with atomic_file(path) as fh:
        fh.write(text + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_file(path) as fh:
        fh.write(text)
