"""train's epoch selection at 10K, 30K and 100K items: seconds per `Selector.score` (embedding + ridge + ranking),
which issue 24 wants the same at every catalogue size (within ±20%).

    python bench/selection.py                                  # 10K, 30K, 100K; records RESULTS.md
    python bench/selection.py --backbone tf_efficientnet_lite0 # the demo's backbone (minutes per call on 2 busy cores)
    python bench/selection.py --unsampled 10000,30000          # also every user and every valid item (before)

Each size is a run folder with bench/_platform.py's planted problem, as bench/evaluate_scale.py uses it (64-d
latent taste; users 0.73 per item; each user's 10 cold interactions are the best of 40 random cold items), written as factorize writes it
(item_split, item_factors, user_factors, cold_interactions), with an image cache of the demo's size whose rows are
random pixels (a sparse file: only the rows a selection reads are written). 25% of the items are valid cold items,
so the 2,000-item cap (`train.select_valid_items`) binds at every size. The model is the tiny test backbone at the
demo's image size (96 px), untrained, on one torch thread (`--backbone`, `--threads`): the number of rows embedded is
the same at every size whatever the network, and one thread keeps the figures steady beside other jobs. The selectors
of all sizes live in one process and are timed in rounds, one call per size per round, so that load from other
processes falls on every size alike; a size's seconds are its fastest round's and its ratio to the smallest size the
median of the per-round ratios, in wall and in CPU seconds (the process's own, all threads: what contention inflates
least).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _platform import USERS_PER_ITEM, F, plant, write_factors  # noqa: E402
from _results import record  # noqa: E402

VALID, TEST = 0.25, 0.15  # cold fractions of the catalogue


def make(run: Path, n_items: int, image_size: int, seed: int = 0) -> None:
    """A run folder with factorize's four outputs for ``n_items`` items and an image cache (sparse, unwritten)."""
    planted = plant(n_items, round(USERS_PER_ITEM * n_items), seed, valid=VALID, test=TEST)
    write_factors(run, planted, [f"i{i:07d}" for i in range(n_items)])
    cache = run / "cache"
    cache.mkdir()
    np.lib.format.open_memmap(cache / "images.npy", "w+", np.uint8, (n_items, image_size, image_size, 3)).flush()


def selector(run: Path, users: int, items: int) -> tuple[object, float]:
    """The selector train would build for this run (and the seconds it took: once per training)."""
    from socialfeat.config import TrainConfig
    from socialfeat.selection import make_selector

    n_items = len(np.load(run / "cache" / "images.npy", mmap_mode="r"))
    rows = {f"i{i:07d}": i for i in range(n_items)}
    cfg = TrainConfig(select="valid-auc", select_users=users, select_valid_items=items)
    t0 = time.perf_counter()
    made = make_selector(run, cfg, run / "cache", rows, [0.1, 1, 10, 100, 1_000, 10_000, 100_000], 64, 0)
    seconds = time.perf_counter() - t0
    images = np.load(run / "cache" / "images.npy", mmap_mode="r+")
    fill = np.random.default_rng(1)
    for row in np.sort(made.rows):  # real pixels in the rows the selection reads (the rest stays a hole)
        images[row] = fill.integers(0, 256, images.shape[1:], dtype=np.uint8)
    images.flush()
    return made, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="catalogue sizes (items)")
    parser.add_argument("--backbone", default="socialfeat_tiny", help="tf_efficientnet_lite0: the demo's")
    parser.add_argument("--image-size", type=int, default=96, help="the demo's")
    parser.add_argument("--rounds", type=int, default=5, help="calls per size, one per size per round")
    parser.add_argument("--users", type=int, default=5000, help="train.select_users")
    parser.add_argument("--valid-items", type=int, default=2000, help="train.select_valid_items")
    parser.add_argument("--unsampled", default="", help="sizes to time also with every user and valid item (before)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    import torch

    from socialfeat.models.backbones import create_backbone
    from socialfeat.models.heads import FeatureModel

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    unsampled = [int(s) for s in args.unsampled.split(",") if s]
    torch.manual_seed(0)
    model = FeatureModel(create_backbone(args.backbone, "random"), {"factors": F})
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="selection-bench-") as tmp:
        cases: dict[tuple[int, str], tuple[object, float]] = {}
        for n in sorted(set(sizes) | set(unsampled)):
            t0 = time.perf_counter()
            make(Path(tmp) / str(n), n, args.image_size)
            planted = time.perf_counter() - t0
            if n in sizes:
                cases[(n, "sampled")] = selector(Path(tmp) / str(n), args.users, args.valid_items)
            if n in unsampled:
                cases[(n, "unsampled")] = selector(Path(tmp) / str(n), 0, 0)
            print(f"{n:,} items: planted in {planted:.0f} s", flush=True)
        for (n, kind), (sel, setup) in cases.items():
            print(f"  {n:>7,} {kind:9s} {sel.summary}  setup {setup:.1f} s", flush=True)
        timed = {key: {"wall": [], "cpu": [], "rank_cpu": []} for key in cases}
        scores: dict[tuple[int, str], dict] = {}
        for key, (sel, _) in cases.items():
            if key[1] == "sampled":
                sel.score(model, device)  # warm-up: first-call allocations, the cache's pages; not timed
        for r in range(args.rounds):
            for key, (sel, _) in cases.items():
                if key[1] == "unsampled" and r < args.rounds - 1:
                    continue  # once is enough for the slow one: in the last round, its pages and pools warm
                t0, c0 = time.perf_counter(), time.process_time()
                scores[key] = sel.score(model, device)
                timed[key]["wall"].append(time.perf_counter() - t0)
                timed[key]["cpu"].append(time.process_time() - c0)
                features = np.random.default_rng(r).normal(size=(len(sel.rows), model.num_features))
                c0 = time.process_time()
                sel.rank(features.astype(np.float32))  # the ridge and the ranking alone
                timed[key]["rank_cpu"].append(time.process_time() - c0)
                print(
                    f"  round {r + 1}: {key[0]:>7,} {key[1]:9s} {timed[key]['wall'][-1]:6.1f} s  "
                    f"CPU {timed[key]['cpu'][-1]:6.1f} s (ridge + ranking {timed[key]['rank_cpu'][-1]:.1f})",
                    flush=True,
                )
    fastest = {key: {k: min(v) for k, v in t.items()} for key, t in timed.items()}
    ref = timed[(sizes[0], "sampled")]

    def paired(key: tuple[int, str], what: str) -> float:
        """The median over rounds of this case's time over the smallest size's in the same round (an unsampled
        case: its one call, in the last round): load that changes between rounds cancels."""
        mine = timed[key][what]
        return statistics.median(m / r for m, r in zip(mine, ref[what][-len(mine) :], strict=True))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    argv, threads = " ".join(sys.argv[1:]), torch.get_num_threads()
    lines = [
        f"    python bench/selection.py{' ' + argv if argv else ''}",
        "",
        f"- Model: `{args.backbone}` at {args.image_size} px, untrained, on CPU with {threads} torch "
        f"thread{'s' if threads != 1 else ''}.",
        f"- Settings: `train.select_users` {args.users:,}, `train.select_valid_items` {args.valid_items:,}, "
        "`select_items` 1,000 warm items, 7 λ.",
        "- Data: run folders holding bench/_platform.py's planted problem (users 0.73 per item, 25% valid cold items).",
        f"- Load average when done: {load}. The sizes were timed in alternating rounds, so load falls on each alike.",
        f"- Seconds: a size's fastest of {args.rounds} call{'s' if args.rounds != 1 else ''}. An unsampled case makes "
        "one call, in the last round.",
        "- × the smallest: the median over rounds of the ratio to the smallest size in the same round.",
        "- CPU seconds are the process's own, which contention inflates least.",
        "",
        "| items | users ranked | valid cold items | positives per user | embedded | setup s (once) "
        "| s per selection | × the smallest | CPU s | × the smallest | of which ridge + ranking, CPU s | valid AUC |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (n, kind), (sel, setup) in cases.items():
        s, f = sel.summary, fastest[(n, kind)]
        label = f"{n:,}" + (" (every user and valid item: before)" if kind == "unsampled" else "")
        lines.append(
            f"| {label} | {s['select_users']:,} of {s['select_users_of']:,} | {s['select_valid_items']:,} of "
            f"{s['select_valid_items_of']:,} | {sel.data.valid_truth.nnz / max(s['select_users'], 1):.1f} | "
            f"{s['embedded']:,} | {setup:.1f} | {f['wall']:.1f} | {paired((n, kind), 'wall'):.2f} | {f['cpu']:.1f} | "
            f"{paired((n, kind), 'cpu'):.2f} | {f['rank_cpu']:.1f} | {scores[(n, kind)]['valid_cold_auc']:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    walls = [paired((n, "sampled"), "wall") for n in sizes]
    cpus = [paired((n, "sampled"), "cpu") for n in sizes]
    off, off_cpu = max(abs(w - 1) for w in walls), max(abs(c - 1) for c in cpus)
    verdict = "met" if max(off, off_cpu) <= 0.2 else ("met in CPU seconds" if off_cpu <= 0.2 else "not met")
    note = (
        f"\n\nFarthest from the smallest size: {off:.0%} in wall seconds, {off_cpu:.0%} in CPU seconds.\n"
        f"The target, within ±20% from {sizes[0]:,} to {sizes[-1]:,} items, is {verdict}.\n"
        "Every selection embeds the same rows and ranks the same users × items.\n"
        "What still differs is how many of a sampled user's positives fall among the sampled valid items: more in a "
        "small catalogue.\nThe per-user AUC counts in one pass per positive.\n"
        "The setup (reading the split, drawing the samples) runs once per training and grows with the catalogue."
    )
    print(note.strip())
    if not args.no_record:
        record(f"train's epoch selection at catalogue scale (bench/selection.py, {args.backbone})", table + note)


if __name__ == "__main__":
    main()
