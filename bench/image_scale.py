"""The image side at catalogue scale (issue 24, part 6): simulate → image cache → one training epoch → epoch
selection → embed, at 10K, 30K and 100K simulated items at the demo's image size; images/s and peak RSS of each
step, and how they grow with the catalogue.

    python bench/image_scale.py                               # 10K, 30K, 100K; records RESULTS.md
    python bench/image_scale.py --sizes 10000 --no-record     # one size, print only
    python bench/image_scale.py --gpu                         # train, selection and embed on CUDA

Each size is its own demo platform (`socialfeat simulate`, users 2 per 3 items as in bench/quality_scale.py, 96 px),
ingested, factorized (no held-out evaluation) and given the factor and factor-cluster targets with the demo config
(the engagement head is left out: its targets embed every comment with MiniLM, text work that is not this bench's
subject, ~7 min at 30K items); then each measured step runs
in a fresh process, so its peak RSS (wait4) is its own:
- **cache**: the run's image cache at 96 px (`run_image_cache`, as train builds it: decoders on every core);
- **epoch**: `train` with the demo's recipe (EfficientNet-Lite0, last-4 blocks) for one epoch, selection off, so
  the figure is the training loop's own (its images/s from train's epoch record);
- **selection**: train's epoch selection (`make_selector` + `Selector.score`, `train.select_users` 5,000 and
  `train.select_valid_items` 2,000) with the epoch's model; built once, scored three times, the median call kept;
- **embed**: `embed --source learned` of every item (ONNX Runtime on CPU; the export is timed apart).
Simulate's own items/s is shown too; it is not one of the issue's targets (the demo platform's generator, not a
pipeline stage; bench/simulate.py --scaling measures its growth).

Targets (issue 24): selection seconds per call within ±20% from 10K to 100K; images/s of cache, epoch and embed
within ±15% across sizes; peak RSS not growing beyond the arrays a step must hold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _results import exponent, hardware, record  # noqa: E402

SIZE = 96  # the demo's image size
STEPS = ("simulate", "cache", "epoch", "selection", "selection_capped", "embed")
CAPPED = 500  # valid items per selection in the capped row: fewer than the demo split's 5% valid at 10K items
TIMED_CALLS = 3  # selection: calls per size (the median kept)


def overrides(run: Path, gpu: bool) -> list[str]:
    """The demo config pointed at this run's platform; one epoch without selection (selection is its own step)."""
    platform = run / "platform"
    return [
        f"ingest.interactions={platform / 'interactions.csv'}",
        f"ingest.items={platform / 'items.csv'}",
        f"ingest.comments={platform / 'comments.csv'}",
        "factorize.evaluate=false",
        "targets.targets=[factors,factor-clusters]",  # no engagement head: its comment embedding is text work
        "train.targets=[factors,factor-clusters]",
        "train.epochs=1",
        "train.select=last",
        f"train.device={'cuda' if gpu else 'cpu'}",
        "embed.runtime=auto",
    ]


def _config(run: Path, gpu: bool) -> Any:
    from socialfeat.config import load_config

    return load_config(ROOT / "configs" / "demo.yaml", overrides(run, gpu))


# ------------------------------------------------------------------------------------- the steps (children)
def memory_now() -> dict[str, float]:
    """This process's resident memory now, split (GB): anonymous (arrays, the model) and file-backed (mapped
    files: the image cache's pages read so far count in RSS, though the kernel can drop them at will)."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            found[f"{key[3:].lower()}_gb"] = int(rest.split()[0]) / 1024**2
    return found


def cpu_now() -> float:
    """CPU seconds so far of this process (all threads) and of its children that ended (decoder processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def step(name: str, run: Path, gpu: bool) -> dict[str, Any]:
    """One step in this (fresh) process; what it measured itself (the parent adds wall, CPU and peak RSS)."""
    config = _config(run, gpu)
    if name == "selection_capped":  # train.select_valid_items below every size's valid items: the same sample
        train = config.train.model_copy(update={"select_valid_items": CAPPED})
        return _selection(config.model_copy(update={"train": train}), run)
    if name == "prepare":
        from socialfeat.data.ingest import ingest
        from socialfeat.factorize.stage import factorize
        from socialfeat.targets.stage import targets

        ingest(config, run / "dataset")
        factorize(config, run)
        targets(config, run)
        return {}
    if name == "cache":
        from socialfeat.data.batches import run_image_cache

        t0, c0 = time.perf_counter(), cpu_now()
        cache = run_image_cache(run, SIZE, config.train.strict_images, config.train.max_pixels, workers=0)
        seconds, cpu = time.perf_counter() - t0, cpu_now() - c0
        images = len(cache.item_ids)
        return {
            "images": images,
            "seconds": seconds,
            "images_per_s": images / seconds,
            "images_per_cpu_s": images / cpu,
            **memory_now(),
        }
    if name == "epoch":
        from socialfeat.train import train

        marks: dict[str, float] = {}

        memory: dict[str, float] = {}

        def note(event: dict[str, Any]) -> None:  # CPU seconds from the loop's start to the epoch's record
            if event.get("event") in ("start", "epoch"):
                marks[event["event"]] = cpu_now()
            if event.get("event") == "epoch":
                memory.update(memory_now())

        result = train(config, run, progress=note)
        epoch = [h for h in result.metrics if h["epoch"] == 0][0]
        images = round(epoch["images_per_s"] * epoch["seconds"])
        cpu = marks["epoch"] - marks["start"]
        return {
            "images": images,
            "seconds": epoch["seconds"],
            "images_per_s": epoch["images_per_s"],
            "images_per_cpu_s": images / cpu,
            **memory,
        }
    if name == "selection":
        return _selection(config, run)
    if name == "embed":
        import torch

        from socialfeat.embed import _runtime, embed
        from socialfeat.features import source_model
        from socialfeat.runtime import Dist

        # the export first (made once per model, as embed and serve make it), so that the figures are embed's own
        model, desc = source_model(run, config, "learned")
        t0 = time.perf_counter()
        _runtime(model, SIZE, desc, config, run, "learned", Dist(device=torch.device(config.train.device)))
        exported = time.perf_counter() - t0
        del model
        ticks: list[tuple[float, int]] = []  # (time, images done) after each batch: the rate past the first batch
        c0 = cpu_now()
        summary = embed(
            config, run, "learned", lambda done, _n, _rate: ticks.append((time.perf_counter(), done))
        ).summary
        cpu = cpu_now() - c0
        (t_first, first), (t_half, half), (t_last, last) = ticks[0], ticks[len(ticks) // 2], ticks[-1]
        return {
            "images_per_cpu_s": summary["items"] / cpu,
            "images": summary["items"],
            "seconds": summary["seconds"],
            "images_per_s": summary["images_per_s"],
            "runtime": summary["runtime"],
            "export_seconds": exported,
            "after_first_batch_images_per_s": (last - first) / max(t_last - t_first, 1e-9),
            "second_half_images_per_s": (last - half) / max(t_last - t_half, 1e-9),
            **memory_now(),
        }
    raise SystemExit(f"unknown step {name}")


def _selection(config: Any, run: Path) -> dict[str, Any]:
    import torch

    from socialfeat.data.batches import run_image_cache
    from socialfeat.models.store import load_model
    from socialfeat.selection import make_selector

    cfg = config.train.model_copy(update={"select": "valid-auc"})
    device = torch.device("cuda" if config.train.device == "cuda" else "cpu")
    cache = run_image_cache(run, SIZE, cfg.strict_images, cfg.max_pixels)
    model, _ = load_model(run / "model")
    model.to(device)
    t0 = time.perf_counter()
    sel = make_selector(
        run, cfg, cache.path, cache.rows, config.evaluate.ridge_lambdas, config.embed.batch_size, config.seed
    )
    built = time.perf_counter() - t0
    assert sel is not None
    calls, cpus = [], []
    for _ in range(TIMED_CALLS):
        c0 = cpu_now()
        calls.append(sel.score(model, device))
        cpus.append(cpu_now() - c0)
    seconds = statistics.median(c["select_seconds"] for c in calls)
    images = len(sel.rows)
    return {
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "images_per_cpu_s": images / statistics.median(cpus),
        "calls": [round(c["select_seconds"], 2) for c in calls],
        "setup_seconds": built,
        "sample": sel.summary,
        **memory_now(),
    }


# --------------------------------------------------------------------------------------------- the parent
def measured(argv: list[str], log: Path) -> dict[str, Any]:
    """Run ``argv``; its wall seconds, CPU seconds (all threads and children it waited for) and peak RSS (GB)."""
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{log.read_text()[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_gb": usage.ru_maxrss / 1024**2}


def size_point(n: int, work: Path, gpu: bool) -> dict[str, Any]:
    run = work / f"run-{n}"
    users = max(300, 2 * n // 3)
    log = work / f"run-{n}.log"
    out: dict[str, Any] = {"items": n, "users": users, "load": os.getloadavg()}
    sim = [sys.executable, "-m", "socialfeat", "simulate", "--out", str(run / "platform"), "--items", str(n)]
    sim += ["--users", str(users), "--image-size", str(SIZE), "--seed", "0"]
    m = measured(sim, log)
    rates = {"images_per_s": n / m["wall"], "images_per_cpu_s": n / m["cpu"]}
    out["simulate"] = {**m, "images": n, "seconds": m["wall"], **rates}
    print(f"  simulate   {m['wall']:7.1f} s  {n / m['wall']:7.1f} img/s  {m['rss_gb']:5.2f} GB", flush=True)
    prep = measured([sys.executable, __file__, "--step", "prepare", str(run)], log)
    print(f"  (ingest + factorize + targets {prep['wall']:.0f} s)", flush=True)
    for name in STEPS[1:]:
        result = work / f"{name}-{n}.json"
        argv = [sys.executable, __file__, "--step", name, str(run), "--result", str(result)]
        m = measured(argv + (["--gpu"] if gpu else []), log)
        got = json.loads(result.read_text())
        out[name] = {**m, **got}
        print(
            f"  {name:10s} {got['seconds']:7.1f} s  {got['images_per_s']:7.1f} img/s  {m['rss_gb']:5.2f} GB"
            f"  ({got['images']:,} images; process {m['wall']:.0f} s wall, {m['cpu']:.0f} s CPU)",
            flush=True,
        )
    return out


def _ratio(points: list[dict[str, Any]], step_name: str, key: str) -> str:
    """Each larger size's ``key`` ÷ the smallest's; for a selection, whose target is seconds per call, the ratio
    of seconds (``images_per_s``) or of CPU seconds (``images_per_cpu_s``) instead."""

    def value(p: dict[str, Any]) -> float:
        got = p[step_name]
        if not step_name.startswith("selection"):
            return got[key]
        return got["seconds"] if key == "images_per_s" else got["images"] / got["images_per_cpu_s"]

    base = value(points[0])
    return " / ".join(f"{value(p) / base:.2f}" for p in points[1:])


def table(points: list[dict[str, Any]]) -> str:
    sizes = [p["items"] for p in points]
    head = "| step | " + " | ".join(f"{n // 1000}K: img/s (per CPU s) · s · GB" for n in sizes)
    head += (
        " | img/s ÷ smallest's (selection: s) | per CPU s ÷ smallest's (selection: CPU s) | RSS exponent |\n|---|"
        + "---:|" * (len(sizes) + 3)
    )
    lines = []
    for s in [s for s in STEPS if all(s in p for p in points)]:
        cells = [
            f"{p[s]['images_per_s']:.1f} ({p[s]['images_per_cpu_s']:.1f}) · {p[s]['seconds']:.1f} · "
            f"{p[s]['rss_gb']:.2f}"
            for p in points
        ]
        many = len(points) > 1
        wall, cpu = (_ratio(points, s, "images_per_s"), _ratio(points, s, "images_per_cpu_s")) if many else ("–", "–")
        first, last = points[0][s]["rss_gb"], points[-1][s]["rss_gb"]
        rss = f"{exponent(first, last, sizes[0], sizes[-1]):.2f}" if many else "–"
        name = f"selection, {CAPPED} valid items" if s == "selection_capped" else s
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall} | {cpu} | {rss} |")
    return head + "\n" + "\n".join(lines) + "\n"


def details(points: list[dict[str, Any]]) -> str:
    """Epoch selection's calls and samples, then each step's resident memory and embed's pass: two tables."""

    def n(x: Any) -> str:
        return f"{x:,}" if isinstance(x, int) else "–"

    def sample(sel: dict[str, Any]) -> str:
        got = sel["sample"]
        return (
            f"{n(got.get('embedded'))} | {n(got.get('fit_items'))} | "
            f"{n(got.get('select_valid_items'))} of {n(got.get('select_valid_items_of'))} | "
            f"{n(got.get('select_users'))} of {n(got.get('select_users_of'))}"
        )

    def calls(sel: dict[str, Any]) -> str:
        return ", ".join(f"{c:g}" for c in sel["calls"])

    def resident(step: dict[str, Any]) -> str:
        return f"{step['anon_gb']:.2f} + {step['file_gb']:.2f}" if "anon_gb" in step else "–"

    rows = [
        "Epoch selection's calls and samples (load average at each size's start in brackets):",
        "",
        "| items × users | calls, s | images | fit items | valid items | users | selector built |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        sel, capped = p["selection"], p.get("selection_capped")
        load = ", ".join(f"{x:.1f}" for x in p["load"])
        rows.append(
            f"| {p['items']:,} × {p['users']:,} ({load}) | {calls(sel)} | {sample(sel)} | {sel['setup_seconds']:.1f} s |"
        )
        if capped:
            rows.append(f"| {p['items']:,}, capped | {calls(capped)} | {sample(capped)} | – |")
    rows += [
        "",
        "Resident memory at the step's end (anonymous + mapped files), and embed's pass:",
        "",
        "| items | epoch GB | selection GB | embed GB | runtime | export s | img/s after the first batch "
        "| img/s, second half |",
        "|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for p in points:
        emb = p["embed"]
        rows.append(
            f"| {p['items']:,} | {resident(p['epoch'])} | {resident(p['selection'])} | {resident(emb)} "
            f"| {emb['runtime']} | {emb['export_seconds']:.1f} "
            f"| {emb.get('after_first_batch_images_per_s', float('nan')):.1f} "
            f"| {emb.get('second_half_images_per_s', float('nan')):.1f} |"
        )
    return "\n".join(rows) + "\n"


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every size in turn; the points so far are kept in WORK/points.json (``--points`` records them later)."""
    work = args.work or Path(tempfile.mkdtemp(prefix="image-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(hardware(), flush=True)
    points: list[dict[str, Any]] = []
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            print(f"{n:,} items", flush=True)
            points.append(size_point(n, work, args.gpu))
            (work / "points.json").write_text(json.dumps(points))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="catalogue sizes (items)")
    parser.add_argument("--gpu", action="store_true", help="train, selection and embed on CUDA")
    parser.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--points", type=Path, help="record the points.json of an earlier run instead of running")
    parser.add_argument("--redo", help="with --points: time these steps again on the kept runs (comma list)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("run", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        got = step(args.step, args.run, args.gpu)
        if args.result:
            args.result.write_text(json.dumps(got))
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB", flush=True)
        return
    points = json.loads(args.points.read_text()) if args.points else measure(args)
    for name in [s for s in (args.redo or "").split(",") if s]:  # steps timed again (or added) on the kept runs
        if not args.points or name not in STEPS[1:]:
            raise SystemExit(f"--redo {name}: needs --points and one of {', '.join(STEPS[1:])}")
        for p in points:
            run, result = args.points.parent / f"run-{p['items']}", args.points.parent / f"{name}-{p['items']}.json"
            argv = [sys.executable, __file__, "--step", name, str(run), "--result", str(result)]
            m = measured(argv + (["--gpu"] if args.gpu else []), args.points.parent / f"run-{p['items']}.log")
            p[name] = {**m, **json.loads(result.read_text()), "redone": True}
            print(f"  {p['items']:,} {name}: {p[name]['seconds']:.1f} s", flush=True)
        args.points.write_text(json.dumps(points))
    body = table(points) + "\n" + details(points)
    print(body, flush=True)
    if not args.no_record:
        intro = (
            (
                "Recorded from a kept run (`--points WORK/points.json`); the steps given to `--redo` were timed "
                "again on every size, one after another, with nothing else running."
                if args.points
                else f"Load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}."
            )
            + "\n\n"
            "Each cell: images/s (images per CPU second, all threads and decoder processes) · the step's seconds "
            "· peak RSS.\nImages per CPU second is what sharing the cores inflates least.\n"
            "The seconds are the step's own timer: cache build, the epoch's loop, the median selection call, "
            "embed's forward passes.\nPeak RSS is that of the step's fresh process.\n"
            "The ratio columns divide each larger size's rate by the smallest size's.\n"
            "Targets: within ±15% for cache, epoch and embed; selection seconds per call within ±20%.\n"
            "Selection's sample of valid items stops growing at `train.select_valid_items` (2,000).\n"
            "The demo split holds 5% valid items, so that cap binds from 40K items on.\n"
            f"A second selection row caps the sample at {CAPPED}, below every size's valid items.\n"
            f"Demo config, 96 px, EfficientNet-Lite0 last-4, {'CUDA' if args.gpu else 'CPU'}.\n\n"
            "    python bench/image_scale.py" + (" --gpu" if args.gpu else "") + "\n\n"
        )
        title = "The image side at catalogue scale (bench/image_scale.py" + (", GPU)" if args.gpu else ")")
        record(title, intro + body)


if __name__ == "__main__":
    main()
