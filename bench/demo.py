"""The demo end to end: ``socialfeat demo`` in a fresh folder, as a user would run it, timed per stage.

Target: the whole demo (simulate → ingest → factorize → targets → train → embed ×3 → index → content → evaluate
→ transfer → report) in at most 300 s. The command runs as a child process (imports and start-up count); per-stage
seconds come from the pipeline's records (``RUN/.pipeline/<stage>.json``). Recorded in bench/RESULTS.md with the
hardware.

    python bench/demo.py                      # full size (the values of configs/demo.yaml), recorded
    python bench/demo.py --small --no-record  # the test-size demo, a smoke test of this script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import record  # noqa: E402

from socialfeat.pipeline import STAGES, headline  # noqa: E402

TARGET_S = 300.0


def device() -> str:
    """What training and embedding ran on: the first CUDA GPU, else the CPU."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no GPU)"


def run_demo(out: Path, small: bool, overrides: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) and stdout of ``socialfeat demo --out OUT`` in a child process."""
    cmd = [sys.executable, "-m", "socialfeat", "demo", "--out", str(out)]
    cmd += ["--small"] if small else []
    for item in overrides:
        cmd += ["--set", item]
    log_out, log_err = out.parent / "stdout.txt", out.parent / "stderr.txt"
    started = time.perf_counter()
    with open(log_out, "wb") as so, open(log_err, "wb") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}\n{log_err.read_text()[-3000:]}")
    return wall, usage.ru_maxrss / 1024**2, log_out.read_text()


def stage_seconds(run: Path) -> list[tuple[str, float, dict[str, float]]]:
    """(stage, seconds, sub-steps) from the pipeline's records, in pipeline order."""
    rows = []
    for stage in STAGES:
        marker = run / ".pipeline" / f"{stage}.json"
        if marker.is_file():
            m = json.loads(marker.read_text())
            rows.append((stage, float(m["seconds"]), m.get("steps", {})))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the test-size demo (seconds, not minutes)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the run folder and print where it is")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to the demo")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="socialfeat-demo-bench-"))
    run = tmp / "demo"
    try:
        wall, rss, stdout = run_demo(run, args.small, args.set)
        stages = stage_seconds(run)
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(stdout.rstrip())
    print()
    width = max(len(s) for s in STAGES)
    for stage, seconds, steps in stages:
        detail = "  (" + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()) + ")" if steps else ""
        print(f"  {stage:<{width}}  {seconds:7.1f} s{detail}")
    in_stages = sum(s for _, s, _ in stages)
    met = "met" if wall <= TARGET_S else "missed"
    print(f"  {'stages':<{width}}  {in_stages:7.1f} s")
    print(f"  {'total':<{width}}  {wall:7.1f} s  (target ≤ {TARGET_S:.0f} s: {met}; peak RSS {rss:.2f} GB)")
    if args.no_record:
        return

    size = "test size (--small)" if args.small else "full size (configs/demo.yaml)"
    lines = [
        f"`socialfeat demo`, {size}, in a fresh folder as a child process; device: {device()}.",
        "Seconds per stage from the pipeline's records; the total is the wall time of the whole command "
        "(Python start-up and imports included).",
        "",
        "| stage | seconds | detail |",
        "|---|---:|---|",
        *(
            f"| {stage} | {seconds:.1f} | {', '.join(f'{k} {v:.1f} s' for k, v in steps.items())} |"
            for stage, seconds, steps in stages
        ),
        f"| **total** | **{wall:.1f}** | target ≤ {TARGET_S:.0f} s: {met}; peak RSS {rss:.2f} GB |",
        "",
        "Headline (cold items never trained on): cold-start AUC, retrieval lift, taste-attribute probe accuracy.",
        "",
        "| features | cold-start AUC | retrieval lift | taste probe |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['name']} | {_fmt(r['auc'], 3)} | {_fmt(r['lift'], 2)} | {_fmt(r['taste_probe'], 3)} |"
            for r in headline(metrics)
        ),
    ]
    record("Demo end to end" + (" (--small)" if args.small else ""), "\n".join(lines) + "\n")


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
