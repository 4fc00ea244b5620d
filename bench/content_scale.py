"""The content stage's fit and scoring at the seed paper's scale: seconds and peak RSS of ``fit_models`` (every block
map, every fusion, the joint search of the full models), every item's predicted factors and the bootstrap, on a
planted cold-start problem with a 1,280-d image block, a 2,000-tag sparse one-hot and a numeric block (a year:
standardised plus decade bins), at two sizes, and the growth between them.

    python bench/content_scale.py                     # 30K items × 22K users, 100K × 73K; records RESULTS.md
    python bench/content_scale.py --before            # also the content code before issue 23 at the first size

The problem is bench/_platform.py's planted one, as in bench/evaluate_scale.py (64-d taste; each user's cold
interactions the 10 of 40 random cold items they score highest; the warm items' "ALS factors" v plus noise; the
image block a noisy linear image of v), with tags as 40 facets × 50 tags (8 facets per item, the facet's tag nearest to v with Gumbel noise; 5% of items
untagged) and a year from one latent coordinate (5% missing). Each measurement runs in a fresh process (peak RSS from
wait4) on data saved by another; *before* is the content code at BEFORE (every eligible user, the tags one-hot
dense, a float64 standardised copy of every item in the joint fitter, every item predicted per trial) with today's
evaluate helpers.
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
from _platform import (  # noqa: E402
    USERS_PER_ITEM,
    D,
    image_block,
    load_planted,
    plant,
    save_planted,
    tag_block,
    year_column,
)
from _results import exponent, record, run_measured  # noqa: E402

LAMBDAS = [0.1, 1, 10, 100, 1_000, 10_000, 100_000]  # evaluate.ridge_lambdas' default
FACETS, PER_FACET, TAGS_PER_ITEM = 40, 50, 8
BEFORE = "e89654d0c499533e165cdf127f7e52ac134c22d9"  # main before the content half of issue 23


def make(folder: Path, n_items: int, n_users: int, seed: int = 0) -> None:
    """The planted problem (bench/_platform.py) as .npy/.npz files in ``folder``: image block, tags and a year."""
    planted = plant(n_items, n_users, seed)
    save_planted(folder, planted)
    image = np.lib.format.open_memmap(folder / "image.npy", "w+", np.float32, (n_items, D))
    image_block(planted, image)
    image.flush()
    del image
    sp.save_npz(folder / "tags.npz", tag_block(planted, FACETS, PER_FACET, TAGS_PER_ITEM, untagged=0.05))
    np.save(folder / "year.npy", year_column(planted, missing=0.05))


def blocks(folder: Path, data: object, dense_tags: bool) -> list[object]:
    """The image, tags and numeric blocks as the stage builds them (tags dense for the code before)."""
    from socialfeat.content import Block, numeric_rows, numeric_stats

    image = np.load(folder / "image.npy")
    tags = sp.load_npz(folder / "tags.npz").tocsr()
    tagged = np.diff(tags.indptr) > 0
    year = [None if np.isnan(y) else float(y) for y in np.load(folder / "year.npy")]
    numeric, has = numeric_rows({"year": year}, numeric_stats({"year": year}, data.train))  # type: ignore[attr-defined]
    return [
        Block("learned", image, np.ones(len(image), bool), {}),
        Block("tags", tags.toarray() if dense_tags else tags, tagged, {}),
        Block("numeric", numeric, has, {}),
    ]


def before_module(folder: Path) -> object:
    """The content module as it was at BEFORE, importable beside today's package."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:src/socialfeat/content.py"], cwd=HERE.parent, check=True, capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    (folder / "before_content.py").write_text(source)
    sys.path.insert(0, str(folder))
    import before_content  # type: ignore[import-not-found]

    return before_content


def before(folder: Path, cc: object, k: int, say: object) -> dict[str, object]:
    """The stage's search as the code at BEFORE ran it (its content() body without the files)."""
    import itertools

    from threadpoolctl import threadpool_limits

    from socialfeat.measures.coldstart import fit_ridge_map

    mod = before_module(folder)
    data = load_planted(folder)
    bl = blocks(folder, data, dense_tags=True)
    has = {b.name: b.has for b in bl}
    maps, fits, predictions = {}, {}, {}
    for b in bl:
        say(f"{b.name}: ridge map")
        maps[b.name], fits[b.name] = fit_ridge_map(b.features, b.has, data, LAMBDAS)
        predictions[b.name] = maps[b.name].predict_items(b.features, b.has)
    names = [b.name for b in bl]
    item_sources = [n for n in names if n in mod.ITEM_SOURCES]
    combos = [(n,) for n in names] + list(itertools.combinations(names, 2))
    fulls = []
    for image in [n for n in names if n in mod.IMAGE_SOURCES] + [None]:
        full = tuple(([image] if image else []) + item_sources)
        if len(full) > 1:
            fulls.append(full)
        if len(full) > 2:
            combos.append(full)
    joint = mod.JointFitter(bl, data)
    grid = sorted(set(LAMBDAS) | {f["lambda"] for f in fits.values()})
    best = None
    for combo in dict.fromkeys(combos):
        say(f"fusing {' + '.join(combo)}")
        weights, v_auc = mod.choose_weights(list(combo), predictions, has, data, cc.fusion_step)
        scored = mod.scored_on_test(mod.fuse(predictions, has, weights), data, k)
        if combo == tuple(names):
            best = (v_auc, "fusion", scored["auc"])
        if combo in fulls:
            say(f"joint ridge {' + '.join(combo)}")
            with threadpool_limits(1):
                jm, j_auc = joint.search(list(combo), {b: fits[b]["lambda"] for b in combo}, grid)
            scored = mod.scored_on_test(joint.predictions(jm), data, k)
            if combo == tuple(names) and best is not None and j_auc > best[0]:
                best = (j_auc, "joint", scored["auc"])
    assert best is not None
    return {"model": best[1], "auc": best[2], "users": scored["users"]}


def child(folder: Path, impl: str, users: int, valid_users: int, resamples: int) -> None:
    """One measurement in this process: the content search, every item's factors, the bootstrap."""
    from socialfeat.config import load_config

    cc = load_config(None, ["content.sources=[learned,tags,numeric]", "content.lightfm=false"]).content
    phases: list[tuple[str, float]] = []

    def say(message: str) -> None:
        phases.append((message, time.perf_counter()))

    started = time.perf_counter()
    if impl == "before":
        out = before(folder, cc, 20, say)
        boot = None
    else:
        from socialfeat.content.stage import chosen_factors, fit_models, intervals
        from socialfeat.measures.coldstart import sampled

        data = sampled(load_planted(folder), users, valid_users, seed=0)
        bl = blocks(folder, data, dense_tags=False)
        say("start")
        fitted = fit_models(bl, data, cc, LAMBDAS, 20, say)
        chosen_factors(fitted, data)
        t0 = time.perf_counter()
        differences = intervals(fitted, None, None, resamples, 0)
        boot = time.perf_counter() - t0
        row = fitted.rows[fitted.chosen["row"]]
        out = {"model": fitted.chosen["kind"], "auc": row["auc"], "users": row["users"], "auc_ci": row["auc_ci"]}
        out["differences"] = [{k: d[k] for k in ("label", "diff", "ci")} for d in differences]
    seconds = time.perf_counter() - started
    phases.append(("end", time.perf_counter()))
    split = {}
    for (message, t), (_, nxt) in zip(phases, phases[1:], strict=False):
        kind = message.split(" ")[0] if message.startswith(("fusing", "joint", "Gram")) else message.split(":")[0]
        split[kind] = split.get(kind, 0.0) + nxt - t
    out |= {"seconds": seconds, "bootstrap_seconds": boot, "phases": split}
    (folder / f"content-{impl}.json").write_text(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30000,100000", help="item counts; users = 0.73 × items")
    parser.add_argument("--users", type=int, default=20000, help="evaluate.users")
    parser.add_argument("--valid-users", type=int, default=5000, help="evaluate.valid_users")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--before", action="store_true", help=f"also the code at {BEFORE[:7]} at the first size")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("DIR", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--make", nargs=3, metavar=("DIR", "ITEMS", "USERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make(Path(args.make[0]), int(args.make[1]), int(args.make[2]))
        return
    if args.child:
        child(Path(args.child[0]), args.child[1], args.users, args.valid_users, args.bootstrap)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    me = [sys.executable, str(Path(__file__).resolve())]
    flags = ["--users", str(args.users), "--valid-users", str(args.valid_users), "--bootstrap", str(args.bootstrap)]
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="content-scale-") as tmp:
        for n_items in sizes:
            n_users = round(USERS_PER_ITEM * n_items)
            folder = Path(tmp) / str(n_items)
            folder.mkdir()
            made, _ = run_measured([*me, "--make", str(folder), str(n_items), str(n_users)])
            print(f"{n_items:,} items × {n_users:,} users: planted in {made:.0f} s", flush=True)
            for impl in ["after", "before"] if args.before and n_items == sizes[0] else ["after"]:
                wall, rss = run_measured([*me, *flags, "--child", str(folder), impl])
                got = json.loads((folder / f"content-{impl}.json").read_text())
                results.append({"items": n_items, "all_users": n_users, "impl": impl, "wall": wall, "rss": rss} | got)
                phases = ", ".join(f"{k} {v:.0f} s" for k, v in got["phases"].items() if v >= 0.5)
                print(
                    f"  {impl:6s} {got['seconds']:7.1f} s  peak RSS {rss:5.2f} GB  {got['model']} AUC {got['auc']:.4f}"
                    f"  users {got['users']:,}  ({phases})",
                    flush=True,
                )
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"Load average when done: {load_avg} (other processes share the cores; seconds are wall time).",
        "",
        "The planted cold-start problem: 64-d latent taste, 10 cold interactions per user, 80/10/10 warm/valid/test.\n"
        "- Blocks: image 1,280-d dense, tags 2,000-d sparse one-hot (8 per item), numeric (a year: z + decade bins).\n"
        f"- Search: a λ grid of 7, `content.fusion_step` 0.1, joint search on; `evaluate.users` = {args.users:,}, "
        f"`evaluate.valid_users` = {args.valid_users:,}.\n"
        f"- Bootstrap: {args.bootstrap:,} resamples of every row.\n"
        f"- *before*: the content code at {BEFORE[:7]} with today's evaluate helpers. It used every eligible user, "
        "dense tags, float64 copies, and predicted every item per trial.",
        "",
        "| items | users | code | users ranked | seconds | peak RSS | model | test AUC | bootstrap s | phases |",
        "|---:|---:|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in results:
        boot = f"{r['bootstrap_seconds']:.1f}" if r.get("bootstrap_seconds") else "–"
        phases = ", ".join(f"{k} {v:.0f}" for k, v in r["phases"].items() if v >= 0.5)  # type: ignore[union-attr]
        lines.append(
            f"| {r['items']:,} | {r['all_users']:,} | {r['impl']} | {r['users']:,} | {r['seconds']:.1f} "
            f"| {r['rss']:.2f} GB | {r['model']} | {r['auc']:.4f} | {boot} | {phases} |"
        )
    after = [r for r in results if r["impl"] == "after"]
    old = [r for r in results if r["impl"] == "before"]
    if old:
        a = next(r for r in after if r["items"] == old[0]["items"])
        lines += ["", f"At {a['items']:,} items, before ÷ after: time ×{old[0]['seconds'] / a['seconds']:.2f}, "
                  f"peak RSS ×{old[0]['rss'] / a['rss']:.2f}."]  # fmt: skip
    if len(sizes) > 1:
        a, b = (next(r for r in after if r["items"] == n) for n in (sizes[0], sizes[-1]))
        lines += [
            "",
            f"Growth from {sizes[0]:,} to {sizes[-1]:,} items: time ×{b['seconds'] / a['seconds']:.2f} (exponent "
            f"{exponent(a['seconds'], b['seconds'], sizes[0], sizes[-1]):.2f}), peak RSS ×{b['rss'] / a['rss']:.2f} "
            f"(exponent {exponent(a['rss'], b['rss'], sizes[0], sizes[-1]):.2f}).",
        ]
    print("\n".join(lines))
    if not args.no_record:
        record("content at scale (bench/content_scale.py)", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
