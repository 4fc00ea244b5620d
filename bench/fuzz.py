"""Fuzz run: generated malformed inputs through the commands as a user runs them, judged by one checker.

Claim measured (issue 22): over ≥ 1,000 generated cases, 0 tracebacks and 0 half-written outputs — every case exits
0, or 2 with exactly one ``error:`` line, leaves its ``--out`` absent or complete and its inputs untouched, and every
explorer upload answers 2xx or a 4xx with a one-line JSON error, never 500. The strategies and the checker are
``tests/fuzzing.py``, the same ones ``tests/test_fuzz.py`` samples in the suite:

- ingest: interaction logs, item tables and comments in CSV/TSV/Parquet/JSON Lines with odd cells (non-finite and
  huge numbers, unicode, very long and mixed-type ids), dropped/renamed/duplicate columns, ragged rows, bad bytes
  (Latin-1, BOM, NUL, UTF-16), truncated and empty files, wrong extensions and --format;
- config: YAML files (unknown keys, wrong types, .nan/.inf, duplicate keys, alias bombs, broken syntax and bytes)
  and --set values;
- embed: ``embed RUN --images TABLE --out F.parquet`` over generated images (odd modes, formats, truncation,
  headers claiming 100000×100000, animated, EXIF) and odd paths;
- recommend: ``recommend RUN --image FILE`` with the same images;
- upload: POST /api/upload with the same images under odd names, content types, parameters and fields.

Runs in-process on a tiny run it trains first (~1 min). Hypothesis draws the cases from ``--seed``.

    python bench/fuzz.py                      # 1,250 cases
    python bench/fuzz.py --scale 0.1          # a quick look
    python bench/fuzz.py --only embed upload  # some commands
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from _results import hardware, record

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fuzzing import STRATEGIES, Outcome, run_cli, run_upload, tiny_run  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

DEFAULT_CASES = {"ingest": 400, "config": 250, "embed": 150, "recommend": 150, "upload": 300}
HALF_WRITTEN = ("incomplete", "leftovers", "inputs changed", "no output", "sidecar without")


def kind(problem: str) -> str:
    """traceback, half-written or message: what a broken promise was."""
    if problem.startswith(("traceback", "server error", "a traceback was printed")):
        return "traceback"
    if any(word in problem for word in HALF_WRITTEN):
        return "half-written"
    return "message"


def fuzz(command: str, n: int, base: Path, run: Path, client: object, rng_seed: int) -> list[Outcome]:
    """``n`` generated cases of one command; hypothesis only generates (a failure is recorded, never shrunk)."""
    outcomes: list[Outcome] = []

    @seed(rng_seed)
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(STRATEGIES[command]())
    def one(case) -> None:  # noqa: ANN001
        outcome = run_upload(case, client) if command == "upload" else run_cli(case, base, run)
        outcomes.append(outcome)
        if len(outcomes) % 50 == 0:
            print(f"  {command}: {len(outcomes)} cases", file=sys.stderr, flush=True)

    one()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(DEFAULT_CASES), default=list(DEFAULT_CASES))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every command's case count")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (failing cases are kept anyway)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not update RESULTS.md")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # library warnings about the odd inputs are expected; the checker judges

    from fastapi.testclient import TestClient

    from socialfeat.config import load_config
    from socialfeat.serve.app import create_app
    from socialfeat.serve.explorer import Explorer

    print(hardware())
    work = Path(tempfile.mkdtemp(prefix="socialfeat-fuzz-"))
    started = time.perf_counter()
    run = tiny_run(work / "tiny")
    client = TestClient(create_app(Explorer(load_config(None, []), run)))
    print(f"tiny run trained in {time.perf_counter() - started:.0f} s: {run}")
    rows, failures, totals = [], [], Counter()
    for command in args.only:
        n = max(1, round(DEFAULT_CASES[command] * args.scale))
        t0 = time.perf_counter()
        outcomes = fuzz(command, n, work, run, client, args.seed)
        seconds = time.perf_counter() - t0
        codes = Counter(o.code for o in outcomes)
        bad = [o for o in outcomes if not o.ok]
        kinds = Counter(kind(p) for o in bad for p in o.problems if not p.startswith("(inputs kept"))
        totals.update(cases=len(outcomes), failing=len(bad), **kinds)
        failures += bad
        shown = ", ".join(f"{c}: {k}" for c, k in sorted(codes.items(), key=lambda x: str(x[0])))
        rows.append(f"| {command} | {len(outcomes):,} | {shown} | {len(bad)} | {kinds['traceback']} | "
                    f"{kinds['half-written']} | {kinds['message']} | {seconds:.0f} |")  # fmt: skip
    table = [
        "| command | cases | exit codes (HTTP statuses for upload) | failing | tracebacks | half-written | "
        "message | s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
        *rows,
    ]
    lines = [*table, ""]
    lines.append(
        f"Total: {totals['cases']:,} cases, {totals['failing']} failing: {totals['traceback']} tracebacks, "
        f"{totals['half-written']} half-written outputs, {totals['message']} malformed messages (seed {args.seed})."
    )
    if failures:
        lines += ["", "Failures (input, then each broken promise):", ""]
        for o in failures:
            lines.append(f"- **{o.case.command}** `{o.case.summary[:300]}`")
            if o.case.argv:
                lines.append(
                    f"  - argv: `{' '.join(repr(a) if ' ' in a or not a.isprintable() else a for a in o.case.argv)[:300]}`"
                )
            lines += [f"  - {p[:400]}" for p in o.problems]
    body = "\n".join(lines) + "\n"
    print()
    print(body)
    if not failures and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder kept: {work}")
    if not args.no_record:
        record("fuzz run (bench/fuzz.py)", body)


if __name__ == "__main__":
    main()
