"""Where learning from behaviour starts to pay: learned vs ImageNet cold-start AUC as the catalogue grows.

Two curves, each point a whole run (ingest → factorize → targets → train → embed → evaluate) with the
recipe of its config, scored by `evaluate` on the same cold test items throughout:
- **simulator**: `socialfeat demo` platforms of growing size (users grow with items, 2 per 3 items), the
  demo config's recipe; each size its own platform and its own 20% cold items;
- **MovieLens-1M**: a seeded fraction of the 1,785 warm posters kept (the rest dropped with their interactions);
  the cold valid and test posters are the same at every fraction.

    python bench/quality_scale.py --sim 1000,3000,10000 --movielens 0.25,0.5,1
    python bench/quality_scale.py --record        # the rows gathered so far → RESULTS.md
    python bench/quality_scale.py --from-run /tmp/e2e-100k/run --size 100000   # a point from a finished run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _results import record  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "movielens-1m"


def _run(cmd: list[str], log: Path) -> float:
    """Wall seconds of one child process; its output goes to ``log``; a failure stops the bench with its tail."""
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def _scores(run: Path) -> dict[str, Any]:
    """Learned pooled and ImageNet test AUC from ``eval/metrics.json``, the epoch kept and the train minutes."""
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    rows = {(r["source"], r["column"], r["mapping"]): r["coldstart"] for r in metrics["rows"]}
    learned, imagenet = rows[("learned", "features", "ridge")], rows[("imagenet", "features", "ridge")]
    model = json.loads((run / "model" / "model.json").read_text())
    stage = run / ".pipeline" / "train.json"  # `socialfeat run` writes it; bench/e2e.py runs train on its own
    seconds = json.loads(stage.read_text())["seconds"] if stage.is_file() else model["train_seconds"]
    probes = {}  # what fine-tuning forgot: the k-fold probe of the pooled features on each transfer set
    for path in sorted((run / "eval").glob("transfer-*.json")):
        t = {(r["source"], r["column"]): r["kfold"]["mean"] for r in json.loads(path.read_text())["rows"]}
        if ("learned", "features") in t and ("imagenet", "features") in t:
            probes[path.stem.removeprefix("transfer-")] = [t["learned", "features"], t["imagenet", "features"]]
    gap = next((d for d in metrics.get("differences") or [] if d.get("label") == "learned − ImageNet"), {})
    over = (metrics.get("bootstrap") or {}).get("over", "users")  # evaluate resamples users and items since 2026-12-07
    return {
        "warm_items": metrics["split"]["train"],
        "test_items": metrics["split"]["test"],
        "learned": learned["auc"],
        "imagenet": imagenet["auc"],
        "gap": learned["auc"] - imagenet["auc"],
        "gap_ci": gap.get("ci"),
        "gap_ci_over": over,
        "gap_ci_users": gap.get("ci_users") if over != "users" else gap.get("ci"),
        "selected_epoch": model.get("selected_epoch"),
        "train_minutes": float(seconds) / 60,
        "probes": probes,
    }


def sim_point(n_items: int, work: Path) -> dict[str, Any]:
    run = work / f"sim-{n_items}"
    n_users = max(300, 2 * n_items // 3)
    cmd = [sys.executable, "-m", "socialfeat", "demo", "--out", str(run)]
    cmd += ["--set", f"simulate.n_items={n_items}", "--set", f"simulate.n_users={n_users}"]
    wall = _run(cmd, work / f"sim-{n_items}.log")
    return {"curve": "simulator", "size": n_items, "users": n_users, "wall_minutes": wall / 60, **_scores(run)}


def movielens_inputs(fraction: float, out: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """interactions, items and split files with a seeded ``fraction`` of the warm posters kept; cold ones all kept."""
    out.mkdir(parents=True, exist_ok=True)
    with open(MOVIELENS / "coldstart_split.csv", newline="") as fh:
        split = {r["item_id"]: r["split"] for r in csv.DictReader(fh)}
    warm = sorted(i for i, s in split.items() if s == "train")
    rng = np.random.default_rng(seed)
    kept_warm = set(rng.choice(warm, size=round(fraction * len(warm)), replace=False).tolist())
    keep = kept_warm | {i for i, s in split.items() if s != "train"}
    paths = (out / "interactions.csv", out / "items.csv", out / "coldstart_split.csv")
    for src, dst in zip(("interactions.csv", "items.csv", "coldstart_split.csv"), paths, strict=True):
        with open(MOVIELENS / src, newline="") as fi, open(dst, "w", newline="") as fo:
            reader = csv.DictReader(fi)
            writer = csv.DictWriter(fo, fieldnames=reader.fieldnames or [])
            writer.writeheader()
            writer.writerows(r for r in reader if r["item_id"] in keep)
    return paths


def movielens_point(fraction: float, work: Path) -> dict[str, Any]:
    run = work / f"ml-{fraction:g}"
    interactions, items, split = movielens_inputs(fraction, work / f"ml-{fraction:g}-input")
    cmd = [sys.executable, "-m", "socialfeat", "run", "configs/movielens.yaml", "--run", str(run)]
    cmd += ["--set", f"ingest.interactions={interactions}", "--set", f"ingest.items={items}"]
    cmd += ["--set", f"split.cold_items={split}", "--set", f"ingest.image_root={MOVIELENS}"]
    wall = _run(cmd, work / f"ml-{fraction:g}.log")
    return {"curve": "movielens", "size": fraction, "wall_minutes": wall / 60, **_scores(run)}


def _probes(row: dict[str, Any]) -> str:
    found = row.get("probes") or {}
    return ", ".join(f"{k} {100 * (a - b):+.1f} pt" for k, (a, b) in found.items()) or "—"


def _gap(row: dict[str, Any]) -> str:
    """``+0.0164 [+0.0080, +0.0250]``: the interval where the point has one (points before the bootstrap have none);
    one over the users alone (points before 2026-12-07) is marked "users"."""
    ci = row.get("gap_ci")
    users_only = row.get("gap_ci_over", "users") == "users"
    shown = f" [{ci[0]:+.4f}, {ci[1]:+.4f}]{' users' if users_only else ''}" if ci and ci[0] is not None else ""
    return f"{row['gap']:+.4f}{shown}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| curve | size | warm items | learned AUC | ImageNet AUC | learned − ImageNet [95% CI] | epoch kept "
        "| probe: learned − ImageNet | train min |\n|---|---:|---:|---:|---:|---:|---:|---|---:|\n"
    )
    lines = [
        f"| {r['curve']} | {r['size']:g} | {r['warm_items']:,} | {r['learned']:.4f} | {r['imagenet']:.4f} | "
        f"{_gap(r)} | {r['selected_epoch']} | {_probes(r)} | {r['train_minutes']:.1f} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", default="", help="simulated catalogue sizes, e.g. 1000,3000,10000")
    ap.add_argument("--movielens", default="", help="fractions of the warm posters, e.g. 0.25,0.5,1")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "scale")
    ap.add_argument("--record", action="store_true", help="write the rows gathered so far into RESULTS.md")
    ap.add_argument("--from-run", type=Path, help="add the point of a finished demo-recipe run (with --size)")
    ap.add_argument("--size", type=int, help="the catalogue size of --from-run's platform")
    args = ap.parse_args()
    os.chdir(ROOT)
    args.work.mkdir(parents=True, exist_ok=True)
    rows_path = HERE / "rows" / "quality_scale.jsonl"  # kept in git: the curve outlives the machine it ran on
    if args.record:
        if not rows_path.is_file():
            raise SystemExit(f"{rows_path}: no rows yet; run the curve first")
        rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()]
        latest = {(r["curve"], r["size"]): r for r in rows}
        ordered = sorted(latest.values(), key=lambda r: (r["curve"], r["size"]))
        body = (
            "Each point a whole run on 2 CPU cores; test AUC by `evaluate` (ridge from pooled features to the ALS "
            "factors, λ on valid). Simulator: `socialfeat demo` with `simulate.n_items=N` (users 2 per 3 items). "
            "MovieLens: `configs/movielens.yaml` on a seeded fraction of the warm posters, cold items unchanged. "
            "`python bench/quality_scale.py --sim N,… --movielens F,…`; a point from a finished run of the demo "
            "recipe (bench/e2e.py's): `--from-run RUN --size N`. The interval: evaluate's paired bootstrap "
            "(1,000 resamples) over users and test items; an interval marked *users* resampled the users alone "
            "(points before 2026-12-07); points up to 10,000 items on 2026-12-02 have none. "
            "Train minutes are wall time on a shared machine.\n\n" + table(ordered)
        )
        record("data-scale curve (bench/quality_scale.py)", body)
        return
    if args.from_run:
        if not args.size:
            raise SystemExit("--from-run needs --size N (the simulated items of that run)")
        row = {"curve": "simulator", "size": args.size, "run": str(args.from_run), **_scores(args.from_run)}
        rows_path.parent.mkdir(exist_ok=True)
        with rows_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(table([row]), flush=True)
        return
    for n in [int(x) for x in args.sim.split(",") if x]:
        row = sim_point(n, args.work)
        rows_path.parent.mkdir(exist_ok=True)
        with rows_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(table([row]), flush=True)
    for f in [float(x) for x in args.movielens.split(",") if x]:
        row = movielens_point(f, args.work)
        rows_path.parent.mkdir(exist_ok=True)
        with rows_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(table([row]), flush=True)


if __name__ == "__main__":
    main()
