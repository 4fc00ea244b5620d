"""The seed's catalogue end to end with pixels (issue 34, item 2): ``socialfeat run`` on a simulated platform of N
items with real images, every stage a fresh process, timed and measured.

    python bench/e2e.py --items 2000 --epochs 1 --out /tmp/e2e-2k        # a smoke test: minutes
    python bench/e2e.py --items 100000 --out /tmp/e2e-100k               # the measurement: 1-2 hours on 2 cores
    python bench/e2e.py --out /tmp/e2e-100k --resume                     # go on after an interruption
    python bench/e2e.py --out /tmp/e2e-100k --resume --record            # record a finished run in RESULTS.md
    python bench/e2e.py --out /tmp/e2e-423k --show [--record]            # the table so far; runs nothing
    python bench/e2e.py --compare A/e2e.json B/e2e.json [--record]       # two sizes: growth exponents per stage
    python bench/e2e.py --gpu --items 100000 --against CPU/e2e.json      # train and embed on CUDA at 224 px

The platform comes from ``socialfeat simulate`` (users 2 per 3 items, the demo's 96-px images) in its own fresh
process, into ``DIR/platform``. The run folder is ``DIR/run``. Its config is the packaged demo config
(src/socialfeat/configs/demo.yaml: EfficientNet-Lite0, last 4 blocks, 96 px) pointed at that platform, with
``--epochs`` and no transfer sets (the simulator draws no held-out collection). It is written to
``DIR/run/config.yaml`` as ``socialfeat run`` writes it.

The stages are those ``socialfeat run`` runs for that config (``pipeline.pipeline_stages``), in its order. Each
runs as the stage's own command, ``python -m socialfeat STAGE RUN -c RUN/config.yaml``, which calls the function
``socialfeat run`` calls. Two stages take more than one process:
- **train**: the image cache first (``run_image_cache``, as train builds it, one process decoding on every core),
  so that its images/s is measured apart; then ``socialfeat train``, which finds the cache current.
- **embed**: ``socialfeat embed --source S`` once per source that ``socialfeat run`` embeds (``embed_sources``).

Per process: wall seconds; CPU seconds (user + sys from ``os.wait4``, which counts the process and every
descendant it waited for); peak memory two ways. ``maxrss`` is wait4's ``ru_maxrss``: the largest single process of
the tree. ``tree PSS`` samples the summed proportional set size of the process and its live descendants every
0.5 s (workers included, the pages they share counted once). A stage's row sums wall and CPU over its processes and keeps the largest peak. Disk is what the run
folder (and the platform folder) hold on disk after the stage (``st_blocks``, hard links once).

Results go to ``DIR/e2e.json``, rewritten atomically after each process, so ``--resume`` skips what is done.
Targets (issue 34, at 423K items): no stage over 60 min, peak RSS ≤ 16 GB, the whole run ≤ 4 h; between two
sizes, no stage's time growing faster than N^1.15.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _results import exponent, hardware, record  # noqa: E402

SEED_ITEMS = 423_000  # the seed paper's catalogue: the size the targets are stated for
TARGET_STAGE_S = 60 * 60.0
TARGET_RSS_GB = 16.0
TARGET_TOTAL_S = 4 * 3600.0
TARGET_EXPONENT = 1.15
SAMPLE_S = 0.5  # how often the process tree's summed PSS is sampled
GPU_HEADING = "End to end with pixels on a GPU (bench/e2e.py --gpu)"


def heading(states: list[dict[str, Any]]) -> str:
    """One RESULTS section per size, so that recording 423K keeps the 100K table; one for the growth between."""
    if len(states) > 1:
        return "End to end with pixels: growth between sizes (bench/e2e.py --compare)"
    if states[0]["args"]["gpu"]:
        return GPU_HEADING
    return f"End to end with pixels at {states[0]['args']['items']:,} items (bench/e2e.py)"


# ---------------------------------------------------------------------------------------------------- measuring
def _children() -> dict[int, list[int]]:
    """Every live process's children, from /proc (ppid is the 4th field of /proc/PID/stat, after the name)."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _pss(pid: int) -> tuple[int, int]:
    """Bytes of ``pid``'s proportional set size: its private pages, and its share of pages other processes map
    too (the libraries a parent and its decoder workers share count once in the tree's sum, not once a process).
    Second, its anonymous part: memory the process needs, without the mapped files (the image cache) whose pages
    the kernel can drop and read again."""
    found = {"Pss:": 0, "Pss_Anon:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line else ""
            if key in found:
                found[key] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found["Pss:"], found["Pss_Anon:"]


def tree_pss(pid: int) -> tuple[int, int]:
    """Bytes resident in ``pid`` and all its live descendants now, shared pages split (0 once it is gone), and
    the anonymous part of them."""
    kids, todo, total, anon = _children(), [pid], 0, 0
    while todo:
        p = todo.pop()
        pss, anonymous = _pss(p)
        total, anon = total + pss, anon + anonymous
        todo.extend(kids.get(p, []))
    return total, anon


def measured(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` as a fresh child, output to ``log``; its wall and CPU seconds and its peak RSS (GB) two ways."""
    log.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    started = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        peak = [0, 0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_S):
                now = tree_pss(proc.pid)
                peak[0], peak[1] = max(peak[0], now[0]), max(peak[1], now[1])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"failed ({proc.returncode}) after {wall:.0f} s: {' '.join(cmd)}\n{tail}\n(log: {log})")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "maxrss_gb": round(usage.ru_maxrss / 1024**2, 3),  # KB → GB: the largest single process of the tree
        "tree_pss_gb": round(peak[0] / 1024**3, 3),
        "tree_anon_gb": round(peak[1] / 1024**3, 3),  # the same, mapped files left out
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def disk_gb(path: Path) -> float:
    """What ``path`` holds on disk (allocated blocks, each hard-linked file once), in GB."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return round(total / 1024**3, 3)


# ---------------------------------------------------------------------------------------------------- the run
def socialfeat(*args: str) -> list[str]:
    return [sys.executable, "-m", "socialfeat", *args]


def make_config(out: Path, args: dict[str, Any]) -> Any:
    """The packaged demo config on DIR/platform: the recipe at ``--image-size``, ``--epochs``, no transfer sets."""
    from socialfeat.pipeline import demo_config

    overrides = [
        "name=e2e",
        f"seed={args['seed']}",
        f"simulate.n_items={args['items']}",
        f"simulate.n_users={args['users']}",
        f"simulate.image_size={args['image_size']}",
        f"train.image_size={args['image_size']}",
        f"train.epochs={args['epochs']}",
        f"train.images_per_epoch={args.get('images_per_epoch') or 0}",
        "transfer.sets=[]",
    ]
    if args["gpu"]:
        overrides.append("train.device=cuda")
    return demo_config(out, overrides=overrides)  # its platform paths are DIR/platform/…, as the demo's


def stage_steps(config: Any, args: dict[str, Any], out: Path) -> list[tuple[str, list[str], list[str]]]:
    """(stage, [step names], [commands]) for every stage, in ``socialfeat run``'s order, simulate first."""
    from socialfeat.freshness import embed_sources
    from socialfeat.pipeline import pipeline_stages

    run, cfg = out / "run", str(out / "run" / "config.yaml")
    simulate = socialfeat(
        "simulate", "--out", str(out / "platform"), "--items", str(args["items"]), "--users", str(args["users"]),
        "--image-size", str(args["image_size"]), "--seed", str(args["seed"]),
    )  # fmt: skip
    plan: list[tuple[str, list[str], list[list[str]]]] = [("simulate", ["simulate"], [simulate])]
    for stage in pipeline_stages(config, simulate=False):
        if stage == "ingest":
            plan.append((stage, [stage], [socialfeat("ingest", "--out", str(run / "dataset"), "-c", cfg)]))
        elif stage == "train":
            names, cmds = (
                ["image cache", "train"],
                [
                    [sys.executable, str(Path(__file__).resolve()), "--child-cache", str(run)],
                    socialfeat("train", str(run), "-c", cfg),
                ],
            )
            if config.train.meta_class:
                names.append("meta-class")
                cmds.append(socialfeat("train", str(run), "--meta-class", "-c", cfg))
            plan.append((stage, names, cmds))
        elif stage == "embed":
            sources = list(embed_sources(config))
            plan.append((stage, sources, [socialfeat("embed", str(run), "--source", s, "-c", cfg) for s in sources]))
        else:
            plan.append((stage, [stage], [socialfeat(stage, str(run), "-c", cfg)]))
    return plan  # type: ignore[return-value]


def child_cache(run: Path) -> None:
    """The train stage's image cache, as train builds it (one process: decoders on every core), timed here."""
    from socialfeat.config import load_config
    from socialfeat.data.batches import run_image_cache

    cfg = load_config(run / "config.yaml").train
    t0 = time.perf_counter()
    cache = run_image_cache(run, cfg.image_size, cfg.strict_images, cfg.max_pixels, workers=0)
    seconds = time.perf_counter() - t0
    (run.parent / "e2e-cache.json").write_text(json.dumps({"images": len(cache.item_ids), "seconds": seconds}))


def save(path: Path, state: dict[str, Any]) -> None:
    from socialfeat.atomic import write_json

    write_json(path, state)


def commit() -> str | None:
    try:
        got = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return got.stdout.strip() or None


def device_name(gpu: bool) -> str:
    if not gpu:
        return "CPU"
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CUDA (none found)"


def results(out: Path) -> dict[str, Any]:
    """What the run says about itself: the platform's size, learned − ImageNet, the epoch kept, images/s."""
    run = out / "run"
    found: dict[str, Any] = {}
    stats = run / "dataset" / "stats.json"
    if stats.is_file():
        after = json.loads(stats.read_text()).get("after", {})
        found["dataset"] = {k: after[k] for k in ("interactions", "pairs", "users", "items") if k in after}
    model = run / "model" / "model.json"
    if model.is_file():
        m = json.loads(model.read_text())
        found["train"] = {k: m.get(k) for k in ("selected_epoch", "train_seconds", "train", "valid", "image_size")}
        found["train"]["train_minutes"] = round(m.get("train_seconds", 0.0) / 60, 2)
        epochs = [
            json.loads(line) for line in (run / "model" / "metrics.jsonl").read_text().splitlines() if line.strip()
        ]
        found["train"]["epochs"] = sum(e["epoch"] >= 0 for e in epochs)
        found["epoch_images_per_s"] = [round(e["images_per_s"], 1) for e in epochs if "images_per_s" in e]
    cache = out / "e2e-cache.json"
    if cache.is_file():
        c = json.loads(cache.read_text())
        found["cache"] = {**c, "images_per_s": c["images"] / c["seconds"]}
    embed = {}
    for path in sorted((run / "features").glob("*.json")) if (run / "features").is_dir() else []:
        f = json.loads(path.read_text())
        if "images_per_s" in f and f.get("source"):
            embed[f["source"]] = {k: f.get(k) for k in ("items", "seconds", "images_per_s", "runtime", "image_size")}
    if embed:
        found["embed"] = embed
    metrics = run / "eval" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        found["differences"] = m.get("differences", [])
        found["split"] = m.get("split", {})
    return found


def learned_vs_imagenet(found: dict[str, Any]) -> dict[str, Any] | None:
    return next((d for d in found.get("differences", []) if d.get("label") == "learned − ImageNet"), None)


def run_all(out: Path, args: dict[str, Any], resume: bool, stop_after: str | None = None) -> dict[str, Any]:
    """Every stage not yet recorded in DIR/e2e.json, each process measured; the state after each is saved.
    ``stop_after`` ends the run once that stage is done: a long run pauses between stages, never inside one."""
    state_path = out / "e2e.json"
    if state_path.is_file():
        if not resume:
            raise SystemExit(f"{state_path} exists: pass --resume to go on with it, or another --out")
        state = json.loads(state_path.read_text())
        if any(state["args"][k] != v for k, v in args.items() if k in state["args"] and v is not None):
            given = {k: v for k, v in args.items() if v is not None and state["args"].get(k) != v}
            raise SystemExit(f"{state_path} was run with {state['args']}; --resume got {given}")
        args = state["args"]
    else:
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} is not empty and holds no e2e.json: give a new --out")
        state = {
            "bench": "e2e",
            "args": args,
            "hardware": hardware(),
            "device": device_name(args["gpu"]),
            "commit": commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stages": {},
        }
    run = out / "run"
    config = make_config(out, args)
    if not (run / "config.yaml").is_file():  # as `socialfeat run` makes its run folder
        from socialfeat.atomic import claim_dir, mark, write_text
        from socialfeat.config import dump_config

        claim_dir(run, "run")
        run.mkdir(parents=True, exist_ok=True)
        mark(run, "run")
        write_text(run / "config.yaml", dump_config(config, run))
    save(state_path, state)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    plan = stage_steps(config, args, out)
    if stop_after is not None and stop_after not in [stage for stage, _, _ in plan]:
        raise SystemExit(f"--stop-after {stop_after}: not a stage of this run ({', '.join(s for s, _, _ in plan)})")
    for stage, names, cmds in plan:
        entry = state["stages"].setdefault(stage, {"steps": {}})
        if entry.get("done"):
            print(f"{stage}: done before ({entry['wall_s']:.1f} s)", flush=True)
            continue
        for name, cmd in zip(names, cmds, strict=True):
            if name in entry["steps"]:
                continue
            print(f"{stage}: {name} …", flush=True)
            m = measured(cmd, out / "logs" / f"{stage}-{name.replace(' ', '-')}.log", env)
            entry["steps"][name] = {"command": " ".join(cmd[2:] if cmd[1] == "-m" else cmd[1:]), **m}
            save(state_path, state)
            print(f"{stage}: {name} {m['wall_s']:.1f} s, CPU {m['cpu_s']:.1f} s, {m['tree_pss_gb']:.2f} GB", flush=True)
        steps = entry["steps"].values()
        entry.update(
            wall_s=round(sum(s["wall_s"] for s in steps), 2),
            cpu_s=round(sum(s["cpu_s"] for s in steps), 2),
            maxrss_gb=max(s["maxrss_gb"] for s in steps),
            tree_pss_gb=max(s["tree_pss_gb"] for s in steps),
            tree_anon_gb=max(s.get("tree_anon_gb", 0.0) for s in steps),
            run_disk_gb=disk_gb(run),
            platform_disk_gb=disk_gb(out / "platform"),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            commit=commit(),  # a run resumed across sessions may run its stages at several commits
            done=True,
        )
        state["results"] = results(out)
        save(state_path, state)
        if stage == stop_after:
            print(f"e2e: stopped after {stage}; go on with --resume", flush=True)
            break
    state["results"] = results(out)
    state["finished"] = state.get("finished") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save(state_path, state)
    return state


# ---------------------------------------------------------------------------------------------------- tables
def _hm(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 600 else f"{seconds:.1f} s"


def _gb(x: float) -> str:
    return f"{x:.2f} GB" if x >= 1 else f"{x * 1024:.0f} MB"


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def peak(entry: dict[str, Any]) -> float:
    """A stage's peak RSS: the larger of the sampled tree's and wait4's largest process."""
    return max(entry.get("tree_pss_gb", 0.0), entry.get("maxrss_gb", 0.0))


def size_line(state: dict[str, Any]) -> str:
    a, found = state["args"], state.get("results", {})
    events = found.get("dataset", {}).get("interactions")
    tail = f" ({events:,} events after ingest's filter)" if events else ""
    sample = f" of {a['images_per_epoch']:,} sampled images" if a.get("images_per_epoch") else ""
    epochs = f"{a['epochs']} epoch{'s' if a['epochs'] != 1 else ''}{sample}"
    return f"{a['items']:,} items × {a['users']:,} users{tail}, {a['image_size']} px, {epochs}"


def stage_table(state: dict[str, Any]) -> list[str]:
    """The per-stage table (markdown) with the 423K targets beside each figure."""
    at_seed = state["args"]["items"] >= SEED_ITEMS
    rows = [
        "| stage | wall | CPU | peak: tree PSS / largest RSS | of it anonymous | run folder on disk | processes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    total_wall = total_cpu = 0.0
    for stage, e in state["stages"].items():
        if not e.get("done"):
            rows.append(f"| {stage} | (not finished) | | | | | |")
            continue
        total_wall += e["wall_s"]
        total_cpu += e["cpu_s"]
        steps = e["steps"]
        detail = ", ".join(f"{n} {_hm(s['wall_s'])}" for n, s in steps.items()) if len(steps) > 1 else ""
        disk = _gb(e["run_disk_gb"]) + (f" (+ platform {_gb(e['platform_disk_gb'])})" if stage == "simulate" else "")
        flag = "" if not at_seed else f" ({_met(e['wall_s'] <= TARGET_STAGE_S)})"
        rows.append(
            f"| {stage} | {_hm(e['wall_s'])}{flag} | {_hm(e['cpu_s'])} | {e['tree_pss_gb']:.2f} / {e['maxrss_gb']:.2f} GB"
            f" | {_gb(e['tree_anon_gb']) if e.get('tree_anon_gb') else '–'} | {disk} | {detail} |"
        )
    done = [e for e in state["stages"].values() if e.get("done")]
    worst = max(done, key=lambda e: e["wall_s"]) if done else None
    high = max((peak(e) for e in done), default=0.0)
    rows.append(f"| **total** | **{_hm(total_wall)}** | {_hm(total_cpu)} | {high:.2f} GB | | | |")
    lines = [*rows, ""]
    if worst is not None:
        longest = next(s for s, e in state["stages"].items() if e is worst)
        where = "at this size" if at_seed else f"at 423K; this run has {state['args']['items']:,} items"
        lines += [
            f"Targets ({where}): the longest stage ({longest}) {_hm(worst['wall_s'])} against ≤ 60 min: "
            f"{_met(worst['wall_s'] <= TARGET_STAGE_S)}; peak RSS {high:.2f} GB against ≤ 16 GB: "
            f"{_met(high <= TARGET_RSS_GB)}; the whole {_hm(total_wall)} against ≤ 4 h: {_met(total_wall <= TARGET_TOTAL_S)}.",
            "",
        ]
    return lines


def quality_lines(state: dict[str, Any]) -> list[str]:
    found = state.get("results", {})
    lines = []
    diff = learned_vs_imagenet(found)
    if diff is not None:
        ci = diff.get("ci") or [math.nan, math.nan]
        extra = "".join(
            f"; {k.replace('_', ' ')} [{v[0]:+.4f}, {v[1]:+.4f}]"
            for k, v in diff.items()
            if k.startswith("ci_") and isinstance(v, list) and len(v) == 2
        )  # the two-way interval of issue 34 item 4, once evaluate writes one
        test = found.get("split", {}).get("test")
        lines.append(
            f"- learned − ImageNet cold-start AUC: {diff['diff']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]{extra}"
            + (f", on {test:,} cold test items." if test else ".")
        )
    t = found.get("train")
    if t:
        lines.append(
            f"- train: kept epoch {t['selected_epoch']} of {t['epochs']}; {t['train_minutes']:.1f} min in train's loop "
            f"({t['train']:,} training items, {t['valid']:,} held out)."
        )
    rates = []
    if "cache" in found:
        rates.append(f"cache {found['cache']['images_per_s']:.0f}")
    if found.get("epoch_images_per_s"):
        rates.append("epochs " + " / ".join(f"{r:.0f}" for r in found["epoch_images_per_s"]))
    for source, e in found.get("embed", {}).items():
        rates.append(f"embed {source} {e['images_per_s']:.0f} ({e['runtime']})")
    if rates:
        lines.append(f"- images/s: {'; '.join(rates)}.")
    return lines


def stage_exponents(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Per stage, time ∝ N^exponent between two sizes (wall and CPU), against ≤ 1.15."""
    (a, b) = sorted((a, b), key=lambda s: s["args"]["items"])
    na, nb = a["args"]["items"], b["args"]["items"]
    rows = [
        f"| stage | {na:,}: wall | {nb:,}: wall | exponent, wall | exponent, CPU | exponent, peak RSS | ≤ {TARGET_EXPONENT} |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for stage, ea in a["stages"].items():
        eb = b["stages"].get(stage)
        if not (ea.get("done") and eb and eb.get("done")):
            continue
        wall = exponent(ea["wall_s"], eb["wall_s"], na, nb)
        cpu = exponent(ea["cpu_s"], eb["cpu_s"], na, nb)
        rss = exponent(peak(ea), peak(eb), na, nb)
        rows.append(
            f"| {stage} | {_hm(ea['wall_s'])} | {_hm(eb['wall_s'])} | {wall:.2f} | {cpu:.2f} | {rss:.2f} | "
            f"{_met(wall <= TARGET_EXPONENT)} |"
        )
    return [*rows, ""]


def gpu_lines(gpu: dict[str, Any], cpu: dict[str, Any]) -> list[str]:
    """Images/s of cache, the epochs and embed on the GPU against the CPU run's, each with its ratio."""
    g, c = gpu.get("results", {}), cpu.get("results", {})

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else math.nan

    pairs = [
        ("image cache", g.get("cache", {}).get("images_per_s"), c.get("cache", {}).get("images_per_s")),
        ("epoch (mean)", mean(g.get("epoch_images_per_s", [])), mean(c.get("epoch_images_per_s", []))),
        *(
            (f"embed {s}", e["images_per_s"], c.get("embed", {}).get(s, {}).get("images_per_s"))
            for s, e in g.get("embed", {}).items()
        ),
    ]
    rows = [
        f"| step | {gpu['device']}, {gpu['args']['image_size']} px: img/s | CPU, {cpu['args']['image_size']} px: img/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, a, b in pairs:
        ratio = f"{a / b:.1f}×" if a and b and not math.isnan(a) and not math.isnan(b) else "–"
        rows.append(f"| {name} | {_num(a)} | {_num(b)} | {ratio} |")
    return [*rows, ""]


def _num(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def section(states: list[dict[str, Any]], against: dict[str, Any] | None, command: str) -> str:
    """The RESULTS.md body: how it was run, then per size its table and quality lines, then the exponents."""
    first = states[0]
    later = sorted({c for s in states for e in s["stages"].values() if (c := e.get("commit")) and c != s.get("commit")})
    moved = f" (later stages at {', '.join(later)}: each stage's commit is in e2e.json)" if later else ""
    lines = [
        f"Command: {command} at commit {first.get('commit') or '?'}{moved}; device: {first['device']}.",
        "",
        "The platform is `socialfeat simulate`'s: real images, the demo's taste model, the users stated below.",
        "The run is the packaged demo config on it: EfficientNet-Lite0, last 4 blocks, the epochs stated.",
        "Every stage runs as its own command in a fresh process, in `socialfeat run`'s order.",
        "train's image cache is built first in its own process; embed runs once per source.",
        "CPU is user + sys from wait4, workers included. Peak memory: the tree's summed PSS, sampled every 0.5 s / wait4's largest process's RSS.",
        "Anonymous: the peak of the tree's PSS without mapped files. The image cache is a mapped file: its pages count in RSS, but the kernel can drop them.",
        "Disk is what the run folder holds after the stage; simulate adds the platform folder.",
        "",
    ]
    for state in states:
        loads = [e["steps"][n]["load_before"][0] for e in state["stages"].values() for n in e["steps"]]
        load = f" Load average (1 min) at each process's start: {min(loads):.1f}–{max(loads):.1f}." if loads else ""
        lines += [f"**{size_line(state)}** (started {state['started']}).{load}", "", *stage_table(state)]
        lines += [*quality_lines(state), ""]
    if len(states) == 2:
        lines += ["Growth of each stage between the two sizes (time ∝ N^exponent):", "", *stage_exponents(*states)]
    if against is not None:
        lines += ["Images/s against the CPU run:", "", *gpu_lines(states[0], against)]
    return "\n".join(lines).rstrip() + "\n"


def summary_rows(states: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(claim, figure, target, command) rows for RESULTS.md's summary table."""
    rows = []
    for s in states:
        done = [e for e in s["stages"].values() if e.get("done")]
        if not done:
            continue
        n = s["args"]["items"]
        wall = sum(e["wall_s"] for e in done)
        longest = max(s["stages"].items(), key=lambda kv: kv[1].get("wall_s", 0.0))
        high = max(peak(e) for e in done)
        ok = wall <= TARGET_TOTAL_S and longest[1]["wall_s"] <= TARGET_STAGE_S and high <= TARGET_RSS_GB
        target = f"≤ 4 h, stage ≤ 60 min, ≤ 16 GB: {'met' if ok else 'missed'}" if n >= SEED_ITEMS else "none"
        rows.append(
            (
                f"end to end with pixels at {n // 1000}K items: whole, longest stage, peak RSS",
                f"{_hm(wall)}, {longest[0]} {_hm(longest[1]['wall_s'])}, {high:.2f} GB",
                target,
                f"`python bench/e2e.py --items {n}`",
            )
        )
        diff = learned_vs_imagenet(s.get("results", {}))
        if diff is not None:
            rows.append(
                (
                    f"end to end at {n // 1000}K items: learned − ImageNet cold-start AUC",
                    f"{diff['diff']:+.4f} [{diff['ci'][0]:+.4f}, {diff['ci'][1]:+.4f}]",
                    "≥ +0.03" if n >= SEED_ITEMS else "none",
                    f"`python bench/e2e.py --items {n}`",
                )
            )
    return rows


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, help="items (images) of the simulated platform [100000]")
    parser.add_argument("--users", type=int, help="users [2 per 3 items]")
    parser.add_argument("--epochs", type=int, help="training epochs [the demo config's]")
    parser.add_argument(
        "--images-per-epoch", type=int, help="train on a fresh sample of N images each epoch [0: all of them]"
    )
    parser.add_argument("--stop-after", help="pause after this stage (go on later with --resume)")
    parser.add_argument("--show", action="store_true", help="the table of --out's e2e.json as it stands; runs nothing")
    parser.add_argument("--image-size", type=int, help="image side, simulated and trained on [96; 224 with --gpu]")
    parser.add_argument("--seed", type=int, help="simulator and run seed [0]")
    parser.add_argument("--out", type=Path, help="keep the platform, run and e2e.json here [a new folder in /tmp]")
    parser.add_argument("--resume", action="store_true", help="go on with --out's e2e.json, skipping finished stages")
    parser.add_argument("--gpu", action="store_true", help="train and embed on CUDA")
    parser.add_argument("--against", type=Path, help="a CPU run's e2e.json: images/s compared (with --gpu)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar="JSON", help="two sizes' e2e.json: exponents")
    parser.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md")
    parser.add_argument("--child-cache", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child_cache is not None:
        child_cache(a.child_cache)
        return
    against = json.loads(a.against.read_text()) if a.against else None
    if a.compare:
        states = sorted((json.loads(p.read_text()) for p in a.compare), key=lambda s: s["args"]["items"])
        runs = " and ".join(f"`{canonical(s['args'])}`" for s in states)
        command = f"{runs}, then `python bench/e2e.py --compare " + " ".join(str(p) for p in a.compare) + "`"
    else:
        if (a.resume or a.show) and a.out is None:
            parser.error("--resume and --show need --out")
        out = a.out or Path(tempfile.mkdtemp(prefix="socialfeat-e2e-"))
        given = {"items": a.items, "users": a.users, "epochs": a.epochs, "image_size": a.image_size}
        given |= {"gpu": a.gpu or None, "seed": a.seed, "images_per_epoch": a.images_per_epoch}
        if not (a.resume and (out / "e2e.json").is_file()):
            items = a.items or 100_000
            given = {
                "items": items,
                "users": a.users or max(10, items * 2 // 3),
                "epochs": a.epochs or _demo_epochs(),
                "image_size": a.image_size or (224 if a.gpu else 96),
                "images_per_epoch": a.images_per_epoch or 0,
                "gpu": a.gpu,
                "seed": a.seed or 0,
            }
        if a.show:  # a run still going, or paused between stages: what it has so far
            if not (out / "e2e.json").is_file():
                parser.error(f"--show: {out / 'e2e.json'} does not exist; start a run with --out {out}")
            states = [json.loads((out / "e2e.json").read_text())]
        else:
            print(f"e2e: working in {out}", flush=True)
            states = [run_all(out, given, a.resume, a.stop_after)]
        command = f"`{canonical(states[0]['args'])}`"
    print(section(states, against, command))
    if a.record:
        record(heading(states), section(states, against, command))
        from _results import summary

        after = "image side"  # the summary's rows of the stage section "Every stage at scale"
        for row in summary_rows(states):
            summary(*row, after=after)
            after = row[0]


def canonical(args: dict[str, Any]) -> str:
    """The command that makes a run with these arguments (its --out aside)."""
    gpu = " --gpu" if args["gpu"] else ""
    sample = f" --images-per-epoch {args['images_per_epoch']}" if args.get("images_per_epoch") else ""
    size = f"--image-size {args['image_size']}"
    return f"python bench/e2e.py --items {args['items']} --epochs {args['epochs']}{sample} {size}{gpu}"


def _demo_epochs() -> int:
    from socialfeat.config import load_config
    from socialfeat.pipeline import packaged_demo_config

    with packaged_demo_config() as path:
        return load_config(path).train.epochs


if __name__ == "__main__":
    main()
