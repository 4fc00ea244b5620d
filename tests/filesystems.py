"""Real file-system faults for tests: a small tmpfs of its own and an immutable folder (both need root).

Where the machine refuses either, the test skips through ``environment.need``; CI's switch makes that a failure."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from environment import need


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size`` (mount's syntax: 1m, 512k) for the duration; unmounted after."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    need(done.returncode == 0, f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@contextlib.contextmanager
def immutable(folder: Path) -> Iterator[Path]:
    """``folder`` with the immutable attribute: nothing in it can be renamed, even by root (needs chattr and root)."""
    folder.mkdir(parents=True, exist_ok=True)
    need(shutil.which("chattr"), "chattr is not installed (e2fsprogs)")
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    need(done.returncode == 0, f"chattr +i is refused here (needs root): {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
