"""Memory checked before a large allocation, so that a setting too large for the machine is one line naming it —
not a numpy ``_ArrayMemoryError`` traceback after minutes of work, or the kernel's OOM killer.

Available memory is the kernel's estimate of what can be allocated without swapping (``MemAvailable`` in
``/proc/meminfo``), capped by the process's cgroup limit (a container's ``memory.max``) less what the cgroup
already uses. Where neither can be read (not Linux), nothing is checked.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from socialfeat.errors import UserError

GIB = 1024**3


def _meminfo_available() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _cgroup_room() -> int | None:
    """What the cgroup's limit leaves (cgroup v2, then v1); None without a limit."""
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            cap = Path(limit).read_text().strip()
            if cap == "max" or int(cap) >= 2**60:  # v1 says "no limit" with a huge number
                return None
            return max(0, int(cap) - int(Path(usage).read_text().strip()))
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None when the system does not say."""
    found = [m for m in (_meminfo_available(), _cgroup_room()) if m is not None]
    return min(found) if found else None


def size(n_bytes: float) -> str:
    """``37.3 GiB``, ``512 MiB``: a size as the messages give it."""
    return f"{n_bytes / GIB:,.1f} GiB" if n_bytes >= GIB else f"{n_bytes / 1024**2:,.0f} MiB"


def check_memory(need: int, where: str, what: str, advice: str) -> None:
    """Refuse with one line (``where``: the setting or file at fault) when ``need`` bytes exceed what is
    available: ``what`` says what needs them, ``advice`` what to lower."""
    room = available_memory()
    if room is not None and need > room:
        raise UserError(where, f"{what} need about {size(need)}, but {size(room)} is available; {advice}")
