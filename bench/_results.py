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


# The stage section (a ``## `` heading of RESULTS.md) that a new recorded section joins, by words of its heading:
# the first match wins. A heading that matches none goes before the archive link, as a section of its own.
STAGES = (
    (("live catalogue", "fresh content", "bench/live.py", "bench/fresh.py"), "Live catalogue"),
    (
        ("every stage at scale", "image side", "bench/scale.py", "bench/image_scale.py", "bench/e2e.py"),
        "Every stage at scale",
    ),
    (("fuzz",), "Fuzz"),
    (("demo", "simulate"), "Demo and simulator"),
    (("ingest",), "Ingest"),
    (("factorize",), "Factorize"),
    (("targets",), "Targets"),
    (("train", "fine-tuning"), "Train"),
    (("embed",), "Embed"),
    (("web explorer", "serve"), "Serve"),
    (("content", "hybrid"), "Content"),
    (("evaluate", "cold start", "data-scale"), "Evaluate"),
)
ARCHIVE = "Archive"  # the last section: the link to the dated archive of figures that no longer describe the code
_HEADING = re.compile(r"(#{2,6}) (.+)")


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line, level, title) of every heading of level 2 or more outside code fences."""
    found, fence = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and (m := _HEADING.fullmatch(line.rstrip())):
            found.append((i, len(m[1]), m[2].strip()))
    return found


def _shifted(body: str, by: int) -> list[str]:
    """The body's lines with its own headings moved ``by`` levels down: a body written under ``##`` placed lower."""
    lines = body.rstrip("\n").splitlines()
    for i, _, _ in _headings(lines) if by else ():
        lines[i] = "#" * by + lines[i]
    return lines


def _stage(heading: str) -> str | None:
    low = heading.lower()
    return next((stage for words, stage in STAGES if any(w in low for w in words)), None)


def record(heading: str, body: str) -> None:
    """Replace the section titled ``heading`` in RESULTS.md, dated, with the hardware; or add it.

    A section is found at whatever level it sits and replaced in place, its body's headings moved to fit. A new one
    goes first under its stage's ``##`` section (:data:`STAGES`: newest first), else before the archive link.
    Headings stay unique: a heading that is there is replaced, never added twice."""
    section = f"Measured {time.strftime('%Y-%m-%d')} on {hardware()}.\n\n{body}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = text.rstrip("\n").splitlines()
    heads = _headings(lines)
    at = next(((i, level) for i, level, title in heads if title == heading), None)
    if at is not None:
        start, level = at
        end = next((j for j, lv, _ in heads if j > start and lv <= level), len(lines))
    else:
        stage = next((i for i, lv, title in heads if lv == 2 and title == _stage(heading)), None)
        if stage is not None:  # before the stage's first subsection, or the next stage when it has none
            level = 3
            start = end = next((j for j, lv, _ in heads if j > stage and lv <= 3), len(lines))
        else:
            level = 2
            start = end = next((i for i, lv, title in heads if lv == 2 and title == ARCHIVE), len(lines))
    new = ["#" * level + " " + heading, "", *_shifted(section, level - 2), ""]
    if start == len(lines) and lines and lines[-1].strip():
        new.insert(0, "")
    lines[start:end] = new
    tmp = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp.write_text("\n".join(lines).rstrip("\n") + "\n")
    os.replace(tmp, RESULTS)  # atomic: a reader never sees half a file
    print(f"recorded in {RESULTS}")


def summary(claim: str, figure: str, target: str, command: str, after: str = "") -> None:
    """Set the row of RESULTS.md's summary table whose claim is ``claim``, dated today; or add it after the last
    row whose claim starts with ``after`` (at the end when none does).

    Rows that no script writes stay as they were: the rest of the table is kept by hand."""
    lines = RESULTS.read_text().rstrip("\n").splitlines()
    heads = _headings(lines)
    at = next((i for i, lv, title in heads if lv == 2 and title == "Summary"), None)
    if at is None:
        raise SystemExit(f"{RESULTS} has no '## Summary' section")
    end = next((j for j, lv, _ in heads if j > at and lv <= 2), len(lines))
    table = [i for i in range(at, end) if lines[i].startswith("|")]
    if len(table) < 2:
        raise SystemExit(f"{RESULTS}: the summary section has no table")
    row = f"| {claim} | {figure} | {target} | {command} | {time.strftime('%Y-%m-%d')} |"
    same = next((i for i in table[2:] if lines[i].split("|")[1].strip() == claim), None)
    if same is not None:
        lines[same] = row
    else:
        near = [i for i in table[2:] if after and lines[i].split("|")[1].strip().startswith(after)]
        lines.insert((near or table)[-1] + 1, row)
    tmp = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, RESULTS)


def exponent(a: float, b: float, size_a: int, size_b: int) -> float:
    """Growth exponent between two sizes: time or memory ∝ size^exponent (1 = linear)."""
    return math.log(b / a) / math.log(size_b / size_a)
