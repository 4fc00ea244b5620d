"""Factorize benchmarks: overhead over a bare implicit fit, Behance-scale memory, Spark vs local.

    python bench/factorize.py overhead   # 300K users × 400K items, 20M pairs: whole `factorize` / bare fit
    python bench/factorize.py scale      # 200M events through ingest + filter + factorize: time, peak RSS
    python bench/factorize.py spark      # MovieLens: Spark MLlib vs implicit, seconds per iteration

Each part runs its commands in fresh processes (peak RSS from wait4) and records a section in
bench/RESULTS.md with the hardware. Ratios are measured within one run, so noisy machines compare fairly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
MOVIELENS = HERE.parent.parent / "shared" / "data" / "movielens-1m"
sys.path.insert(0, str(HERE))
from _platform import powerlaw_dataset, powerlaw_log  # noqa: E402
from _results import hardware, record, run_measured  # noqa: E402

BARE_FIT = """
import sys, time, numpy as np, pyarrow.parquet as pq, scipy.sparse as sp
from threadpoolctl import threadpool_limits
from implicit.cpu.als import AlternatingLeastSquares
t = pq.read_table(sys.argv[1] + "/dataset/interactions.parquet")
n_u, n_i = pq.read_metadata(sys.argv[1] + "/dataset/users.parquet").num_rows, pq.read_metadata(sys.argv[1] + "/dataset/items.parquet").num_rows
c = sp.csr_matrix((1 + 10 * t["weight"].to_numpy(), (t["user_idx"].to_numpy(), t["item_idx"].to_numpy())), shape=(n_u, n_i), dtype=np.float32)
with threadpool_limits(1, "blas"):
    model = AlternatingLeastSquares(factors=64, regularization=20.0, alpha=1.0, iterations=15, random_state=0)
    start = time.perf_counter(); model.fit(c, show_progress=False); print(time.perf_counter() - start)
"""


def overhead(args: argparse.Namespace) -> str:
    run = DATA / "factorize-overhead"
    if not (run / "dataset" / "interactions.parquet").exists():
        powerlaw_dataset(run, 300_000, 400_000, args.pairs)
    pairs = pq.read_metadata(run / "dataset" / "interactions.parquet").num_rows
    cmd = [
        sys.executable,
        "-m",
        "socialfeat",
        "factorize",
        str(run),
        "--no-evaluate",
        "--factors",
        "64",
        "--iterations",
        "15",
        "--reg",
        "20",
        "--alpha",
        "10",
    ]
    whole, rss = run_measured(cmd)
    out = subprocess.run([sys.executable, "-c", BARE_FIT, str(run)], capture_output=True, text=True, check=True)
    bare = float(out.stdout.strip().splitlines()[-1])
    ratio = whole / bare
    return (
        f"300,000 users × 400,000 items, {pairs:,} pairs, 64 factors, 15 iterations, CPU.\n\n"
        "| whole `socialfeat factorize --no-evaluate` | bare `implicit` fit | ratio | target | peak RSS |\n"
        "|---:|---:|---:|---:|---:|\n"
        f"| {whole:.1f} s | {bare:.1f} s | {ratio:.2f} | ≤ 1.25: {'met' if ratio <= 1.25 else 'missed'} | {rss:.2f} GB |\n"
    )


def scale(args: argparse.Namespace) -> str:
    """Behance's order of magnitude: views and appreciations of ~2M users on ~2M items."""
    rows = args.events
    log = DATA / f"behance-{rows}.parquet"
    if not log.exists():
        powerlaw_log(log, rows, 1_900_000, 1_900_000, (2.0, 2.6), [("appreciate", 148), ("view", 1000)], out_of=1000)
    lines = ["| stage | wall | peak RSS |", "|---|---:|---:|"]
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        steps = [
            (
                "ingest + filter",
                [
                    sys.executable,
                    "-m",
                    "socialfeat",
                    "ingest",
                    "--interactions",
                    str(log),
                    "--out",
                    f"{tmp}/dataset",
                    "--event-weight",
                    "appreciate=4",
                ],
            ),
            (
                "factorize (held-out fit + metrics + final fit)",
                [sys.executable, "-m", "socialfeat", "factorize", tmp, "--iterations", "15", "--factors", "64"],
            ),
        ]
        peak = 0.0
        for name, cmd in steps:
            wall, rss = run_measured(cmd)
            peak = max(peak, rss)
            lines.append(f"| {name} | {wall:.0f} s | {rss:.2f} GB |")
            print(lines[-1], flush=True)
        stats = json.loads(Path(f"{tmp}/dataset/stats.json").read_text())
        metrics = json.loads(Path(f"{tmp}/factors/metrics.json").read_text())
    h = metrics["heldout"]
    return (
        f"{rows:,} synthetic events: appreciations 14.8%, views the rest.\n"
        "User and item ids are drawn independently from power laws over 1.9M ids each (bench/_platform.py's DuckDB "
        "log).\nSo the log has popularity but no taste structure: a scale test, not a quality test.\n"
        f"It holds {stats['before']['pairs']:,} user–item pairs, {stats['after']['pairs']:,} after filtering "
        f"({stats['after']['users']:,} users × {stats['after']['items']:,} items).\n\n"
        + "\n".join(lines)
        + f"\n\nPeak RSS {peak:.2f} GB (target ≤ 16 GB: {'met' if peak <= 16 else 'missed'}).\n"
        "Ingest streams the log through DuckDB; factorize loads only the pair arrays.\n"
        f"Held-out recall@{h['k']} has no structure to find, so popularity should win: model "
        f"{h['model']['recall']:.3f}, popularity {h['popularity']['recall']:.3f}.\n"
    )


SPARK_VS_LOCAL = """
import sys, time, numpy as np, pyarrow.csv as pv, scipy.sparse as sp
from socialfeat.config import FactorizeConfig
from socialfeat.factorize import create_factorizer
t = pv.read_csv(sys.argv[1])
u, i = t["user_id"].to_numpy(), t["item_id"].to_numpy()
_, u = np.unique(u, return_inverse=True); _, i = np.unique(i, return_inverse=True)
c = sp.csr_matrix((np.full(len(u), 11, np.float32), (u, i)))
out = {}
for backend in ("local", "spark"):
    f = create_factorizer(FactorizeConfig(backend=backend, factors=64, iterations=15, regularization=20.0), 0)
    f.fit(c)  # warm-up: JVM start, JIT
    start = time.perf_counter(); f.fit(c); out[backend] = (time.perf_counter() - start) / 15
print(out["local"], out["spark"])
"""


def spark(args: argparse.Namespace) -> str:
    res = subprocess.run(
        [sys.executable, "-c", SPARK_VS_LOCAL, str(MOVIELENS / "interactions.csv")],
        capture_output=True,
        text=True,
        check=True,
    )
    local, spark_s = (float(x) for x in res.stdout.strip().splitlines()[-1].split())
    return (
        "MovieLens-1M (6,018 users × 2,970 items, 919,961 pairs), 64 factors, 15 iterations; second fit timed "
        "(JVM started). Spark runs `local[*]`.\n\n| implicit (local) | Spark MLlib | Spark / local |\n|---:|---:|---:|\n"
        f"| {local * 1000:.0f} ms/iteration | {spark_s * 1000:.0f} ms/iteration | {spark_s / local:.1f}× |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["overhead", "spark", "scale"])
    parser.add_argument("--pairs", type=int, default=20_000_000)
    parser.add_argument("--events", type=int, default=200_000_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    print(hardware())
    for part in args.parts:
        body = {"overhead": overhead, "scale": scale, "spark": spark}[part](args)
        print(body, flush=True)
        if not args.no_record:
            record(f"factorize {part} (bench/factorize.py {part})", body)


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
