"""The content model's joint ridge search (``socialfeat content``): how long it takes, and why it runs under one BLAS
thread. The search is many Cholesky factorisations of a few thousand columns plus a valid-AUC ranking per trial;
on 2 cores, BLAS threads in each factorisation mostly add contention, and with another process busy on the cores
they stall. Each setting is timed on the same blocks, alternating, in one run; the figure that compares is the ratio.

    socialfeat run configs/movielens.yaml              # first: a run with factors/, features/ and dataset/
    python bench/content_joint.py --run runs/movielens
    python bench/content_joint.py --run runs/movielens --busy   # with a second process spinning BLAS on both cores
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import record  # noqa: E402

from socialfeat.config import load_config  # noqa: E402
from socialfeat.content import JointFitter, image_block, item_blocks  # noqa: E402
from socialfeat.measures.coldstart import fit_ridge_map, load_coldstart, sampled  # noqa: E402


def _spin(seconds: float) -> None:
    """Another job on the machine: matrix products on every core for ``seconds``."""
    a = np.random.default_rng(0).normal(size=(1500, 1500))
    end = time.time() + seconds
    while time.time() < end:
        a @ a


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/movielens"))
    parser.add_argument("--config", type=Path, default=Path("configs/movielens.yaml"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--busy", action="store_true", help="time it beside a process that keeps both cores busy")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    cfg = load_config(str(args.config), [])
    data = sampled(load_coldstart(args.run), cfg.evaluate.users, cfg.evaluate.valid_users, cfg.seed)  # as the stage
    blocks, _ = item_blocks(cfg, args.run, data, lambda _m: None)
    learned = image_block(args.run, "learned", data)
    if learned is None:
        raise SystemExit(f"{args.run} has no features/learned.parquet; run `socialfeat embed {args.run}` first")
    blocks.insert(0, learned)
    lambdas = sorted(float(x) for x in cfg.evaluate.ridge_lambdas)
    start = {b.name: fit_ridge_map(b.features, b.has, data, lambdas)[1]["lambda"] for b in blocks}
    combo = [b.name for b in blocks]
    blas = max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=1)
    spinner = None
    if args.busy:
        spinner = multiprocessing.get_context("fork").Process(target=_spin, args=(3600.0,), daemon=True)
        spinner.start()
    seconds: dict[str, list[float]] = {f"{blas} BLAS threads (default)": [], "1 BLAS thread": []}
    auc: dict[str, float] = {}
    try:
        for _ in range(args.repeats):
            for label in seconds:
                t0 = time.perf_counter()
                with threadpool_limits(1 if label.startswith("1 ") else blas):
                    _, auc[label] = JointFitter(blocks, data).search(combo, start, lambdas)
                seconds[label].append(time.perf_counter() - t0)
                print(f"{label}: {seconds[label][-1]:.1f} s", flush=True)
    finally:
        if spinner is not None:
            spinner.terminate()
    default, one = seconds
    dims = " + ".join(f"{b.name} {b.features.shape[1]}" for b in blocks)
    lines = [
        f"`python bench/content_joint.py --run {args.run}{' --busy' if args.busy else ''}` — the joint search of "
        f"{' + '.join(combo)}: {dims} columns; {len(data.train):,} warm items, {len(data.valid):,} valid.\n"
        f"Each setting ran {args.repeats} times, alternating, "
        + (
            "beside a process keeping both cores busy with matrix products."
            if args.busy
            else "with nothing else running."
        ),
        "",
        "| BLAS threads | best s | mean s | valid AUC |",
        "|---|---:|---:|---:|",
    ]
    for label, values in seconds.items():
        lines.append(f"| {label} | {min(values):.1f} | {np.mean(values):.1f} | {auc[label]:.4f} |")
    lines += ["", f"ratio, default / one thread (best of each): **{min(seconds[default]) / min(seconds[one]):.2f}×**"]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record(f"content joint search: BLAS threads{' (busy machine)' if args.busy else ''}", text + "\n")


if __name__ == "__main__":
    main()
