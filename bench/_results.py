"""What every benchmark shares: the hardware line, child-process measurement, and RESULTS.md sections."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import duckdb

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def hardware() -> str:
    """CPU model, cores, memory and key versions: what RESULTS.md says each figure was measured on."""
    cpu = "unknown CPU"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())[1]  # type: ignore[index]
    except (OSError, TypeError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, duckdb {duckdb.__version__}"


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024**2  # KB → GB


def record(heading: str, body: str) -> None:
    """Replace (or append) the section under ``## heading`` in RESULTS.md, dated, with the hardware."""
    title = f"## {heading}"
    section = f"{title}\n\nMeasured {time.strftime('%Y-%m-%d')} on {hardware()}.\n\n{body}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(title) + r".*?(?=\n## |\Z)", re.S)
    # a function, not a string: the section's own backslashes stay as written; "\n" keeps the blank line before the
    # next heading
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n")
    print(f"recorded in {RESULTS}")


def exponent(a: float, b: float, size_a: int, size_b: int) -> float:
    """Growth exponent between two sizes: time or memory ∝ size^exponent (1 = linear)."""
    return math.log(b / a) / math.log(size_b / size_a)
