"""Where ingest's and factorize's time grows faster than the catalogue, on platforms kept by bench/scale.py.

    python bench/scale.py --sizes 100000,423000 --keep --skip targets,index,content,evaluate,report,"serve start-up","serve restart"
    python bench/scale_diagnose.py ingest-limits DIR              # ingest at 1GB and 4GB, alternating, 2 rounds
    python bench/scale_diagnose.py ingest-limits DIR --limits 1GB --trees /old/src,/new/src   # an A/B of two checkouts
    python bench/scale_diagnose.py ingest-phases DIR --limits 1GB # ingest() in-process: its phases and slow statements
    python bench/scale_diagnose.py ranking-parts DIR              # the held-out ranking's parts, ns per score
    python bench/scale_diagnose.py ranking-batch DIR --sizes 100000   # factorize's ranking at 16M vs 100M scores a batch

DIR holds platform-100000/ and platform-423000/ (with run-N/dataset from the kept run for the ranking modes).
- ingest-limits: `socialfeat ingest` in a fresh process per run, seconds and peak RSS (wait4), sizes and memory
  limits alternating so that load falls on each alike;
- ingest-phases: `ingest()` in a fresh process without the CLI's start-up, when each phase starts and each DuckDB
  statement over 0.15 s (the first of --limits);
- ranking-parts: factorize's ranking steps (scoring, the float copy, masks, AUC, exclusion, top-k, hits) timed one by
  one on one thread, batches of 256 users, for the model (random 64-d factors), popularity and random scores;
- ranking-batch: the factorize stage with one ALS iteration at both batch budgets, alternating; seconds outside the
  fits (the ranking and the I/O).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = ("100000", "423000")


def _tree_env(tree: str) -> dict[str, str] | None:
    """A checkout's src folder first on PYTHONPATH (an A/B of two checkouts); "" = socialfeat as installed."""
    return {**os.environ, "PYTHONPATH": tree} if tree else None


def ingest_limits(root: Path, limits: list[str], rounds: int, sizes: list[str], trees: list[str]) -> None:
    """``socialfeat ingest`` in a fresh process per run: sizes, limits and ``trees`` alternating, round by round."""
    for r, n, limit, tree in itertools.product(range(rounds), sizes, limits, trees):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "socialfeat", "ingest", "-c", str(root / f"platform-{n}" / "config.yaml")]
            cmd += ["--out", f"{tmp}/dataset", "--set", f"ingest.memory_limit={limit}"]
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_tree_env(tree))
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status):
                raise SystemExit(f"failed: {' '.join(cmd)}")
            wall = time.perf_counter() - t0
        label = f"  {tree}" if tree else ""
        gb = usage.ru_maxrss / 1024**2
        print(f"round {r}  {n:>6} items  limit {limit:>4}  {wall:6.1f} s  {gb:.2f} GB{label}", flush=True)


PHASES = """
import sys, time, tempfile
import socialfeat.data.ingest as I
from socialfeat.config import load_config
config = load_config(sys.argv[1], [f"ingest.memory_limit={sys.argv[2]}"])
class Timed:  # DuckDB's connection, timing each statement
    def __init__(self, con): self._con = con
    def execute(self, sql, *args):
        t = time.perf_counter(); result = self._con.execute(sql, *args); took = time.perf_counter() - t
        if took > 0.15: print(f"      {took:6.2f} s  {' '.join(sql.split())[:90]}", flush=True)
        return result
    def __getattr__(self, name): return getattr(self._con, name)
connect = I._connect
I._connect = lambda cfg, spill: Timed(connect(cfg, spill))
t0 = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    I.ingest(config, f"{tmp}/ds", step=lambda phase: print(f"    {time.perf_counter() - t0:6.2f} s  {phase}", flush=True))
print(f"    {time.perf_counter() - t0:6.2f} s  done", flush=True)
"""


def ingest_phases(root: Path, limit: str, rounds: int, sizes: list[str], trees: list[str]) -> None:
    """``ingest()`` in a fresh process without the CLI's start-up: when each phase starts, and every DuckDB
    statement over 0.15 s."""
    for r, n, tree in itertools.product(range(rounds), sizes, trees):
        print(f"round {r}  {n:>6} items  limit {limit}  {tree or 'installed'}", flush=True)
        cmd = [sys.executable, "-c", PHASES, str(root / f"platform-{n}" / "config.yaml"), limit]
        subprocess.run(cmd, check=True, env=_tree_env(tree), stderr=subprocess.DEVNULL)


def _ranking_problem(root: Path, n: str, batches: int) -> tuple:
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    t = pq.read_table(root / f"run-{n}" / "dataset" / "interactions.parquet", columns=["user_idx", "item_idx"])
    u, i = (t.column(c).to_numpy() for c in ("user_idx", "item_idx"))
    shape = (int(u.max()) + 1, int(i.max()) + 1)
    rng = np.random.default_rng(0)
    held = rng.random(len(u)) < 0.05
    train = sp.csr_matrix((np.ones((~held).sum(), np.float32), (u[~held], i[~held])), shape=shape)
    test = sp.csr_matrix((np.ones(held.sum(), np.float32), (u[held], i[held])), shape=shape)
    uf = rng.normal(size=(shape[0], 64)).astype(np.float32)
    itf = rng.normal(size=(shape[1], 64)).astype(np.float32)
    users = rng.choice(np.flatnonzero(np.diff(test.indptr) > 0), 256 * batches, replace=False)
    return shape, train, test, uf, itf, users


def ranking_parts(root: Path, batches: int) -> None:
    from threadpoolctl import threadpool_limits

    from socialfeat.factorize import metrics as m

    problems = {n: _ranking_problem(root, n, batches) for n in SIZES}
    spent: dict[tuple[str, str, str], float] = {}
    with threadpool_limits(1):
        for _ in range(2):
            for n, (shape, train, test, uf, itf, users) in problems.items():
                scorers = {
                    "model": lambda r, uf=uf, itf=itf: uf[r] @ itf.T,
                    "popularity": m.popularity_scores(train),
                    "random": m.random_scores(shape[1], 0),
                }
                for b in range(batches):
                    batch = np.sort(users[b * 256 : (b + 1) * 256])
                    for name, fn in scorers.items():
                        marks = [time.perf_counter()]
                        scores = np.asarray(fn(batch))
                        marks.append(time.perf_counter())
                        work = m._as_float_scores(scores)  # the copy evaluate_ranking made before 1a45925
                        marks.append(time.perf_counter())
                        excluded = m._row_mask(train, batch, shape[1])
                        relevant = m._row_mask(test, batch, shape[1])
                        out_of_play = excluded & ~relevant
                        marks.append(time.perf_counter())
                        m._auc_of(work, relevant, out_of_play)
                        marks.append(time.perf_counter())
                        work[excluded] = -np.inf
                        marks.append(time.perf_counter())
                        ranked = m._top_k_of(work, ~excluded, 20)
                        marks.append(time.perf_counter())
                        m._hits_of(ranked, relevant)
                        marks.append(time.perf_counter())
                        parts = ("score", "float copy", "masks", "auc", "exclude", "top-k", "hits")
                        for part, a, z in zip(parts, marks[:-1], marks[1:], strict=True):
                            spent[(name, part, n)] = spent.get((name, part, n), 0.0) + z - a
    for name, part, n in sorted(spent, key=lambda k: (k[0], k[1], k[2])):
        scores = 2 * batches * 256 * problems[n][0][1]
        print(f"{name:10s} {part:10s} {n:>6} items: {1e9 * spent[name, part, n] / scores:6.2f} ns per score")


def ranking_batch(root: Path, rounds: int, sizes: list[str]) -> None:
    import socialfeat.factorize.stage as stage
    from socialfeat.config import load_config

    base = stage.eval_batch_size
    for n in sizes:
        cfg = load_config(root / f"platform-{n}" / "config.yaml", ["factorize.iterations=1"])
        for r in range(rounds):
            for budget in (16_000_000, 100_000_000):
                stage.eval_batch_size = functools.partial(base, budget=budget)
                stage.factorize(cfg, root / f"run-{n}")
                got = json.loads((root / f"run-{n}" / "factors" / "metrics.json").read_text())
                rest = got["seconds"] - got["fit_seconds"] - got["heldout"]["fit_seconds"]
                print(f"round {r}  {n:>6} items  budget {budget:>11,}  outside the fits {rest:6.1f} s", flush=True)
    stage.eval_batch_size = base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ingest-limits", "ingest-phases", "ranking-parts", "ranking-batch"])
    parser.add_argument("dir", type=Path, help="the folder bench/scale.py --keep printed")
    parser.add_argument("--limits", default="1GB,4GB", help="ingest.memory_limit values (ingest-limits)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4, help="batches of 256 users (ranking-parts)")
    parser.add_argument("--sizes", default=",".join(SIZES), help="platform sizes (ingest-limits, ranking-batch)")
    parser.add_argument("--trees", default="", help="ingest modes: comma list of src folders to A/B, in turn")
    args = parser.parse_args()
    if args.mode == "ingest-limits":
        ingest_limits(args.dir, args.limits.split(","), args.rounds, args.sizes.split(","), args.trees.split(","))
    elif args.mode == "ingest-phases":
        ingest_phases(args.dir, args.limits.split(",")[0], args.rounds, args.sizes.split(","), args.trees.split(","))
    elif args.mode == "ranking-parts":
        ranking_parts(args.dir, args.batches)
    else:
        ranking_batch(args.dir, args.rounds, args.sizes.split(","))


if __name__ == "__main__":
    main()
