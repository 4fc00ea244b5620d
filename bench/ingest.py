"""Ingest + popularity-filter throughput and peak memory on synthetic power-law logs.

Claims measured (issue: ≥ 3M rows/s from CSV, ≥ 10M rows/s from Parquet, peak RSS < 2 GB at 50M rows):
each configuration runs `socialfeat ingest` in a fresh process (peak RSS from wait4), and in the
same run a bare DuckDB scan of the same file, so the printed ratio (ingest time / scan time) is
comparable across noisy machines. Results are written to bench/RESULTS.md with the hardware.

    python bench/ingest.py                 # 10M and 50M rows, CSV and Parquet
    python bench/ingest.py --rows 1000000  # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _platform import powerlaw_log
from _results import hardware, record, run_measured

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
TARGETS = {"csv": 3e6, "parquet": 10e6}
RSS_TARGET_GB = 2.0


def generate(rows: int, fmt: str) -> Path:
    """A log with power-law user activity and item popularity, 4 event kinds and epoch timestamps (cached)."""
    DATA.mkdir(exist_ok=True)
    path = DATA / f"log-{rows}.{fmt}"
    if path.exists():
        return path
    events = [("view", 80), ("like", 93), ("comment", 98), ("share", 100)]
    return powerlaw_log(path, rows, max(rows // 40, 10), max(rows // 150, 10), (2.2, 3.0), events, timestamps=True)


def bare_scan_cmd(path: Path, fmt: str) -> list[str]:
    reader = f"read_csv('{path}', header=true, all_varchar=true)" if fmt == "csv" else f"read_parquet('{path}')"
    sql = f"SELECT count(*), sum(length(CAST(user_id AS VARCHAR))), count(DISTINCT event) FROM {reader}"
    return [sys.executable, "-c", f"import duckdb; duckdb.sql({sql!r}).fetchall()"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 50_000_000])
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet"])
    parser.add_argument("--memory-limits", nargs="+", default=["1GB", "8GB"], help="DuckDB limits to compare")
    parser.add_argument("--no-record", action="store_true", help="print only; do not update RESULTS.md")
    args = parser.parse_args()

    lines = [
        "| rows | format | file | memory limit | ingest s | rows/s | target | peak RSS | bare scan s | ingest / scan |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print(hardware())
    for rows in args.rows:
        for fmt in args.formats:
            path = generate(rows, fmt)
            scan, _ = run_measured(bare_scan_cmd(path, fmt))
            for limit in args.memory_limits:
                with tempfile.TemporaryDirectory(dir=DATA) as tmp:
                    cmd = [sys.executable, "-m", "socialfeat", "ingest", "--interactions", str(path)]
                    cmd += ["--out", f"{tmp}/ds", "--set", f"ingest.memory_limit={limit}"]
                    wall, rss = run_measured(cmd)
                rate = rows / wall
                ok = "met" if rate >= TARGETS[fmt] else "missed"
                judged = rows >= 50_000_000 and limit == "1GB"  # the RSS target is for the default limit
                rss_ok = "" if not judged else (" (met)" if rss < RSS_TARGET_GB else " (missed)")
                size = path.stat().st_size / 1024**2
                line = (
                    f"| {rows:,} | {fmt} | {size:,.0f} MB | {limit} | {wall:.1f} | {rate / 1e6:.2f}M "
                    f"| {TARGETS[fmt] / 1e6:.0f}M {ok} | {rss:.2f} GB{rss_ok} | {scan:.1f} | {wall / scan:.1f}× |"
                )
                print(line, flush=True)
                lines.append(line)
    if not args.no_record:
        record_table("\n".join(lines))


def record_table(table: str) -> None:
    """The ingest section of RESULTS.md (the analysis below it, under its own heading, is kept)."""
    record(
        "ingest (bench/ingest.py)",
        "Each ingest runs in a fresh process: read, validate, aggregate to user–item pairs, popularity "
        "filter, write Parquet (sorted by user, item). *bare scan* reads the same file with DuckDB and nothing "
        "else. *memory limit* is `ingest.memory_limit` (DuckDB spills beyond it; 1GB is the default); the peak-RSS "
        f"target applies to the default.\n\n{table}\n",
    )


if __name__ == "__main__":
    main()
