"""Every stage after the images at the seed paper's size: seconds and peak RSS of ingest, factorize, targets,
index, content, evaluate, report and serve start-up on a simulated platform, at one or more sizes, and the growth
exponent of each between sizes (issue 23, part 1).

    python bench/scale.py --items 30000                   # users 0.73 × items, interactions 31M/423K per item
    python bench/scale.py --items 30000 --users 21900 --interactions 2000000
    python bench/scale.py --sizes 30000,100000            # several sizes; growth exponents between them
    python bench/scale.py --items 30000 --no-record       # print only
    python bench/scale.py --sizes 100000,423000 --keep     # keeps the platforms (prints where)
    python bench/scale.py --sizes 100000,423000 --reuse /tmp/socialfeat-scale-x   # every stage again on them

The platform is bench/_platform.py's taste platform: the simulator's own items, users and events
(socialfeat.data.simulate.sample_platform, linear in users + items + events): its attributes (palette, texture,
composition, object) and log-normal popularity, sparse Dirichlet tastes, power-law activity and bots, and its views,
likes, comments and shares. Its mean views per user is set so that all events come to about the interactions asked.

Images: every item's path is a hard link to one 8×8 PNG, so ingest keeps the items (it drops an item whose image
file is missing) at the cost of one directory entry each. Features: no CNN — ``features/{learned,imagenet,random}
.parquet`` (1,280-d, embed's schema: item_id, features) and their .json sidecars are drawn from the items' latent
attributes (learned: a strong noisy linear image of them; ImageNet: weaker; random: nearly none), written after
ingest so freshness accepts them. Each stage then runs as ``python -m socialfeat <stage>`` in a fresh process
(peak RSS from wait4); serve start-up is ``Explorer(config, run)`` in a fresh process. A stage that fails is
reported with its error and the others still run where they can.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _platform import USERS_PER_ITEM, D, taste_platform  # noqa: E402
from _results import exponent, hardware, record  # noqa: E402

SEED_ITEMS, SEED_INTERACTIONS = 423_000, 31_000_000
# serve start-up: the first, which also exports each source's encoder to ONNX (cached in RUN/export/); the
# restart: the same with the export cached — what grows with the catalogue
STAGES = ("ingest", "factorize", "targets", "index", "content", "evaluate", "report", "serve start-up", "serve restart")
EMBEDDED = ("learned", "imagenet", "random")
EVAL_SOURCES = (*EMBEDDED, "metadata")


def write_features(platform: Path, run: Path, config_path: Path, seed: int = 0) -> float:
    """features/{learned,imagenet,random}.parquet and .json for the run's items, from their latent attributes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from socialfeat.config import load_config, provenance
    from socialfeat.data import simulate as sim
    from socialfeat.features import BATCH_ROWS, vectors_column

    t0 = time.perf_counter()
    config = load_config(config_path)
    items = pq.read_table(run / "dataset" / "items.parquet", columns=["item_id", "item_idx"])
    idx = items.column("item_idx").to_numpy()
    ids = np.asarray(items.column("item_id").to_pylist())[np.argsort(idx)]
    raw = ids.astype(np.int64)  # the platform's item ids are 0..n-1
    latent = np.load(platform / "latent.npz")
    one_hot = [np.eye(len(v), dtype=np.float32)[latent[a][raw]] for a, v in sim.ATTR_VALUES.items()]
    z = np.concatenate([*one_hot, np.log(latent["popularity"][raw])[:, None].astype(np.float32)], axis=1)
    (run / "features").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for source, signal, noise in (("learned", 1.0, 0.5), ("imagenet", 0.35, 1.0), ("random", 0.05, 1.0)):
        mix = rng.normal(size=(z.shape[1], D)).astype(np.float32)
        matrix = np.empty((len(z), D), np.float32)
        for s in range(0, len(z), 16384):
            block = z[s : s + 16384]
            matrix[s : s + 16384] = np.maximum(
                signal * block @ mix + rng.normal(0, noise, (len(block), D)).astype(np.float32) + 1.0, 0
            )
        pq.write_table(pa.table({"item_id": pa.array(ids.tolist()), "features": vectors_column(matrix)}),
                       run / "features" / f"{source}.parquet", row_group_size=BATCH_ROWS)  # as embed writes  # fmt: skip
        backbone = "tf_efficientnet_lite0"
        summary = {
            "source": source, "model": backbone, "init": {"learned": "trained from imagenet"}.get(source, source),
            "items": len(ids), "without_image": 0, "dimension": D, "heads": [], "seconds": 0.0, "images_per_s": 0.0,
            "rank": 0, "world": 1, "image_size": config.train.image_size, "bench": "bench/scale.py: drawn from latent",
        }  # fmt: skip
        (run / "features" / f"{source}.json").write_text(
            json.dumps({**summary, "provenance": provenance(config, "embed")})
        )
    return time.perf_counter() - t0


def write_model(run: Path, config_path: Path) -> None:
    """model/: an untrained EfficientNet-Lite0 (random init, no heads) in train's layout, so that serve has an
    encoder for the learned space (for uploads); the features do not come from it."""
    from socialfeat.atomic import atomic_dir, write_json
    from socialfeat.config import load_config, provenance
    from socialfeat.models.backbones import create_backbone
    from socialfeat.models.heads import FeatureModel
    from socialfeat.models.store import save_weights

    config = load_config(config_path)
    cfg = config.train
    model = FeatureModel(create_backbone(cfg.backbone, "random"), {})
    meta = {
        "backbone": cfg.backbone, "init": "random (bench/scale.py: a stand-in, untrained)", "heads": {},
        "targets": [], "image_size": cfg.image_size, "num_features": model.num_features, "dropout": cfg.dropout,
        "finetune": cfg.finetune, "regression_loss": cfg.regression_loss, "preprocess": "(x - 127) / 128",
    }  # fmt: skip
    with atomic_dir(run / "model", "model") as tmp:
        save_weights(tmp / "weights.safetensors", model)
        write_json(tmp / "model.json", meta)
        write_json(tmp / "manifest.json", provenance(config, "train"))


def write_config(folder: Path, run: Path, threads: int) -> Path:
    """The run's config: the platform's files, tags and a numeric year for content (LightFM peer off)."""
    path = folder / "config.yaml"
    path.write_text(
        f"""name: scale
seed: 0
ingest:
  interactions: {folder / "interactions.parquet"}
  items: {folder / "items.csv"}
  image_root: {folder}
  item_columns: {{title: title, tags: tags}}
split:
  cold_fraction: 0.2
factorize:
  threads: {threads}
targets:
  targets: [factors, factor-clusters]
content:
  sources: [learned, tags, numeric]
  numeric: [year]
  lightfm: false
"""
    )
    return path


# ---------------------------------------------------------------------------------------------- measuring
SERVE = """
import sys, time
from socialfeat.config import load_config
from socialfeat.serve.explorer import Explorer
t0 = time.perf_counter()
ex = Explorer(load_config(sys.argv[1]), sys.argv[2])
print(f"items {len(ex.keys)} sources {list(ex.spaces)} load {ex.load_seconds:.2f}s total {time.perf_counter()-t0:.2f}s")
"""


def measure(cmd: list[str], log: Path) -> tuple[float, float, str | None]:
    """Wall seconds, peak RSS (GB) and, on failure, the error's tail, of one child process."""
    started = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    error = None if code == 0 else f"exit {code}: " + log.read_text(errors="replace").strip()[-1500:]
    return wall, usage.ru_maxrss / 1024**2, error


def stage_commands(run: Path, cfg: Path) -> dict[str, list[str]]:
    sf = [sys.executable, "-m", "socialfeat"]
    evaluate = [*sf, "evaluate", str(run), "-c", str(cfg)]
    for source in EVAL_SOURCES:
        evaluate += ["--source", source]
    return {
        "ingest": [*sf, "ingest", "-c", str(cfg), "--out", str(run / "dataset")],
        "factorize": [*sf, "factorize", str(run), "-c", str(cfg)],
        "targets": [*sf, "targets", str(run), "-c", str(cfg)],
        "index": [
            "sh",
            "-c",
            " && ".join(  # every space serve opens, so start-up does not build one
                shlex.join([*sf, "index", str(run), "--source", source, "-c", str(cfg)]) for source in EMBEDDED
            ),
        ],
        "content": [*sf, "content", str(run), "-c", str(cfg)],
        "evaluate": evaluate,
        "report": [*sf, "report", str(run), "-c", str(cfg)],
        "serve start-up": [sys.executable, "-c", SERVE, str(cfg), str(run)],
        "serve restart": [sys.executable, "-c", SERVE, str(cfg), str(run)],
    }


def one_size(tmp: Path, n_items: int, n_users: int, n_interactions: int, threads: int, skip: set[str]) -> dict:
    folder = tmp / f"platform-{n_items}"
    run = tmp / f"run-{n_items}"
    # generation runs in children: a child's peak RSS starts at its parent's size at the fork, so this process
    # stays small
    me = [sys.executable, str(Path(__file__).resolve())]
    if not (folder / "made.json").is_file():  # --reuse: a kept platform of this size is used as it is
        folder.mkdir()
        _, _, error = measure(
            [*me, "--make", str(folder), str(n_items), str(n_users), str(n_interactions)], tmp / "make.log"
        )
        if error:
            raise SystemExit(f"making the platform failed: {error}")
    made = json.loads((folder / "made.json").read_text())
    rows = made["events"]
    print(f"\n{n_items:,} items × {n_users:,} users: {rows:,} interactions ({made['views']:,} views, "
          f"{made['likes']:,} likes, {made['comments']:,} comments, {made['shares']:,} shares) made in "
          f"{made['seconds']:.0f} s", flush=True)  # fmt: skip
    cfg = write_config(folder, run, threads)
    commands = stage_commands(run, cfg)
    results: dict[str, dict] = {}
    for stage in STAGES:
        if stage in skip:
            continue
        failed = [s for s in ("ingest", "factorize", "targets") if results.get(s, {}).get("error")]
        if failed and stage != "ingest":
            results[stage] = {"seconds": 0.0, "rss": 0.0, "error": f"skipped: {failed[0]} failed"}
            continue
        wall, rss, error = measure(commands[stage], tmp / f"{stage.replace(' ', '-')}-{n_items}.log")
        results[stage] = {"seconds": wall, "rss": rss, "error": error}
        status = "" if error is None else "  FAILED: " + error.splitlines()[-1][:200]
        print(f"  {stage:15s} {wall:8.1f} s  peak RSS {rss:6.2f} GB{status}", flush=True)
        if stage == "ingest" and error is None:
            stats = json.loads((run / "dataset" / "stats.json").read_text())
            print(f"  (dataset: {json.dumps(stats.get('after', stats))[:300]})", flush=True)
        if stage == "targets":  # model/ is made from targets/, features/learned from model/: in that order
            _, _, error = measure([*me, "--features", str(folder), str(run), str(cfg)], tmp / "features.log")
            if error:
                raise SystemExit(f"writing the features failed: {error}")
            seconds = json.loads((folder / "features_made.json").read_text())["seconds"]
            print(f"  model stand-in and features written in {seconds:.0f} s (learned, imagenet, random; {D}-d; "
                  "not timed)", flush=True)  # fmt: skip
    if (run / "eval" / "metrics.json").is_file():
        show = "import json,sys; from socialfeat.pipeline import headline; "
        show += (
            "[print(f\"  headline {r['name']}: AUC {r['auc']:.4f}\") for r in headline(json.load(open(sys.argv[1])))]"
        )
        subprocess.run([sys.executable, "-c", show, str(run / "eval" / "metrics.json")], check=False)
    return {"items": n_items, "users": n_users, "interactions": rows, "made": made["seconds"], "stages": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, help="one size: items")
    parser.add_argument("--users", type=int, help="users (default 0.73 × items)")
    parser.add_argument(
        "--interactions", type=int, help=f"event rows (default {SEED_INTERACTIONS:,}/{SEED_ITEMS:,} per item)"
    )
    parser.add_argument("--sizes", help="several sizes: comma list of item counts (users and interactions scaled)")
    parser.add_argument("--threads", type=int, default=0, help="factorize.threads (0 = all)")
    parser.add_argument("--skip", default="", help="comma list of stages to leave out")
    parser.add_argument("--keep", action="store_true", help="keep the platform and run folders")
    parser.add_argument(
        "--reuse", type=Path, help="a folder kept by --keep: its platforms are reused (every stage reruns); kept"
    )
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--make", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--features", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        folder = Path(args.make[0])
        made = taste_platform(folder, *map(int, args.make[1:]))
        (folder / "made.json").write_text(json.dumps(made))
        return
    if args.features:
        platform, run, cfg = map(Path, args.features)
        t0 = time.perf_counter()
        write_model(run, cfg)
        write_features(platform, run, cfg)
        (platform / "features_made.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
        return
    if args.sizes:
        sizes = [
            (n, round(USERS_PER_ITEM * n), round(SEED_INTERACTIONS / SEED_ITEMS * n))
            for n in map(int, args.sizes.split(","))
        ]
    elif args.items:
        sizes = [(args.items, args.users or round(USERS_PER_ITEM * args.items),
                  args.interactions or round(SEED_INTERACTIONS / SEED_ITEMS * args.items))]  # fmt: skip
    else:
        parser.error("give --items or --sizes")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    print(hardware())
    tmp = args.reuse or Path(tempfile.mkdtemp(prefix="socialfeat-scale-"))
    args.keep = args.keep or args.reuse is not None
    results = []
    try:
        for n_items, n_users, n_interactions in sizes:
            results.append(one_size(tmp, n_items, n_users, n_interactions, args.threads, skip))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        f"Load average when done: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (seconds are wall time of a "
        "fresh process per stage, imports included; peak RSS from wait4).",
        "",
        "The platform is the simulator's items, users and events (views, likes, comments, shares).\n"
        "- Images: one shared 8×8 PNG. Learned, ImageNet and random features (1,280-d) are drawn from the latent "
        "attributes; no CNN runs.\n"
        "- content: learned + tags (~4K) + numeric (year), LightFM off.\n"
        "- evaluate: learned, ImageNet, random, metadata. index: learned, ImageNet, random (what serve opens).\n"
        "- model/: an untrained stand-in for serve's upload encoder.",
        "",
    ]
    for r in results:
        lines += [
            f"**{r['items']:,} items × {r['users']:,} users × {r['interactions']:,} interactions** "
            f"(made in {r['made']:.0f} s)",
            "",
            "| stage | seconds | peak RSS | |",
            "|---|---:|---:|---|",
        ]
        for stage, s in r["stages"].items():
            err = "" if s["error"] is None else "failed: " + s["error"].strip().splitlines()[-1][:160].replace("|", "/")
            lines.append(f"| {stage} | {s['seconds']:.1f} | {s['rss']:.2f} GB | {err} |")
        lines.append("")
    for a, b in zip(results, results[1:], strict=False):
        lines += [f"Growth exponents from {a['items']:,} to {b['items']:,} items (time, memory):", ""]
        for stage in STAGES:
            sa, sb = a["stages"].get(stage), b["stages"].get(stage)
            if sa and sb and not sa["error"] and not sb["error"]:
                lines.append(
                    f"- {stage}: time {exponent(sa['seconds'], sb['seconds'], a['items'], b['items']):.2f}, "
                    f"peak RSS {exponent(sa['rss'], sb['rss'], a['items'], b['items']):.2f}"
                )
        lines.append("")
    print("\n" + "\n".join(lines))
    if not args.no_record:
        record("Every stage at scale (bench/scale.py)", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
