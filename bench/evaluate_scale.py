"""evaluate's cold-start rows at the seed paper's scale: seconds and peak RSS of one learned-like row (1,280-d dense
features) and of the metadata row (a 4,096-tag sparse one-hot) on a planted cold-start problem, at two sizes, and
the growth between them.

    python bench/evaluate_scale.py                       # 30K items × 22K users, 100K × 73K; records RESULTS.md
    python bench/evaluate_scale.py --before     # also the pre-issue-23 code at 30K (all users, float64, dense tags)

The problem is bench/_platform.py's planted one: users u and items v (64-d); a user's cold interactions are the 10
of 40 random cold items they score highest (u·v plus noise); the warm items' "ALS factors" are v plus noise; the
learned features are a noisy linear image of v; the tags are, in 8 of 64 facets of 64 tags each, the facet's tag
nearest to v (with Gumbel noise). Each row runs in a fresh process (peak RSS from wait4) on the data saved by another, so
the figures are what the row costs with its inputs in memory — not the generation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _platform import USERS_PER_ITEM, image_block, load_planted, plant, save_planted, tag_block  # noqa: E402
from _results import exponent, record, run_measured  # noqa: E402

LAMBDAS = [0.1, 1, 10, 100, 1_000, 10_000, 100_000]  # evaluate.ridge_lambdas' default
FACETS, PER_FACET, TAGS_PER_ITEM = 64, 64, 8
BEFORE = "8daec2a47095f5a395033e6eadeaaf968339b88d"  # main before issue 23: every user, float64 copies, dense tags


def make(folder: Path, n_items: int, n_users: int, seed: int = 0) -> None:
    """The planted problem (bench/_platform.py) as .npy/.npz files in ``folder``: a learned-like block and tags."""
    planted = plant(n_items, n_users, seed)
    save_planted(folder, planted)
    np.save(folder / "features.npy", image_block(planted))
    sp.save_npz(folder / "tags.npz", tag_block(planted, FACETS, PER_FACET, TAGS_PER_ITEM))


def before_module(folder: Path) -> object:
    """The cold-start module as it was at BEFORE, importable beside today's (its metrics module renamed)."""
    package = folder / "before_eval"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    for name in ("metrics", "coldstart"):
        source = subprocess.run(
            ["git", "show", f"{BEFORE}:src/socialfeat/evaluate/{name}.py"],
            cwd=HERE.parent,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (package / f"{name}.py").write_text(source.replace("socialfeat.evaluate.metrics", "before_eval.metrics"))
    sys.path.insert(0, str(folder))
    import before_eval.coldstart as module  # type: ignore[import-not-found]

    return module


def row(folder: Path, which: str, impl: str, users: int, valid_users: int, resamples: int) -> None:
    """One row in this process: load, rank, (bootstrap), and write what it measured to ``folder``."""
    if impl == "before":
        cs = before_module(folder)
        data = load_planted(folder, cs)
    else:
        from socialfeat.measures import coldstart as cs

        data = cs.sampled(load_planted(folder, cs), users, valid_users, seed=0)
    n_items = len(data.item_ids)
    if which == "learned":
        features: np.ndarray | sp.csr_matrix = np.load(folder / "features.npy")
    else:
        features = sp.load_npz(folder / "tags.npz").tocsr()
        if impl == "before":
            features = features.toarray()  # the one-hot as the old stage built it: dense float32
    has = np.ones(n_items, bool)
    started = time.perf_counter()
    if impl == "before":
        result, per_user = cs.coldstart_row(features, has, "ridge", data, LAMBDAS, 20), None
    else:
        result, ranked = cs.coldstart_scored(features, has, "ridge", data, LAMBDAS, 20)
        per_user = ranked.auc
    seconds = time.perf_counter() - started
    boot = None
    ranking: dict[str, float] = {}
    if per_user is not None and resamples:
        from socialfeat.measures.bootstrap import resampled_means, two_way_means

        t0 = time.perf_counter()
        resampled_means(np.repeat(per_user[:, None], 10, axis=1), resamples, 0)  # a 10-row table's bootstrap
        boot = time.perf_counter() - t0
        t0 = time.perf_counter()
        per_item = np.repeat(ranked.item_influence[:, None], 10, axis=1)
        two_way_means(np.repeat(per_user[:, None], 10, axis=1), per_item, resamples, 0)
        ranking["bootstrap_two_way_seconds"] = time.perf_counter() - t0
        # the test ranking alone, users only and with each item's influence (what the two-way bootstrap needs)
        v_test = np.asarray(features[data.test] @ np.random.default_rng(0).normal(size=(features.shape[1], 64)))
        score = cs.factor_scores(data.user_factors, v_test.astype(np.float32))
        for key, influence in (("rank_seconds", False), ("rank_two_way_seconds", True)):
            t0 = time.perf_counter()
            cs.score_users(score, data.test_truth, 20, data.test_users, influence=influence)
            ranking[key] = time.perf_counter() - t0
    out = {"seconds": seconds, "bootstrap_seconds": boot, "auc": result["auc"], "lambda": result["lambda"]}
    out |= ranking
    out |= {"users": result["users"], "valid_users": len(data.valid_users) if impl != "before" else None}
    (folder / f"{which}-{impl}.json").write_text(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30000,100000", help="item counts; users = 0.73 × items")
    parser.add_argument("--users", type=int, default=20000, help="evaluate.users")
    parser.add_argument("--valid-users", type=int, default=5000, help="evaluate.valid_users")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--before", action="store_true", help=f"also run the code at {BEFORE[:7]} at the first size (slow)"
    )
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("DIR", "ROW", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--make", nargs=3, metavar=("DIR", "ITEMS", "USERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make(Path(args.make[0]), int(args.make[1]), int(args.make[2]))
        return
    if args.child:
        folder, which, impl = args.child
        row(Path(folder), which, impl, args.users, args.valid_users, args.bootstrap)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    me = [sys.executable, str(Path(__file__).resolve())]
    flags = ["--users", str(args.users), "--valid-users", str(args.valid_users), "--bootstrap", str(args.bootstrap)]
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="evaluate-scale-") as tmp:
        for n_items in sizes:
            n_users = round(USERS_PER_ITEM * n_items)
            folder = Path(tmp) / str(n_items)
            folder.mkdir()
            made, _ = run_measured([*me, "--make", str(folder), str(n_items), str(n_users)])
            print(f"{n_items:,} items × {n_users:,} users: planted in {made:.0f} s", flush=True)
            impls = ["after", "before"] if args.before and n_items == sizes[0] else ["after"]  # before: slow
            for impl in impls:
                for which in ("learned", "metadata"):
                    wall, rss = run_measured([*me, *flags, "--child", str(folder), which, impl])
                    got = json.loads((folder / f"{which}-{impl}.json").read_text())
                    results.append({"items": n_items, "all_users": n_users, "row": which, "impl": impl} | got)
                    results[-1] |= {"wall": wall, "rss": rss}
                    print(
                        f"  {which:8s} {impl:6s} {got['seconds']:7.1f} s  peak RSS {rss:5.2f} GB  AUC {got['auc']:.4f}"
                        f"  λ {got['lambda']:g}  users {got['users']:,}"
                        + (f"  bootstrap {got['bootstrap_seconds']:.2f} s" if got.get("bootstrap_seconds") else ""),
                        flush=True,
                    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"Load average when done: {load} (other processes share the cores; seconds are wall time).",
        "",
        f"Planted cold-start problem (64-d latent taste; 10 cold interactions per user; 80/10/10 warm/valid/test). "
        f"λ grid of 7; `evaluate.users` = {args.users:,}, `evaluate.valid_users` = {args.valid_users:,}; "
        f"bootstrap: {args.bootstrap:,} resamples of a 10-row table. *before*: the code at {BEFORE[:7]} (every "
        "eligible user, float64 copies, dense one-hot).",
        "",
        "*rank s*: the test ranking alone, timed again in the same process, users only → with each test item's "
        "influence (what the two-way bootstrap over users and items needs; the row's seconds include it). "
        "*bootstrap s*: users only → users and items.",
        "",
        "| items | users | row | code | users ranked | seconds | peak RSS | AUC | rank s | bootstrap s |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        boot = f"{r['bootstrap_seconds']:.2f}" if r.get("bootstrap_seconds") else "–"
        if r.get("bootstrap_two_way_seconds") is not None:
            boot += f" → {r['bootstrap_two_way_seconds']:.2f}"
        rank = "–"
        if r.get("rank_seconds") is not None:
            rank = f"{r['rank_seconds']:.1f} → {r['rank_two_way_seconds']:.1f}"
        lines.append(
            f"| {r['items']:,} | {r['all_users']:,} | {r['row']} | {r['impl']} | {r['users']:,} | {r['seconds']:.1f} "
            f"| {r['rss']:.2f} GB | {r['auc']:.4f} | {rank} | {boot} |"
        )
    after = [r for r in results if r["impl"] == "after"]
    if len(sizes) > 1:
        lines += ["", f"Growth from {sizes[0]:,} to {sizes[-1]:,} items (exponent: log ratio ÷ log size ratio):", ""]
        for which in ("learned", "metadata"):
            a, b = (next(r for r in after if r["row"] == which and r["items"] == n) for n in (sizes[0], sizes[-1]))
            t, m = b["seconds"] / a["seconds"], b["rss"] / a["rss"]
            lines.append(
                f"- {which}: time ×{t:.2f} (exponent {exponent(a['seconds'], b['seconds'], sizes[0], sizes[-1]):.2f}),"
                f" peak RSS ×{m:.2f} (exponent {exponent(a['rss'], b['rss'], sizes[0], sizes[-1]):.2f})"
            )
    print("\n".join(lines))
    if not args.no_record:
        record("evaluate at scale (bench/evaluate_scale.py)", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
