"""The simulator's figures, recorded in bench/RESULTS.md.

    python bench/simulate.py                          # the demo platform: time, events, skew, taste lifts
    python bench/simulate.py --scaling 10000,40000    # `socialfeat simulate` at each size: linear? (≤ 5.5× at 4×)
    python bench/simulate.py --images 4000            # images: threads or processes, files or one archive

The default measures the demo platform: generation time, event counts, popularity skew, and how strongly views and
likes follow each hidden attribute (lift over chance; 1 = no signal).

``--scaling`` runs ``python -m socialfeat simulate`` at each size in a fresh process, one after another (users 2 per 3
items, 96-px images, seed 0), and prints seconds, events and the ratio of the largest to the smallest. The target
(issue 34): 40K items take at most 5.5× the time of 10K.

``--images N`` draws N images of 96 px four ways: two threads writing files (the simulator until 2026-12), a
process pool of every core writing files (the simulator now), one process writing files, and the process pool
writing one uncompressed zip. It then reads them back for the image cache: ``build_cache`` over the files, and the
same decode over the zip's members.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import record  # noqa: E402

from socialfeat.config import SimulateConfig  # noqa: E402
from socialfeat.data import simulate as sim  # noqa: E402

SCALING_TARGET = 5.5  # at most this ratio of seconds between 40K and 10K items (4× the size)


def demo_platform(record_it: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "platform"
        started = time.perf_counter()
        summary = sim.simulate(out, SimulateConfig(), seed=0)
        seconds = time.perf_counter() - started
        views = Counter(
            line.split(",")[1]
            for line in (out / "interactions.csv").read_text().splitlines()[1:]
            if line.split(",")[2] == "view"
        )
        counts = np.sort(np.array(list(views.values())))[::-1]
        top10 = counts[: len(counts) // 10].sum() / counts.sum()
        rows = [
            f"| {attr} | {sim.taste_lift(out, attr, 'view'):.2f} | {sim.taste_lift(out, attr, 'like'):.2f} |"
            for attr in sim.ATTR_VALUES
        ]
    ev = summary["events"]
    body = (
        f"Default platform (2,000 users, 3,000 images of 96 px, seed 0): generated in {seconds:.1f} s; "
        f"{ev['view']:,} views, {ev['like']:,} likes, {ev['comment']:,} comments, {ev['share']:,} shares; the top 10% "
        f"of items get {top10:.0%} of the views.\n\n| hidden attribute | view lift | like lift |\n|---|---:|---:|\n"
        + "\n".join(rows)
        + "\n\nUsers' tastes depend on palette, texture and composition; object is ignored (lift ≈ 1).\n"
    )
    print(body)
    if record_it:
        record("simulate (bench/simulate.py)", body)


def others() -> str:
    """The busiest other processes when the timing started: what shared the cores."""
    ps = subprocess.run(
        ["ps", "-eo", "pid,pcpu,ni,args", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True
    )
    busy = [line.split(None, 3) for line in ps.stdout.splitlines()[:7]]
    busy = [
        f"`{cmd.strip()[:70]}` ({cpu}% CPU, nice {ni})"
        for pid, cpu, ni, cmd in busy
        if float(cpu) >= 5.0 and int(pid) != os.getpid()
    ]
    return ", ".join(busy) or "nothing over 5% CPU"


def scaling(sizes: list[int], record_it: bool) -> None:
    """``socialfeat simulate`` at each size in a fresh process, one after another."""
    load = os.getloadavg()
    busy = others()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            out = Path(tmp) / f"platform-{n}"
            cmd = [sys.executable, "-m", "socialfeat", "simulate", "--out", str(out)]
            cmd += ["--items", str(n), "--users", str(2 * n // 3), "--image-size", "96", "--seed", "0"]
            started = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            events = sum(1 for _ in open(out / "interactions.csv", encoding="utf-8")) - 1
            rows.append((n, 2 * n // 3, seconds, events))
            print(f"{n:,} items × {2 * n // 3:,} users: {seconds:.1f} s, {events:,} events", flush=True)
            shutil.rmtree(out)
    ratio = rows[-1][2] / rows[0][2]
    size_ratio = rows[-1][0] / rows[0][0]
    met = "met" if ratio <= SCALING_TARGET else "missed"
    print(f"ratio {ratio:.2f} for {size_ratio:.0f}× the items (target ≤ {SCALING_TARGET}: {met})")
    lines = [
        f"Load average at the start: {', '.join(f'{x:.1f}' for x in load)}; running beside: {busy}.",
        "Each size is `python -m socialfeat simulate` in a fresh process (imports included), one after another.",
        "Users are 2 per 3 items; images are 96 px; seed 0; 60 views per user on average.",
        "",
        "    python bench/simulate.py --scaling " + ",".join(str(n) for n in sizes),
        "",
        "| items | users | seconds | events | seconds ÷ smallest's |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {n:,} | {u:,} | {s:.1f} | {e:,} | {s / rows[0][2]:.2f} |" for n, u, s, e in rows),
        "",
        f"Ratio {ratio:.2f} for {size_ratio:.0f}× the items (target ≤ {SCALING_TARGET}: {met}).",
    ]
    if record_it:
        record("simulate at scale (bench/simulate.py --scaling)", "\n".join(lines) + "\n")


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the pools' workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _threads(folder: Path, values: list[dict[str, str]], ids: list[str]) -> None:
    """The simulator's image writer until 2026-12: two threads, PNG files."""
    folder.mkdir()

    def one(k: int) -> None:
        image = sim.draw_image(values[k], 96, sim._rng(0, sim.S_IMAGES, k))
        image.save(folder / f"{ids[k]}.png", compress_level=1)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, range(len(ids))))


def _png(job: tuple[int, dict[str, str]]) -> bytes:
    buf = io.BytesIO()
    sim.draw_image(job[1], 96, sim._rng(0, sim.S_IMAGES, job[0])).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _archive(path: Path, values: list[dict[str, str]], ids: list[str]) -> None:
    """The process pool drawing, the parent writing one uncompressed zip (PNG is compressed already)."""
    import multiprocessing

    with multiprocessing.Pool(os.cpu_count()) as pool, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in zip(ids, pool.imap(_png, enumerate(values), chunksize=64), strict=True):
            zf.writestr(f"images/{name}.png", data)


def images(n: int, record_it: bool) -> None:
    """Threads or processes, files or one archive: write time, then read time for the image cache."""
    from socialfeat.data.images import build_cache, decode_image

    items = sim.sample_items(n, sim._rng(0, sim.S_ITEMS))
    values = [{a: sim.ATTR_VALUES[a][int(items[a][k])] for a in sim.ATTR_VALUES} for k in range(n)]
    ids = sim._ids("i", n, 5).tolist()
    load, busy = os.getloadavg(), others()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ways = {
            "2 threads, files (before)": lambda: _threads(work / "threads", values, ids),
            f"{os.cpu_count()} processes, files (now)": lambda: sim._write_images(
                work / "procs", values, ids, 96, 0, (sim.S_IMAGES,)
            ),
            "1 process, files": lambda: sim._write_images(work / "one", values, ids, 96, 0, (sim.S_IMAGES,), workers=1),
            f"{os.cpu_count()} processes, one zip": lambda: _archive(work / "images.zip", values, ids),
        }
        cpu: dict[str, float] = {}
        for name, write in ways.items():
            os.sync()
            started, cpu_started = time.perf_counter(), _cpu()
            write()
            os.sync()
            seconds[name], cpu[name] = time.perf_counter() - started, _cpu() - cpu_started
            print(f"write: {name}: {seconds[name]:.1f} s ({n / seconds[name]:.0f} img/s), "
                  f"CPU {cpu[name]:.1f} s ({n / cpu[name]:.0f} img per CPU s)", flush=True)  # fmt: skip
        same = all(
            (work / "threads" / f"{i}.png").read_bytes() == (work / "procs" / f"{i}.png").read_bytes() for i in ids
        )
        started = time.perf_counter()
        build_cache([(i, f"{i}.png") for i in ids], work / "procs", work / "cache", size=96, workers=1)
        read_files = time.perf_counter() - started
        started = time.perf_counter()
        with zipfile.ZipFile(work / "images.zip") as zf:
            for i in ids:
                decode_image(io.BytesIO(zf.read(f"images/{i}.png")), 96)
        read_zip = time.perf_counter() - started
        # the same decode over the files, in one loop like the zip's: what opening a file per image costs
        started = time.perf_counter()
        for i in ids:
            decode_image(work / "procs" / f"{i}.png", 96)
        read_loop = time.perf_counter() - started
    print(f"read: build_cache over files, 1 worker: {read_files:.1f} s; decode loop over files: {read_loop:.1f} s; "
          f"over the zip's members: {read_zip:.1f} s; threads and processes give identical files: {same}")  # fmt: skip
    base = seconds["2 threads, files (before)"]
    lines = [
        f"Load average at the start: {', '.join(f'{x:.1f}' for x in load)}; running beside: {busy}.",
        f"{n:,} images of 96 px (the demo's), drawn by the simulator's `draw_image` with each image's own seed.",
        "Write times include `os.sync()` before and after, so that the disk's share is counted.",
        "",
        f"    python bench/simulate.py --images {n}",
        "",
        "| write | seconds | images/s | ÷ two threads' time | CPU s | images per CPU s |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {k} | {s:.1f} | {n / s:.0f} | {s / base:.2f} | {cpu[k]:.1f} | {n / cpu[k]:.0f} |"
            for k, s in seconds.items()
        ),
        "",
        "| read back (one process) | seconds | images/s |",
        "|---|---:|---:|",
        f"| `build_cache` over the files, 1 worker | {read_files:.1f} | {n / read_files:.0f} |",
        f"| decode loop over the files | {read_loop:.1f} | {n / read_loop:.0f} |",
        f"| decode loop over the zip's members | {read_zip:.1f} | {n / read_zip:.0f} |",
        "",
        f"The thread pool and the process pool write identical files: {same}.",
    ]
    if record_it:
        record("simulate's images (bench/simulate.py --images)", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scaling", help="comma list of item counts: `socialfeat simulate` at each, timed")
    parser.add_argument("--images", type=int, help="draw this many images each way: threads/processes, files/zip")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.scaling:
        scaling([int(n) for n in args.scaling.split(",")], not args.no_record)
    elif args.images:
        images(args.images, not args.no_record)
    else:
        demo_platform(not args.no_record)


if __name__ == "__main__":
    main()
