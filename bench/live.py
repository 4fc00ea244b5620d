"""The live catalogue (issue 32, point 8), in four parts; each part's figures are kept, so parts can run apart.

- ``add``: a simulated run whose learned model is EfficientNet-Lite0 from the packaged ImageNet weights with a
  factors head (1 epoch, head only, 224 px): ``encoder_for`` gives a real ONNX export. ``Live.add`` of ``--n`` new
  photos against the embed path on the same photos and ONNX session, batch ``--batch``, in alternating rounds.
  ``embed`` counts forward passes on images its cache holds decoded; the decode is timed apart. Target: add ≥ 80%.
- ``latency``: bench/scale.py's platform (``--items``: 423,000 items × 309K users) with its content model and a
  learned index. One process, threads: 8 clients (3 add, 3 similar, 2 recommend) and two probes. The add probe
  times request → visible in a fresh similar read and → scored by ``Live.rank``, and where its time goes; the event
  probe times ``Live.log`` of one event, then ``Live.rank``. Run with OpenBLAS's default threads, then with one.
  Targets: p99 < 1 s to visible, < 50 ms per event.
- ``memory``: 100,000 synthetic items put through ``LiveStore.put_item`` (1,000 per transaction); RSS of a fresh
  process holding ``Live`` with and without them, the store on disk, a reader's cost at that size.
- ``crash``: tests/live/crash.py on a copy of a demo run: 10,000 adds and 100,000 events per round, one round to
  the end, then ``--rounds`` rounds SIGKILLed at a random point. 0 acknowledged writes may be lost.

    python bench/live.py --demo /work/main/runs/demo --scale-dir DIR      # everything; recorded in RESULTS.md
    python bench/live.py --parts crash --demo /work/main/runs/demo         # one part (the others' figures kept)
    python bench/live.py --quick --no-record --demo /work/main/runs/demo   # a smoke run at small sizes
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "live"))
import crash  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from _results import record  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from socialfeat.config import SimulateConfig, load_config  # noqa: E402
from socialfeat.data.ingest import ingest  # noqa: E402
from socialfeat.data.simulate import simulate  # noqa: E402
from socialfeat.embed import embed  # noqa: E402
from socialfeat.export import encoder_for  # noqa: E402
from socialfeat.factorize.stage import factorize  # noqa: E402
from socialfeat.features import encode_batch  # noqa: E402
from socialfeat.index import load_index  # noqa: E402
from socialfeat.live import Live, LiveStore, Upload, catalogue, embedding  # noqa: E402
from socialfeat.live.embedding import decode  # noqa: E402
from socialfeat.live.readers import merged_nearest  # noqa: E402
from socialfeat.live.store import LiveItem  # noqa: E402
from socialfeat.live.tables import NewEvent, NewItem  # noqa: E402
from socialfeat.recommend import Recommender  # noqa: E402
from socialfeat.targets.stage import targets  # noqa: E402
from socialfeat.train import train  # noqa: E402

PHOTOS = HERE.parent.parent / "shared" / "data" / "imagenet-sample"
STATE = Path(tempfile.gettempdir()) / "socialfeat-live-bench.json"  # each part's figures


def pct(values: list[float], q: float, scale: float = 1000.0) -> float:
    return float(np.percentile(values, q)) * scale if len(values) else float("nan")


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


class Photos:
    """The sample photos (~500×375 JPEGs), each use a distinct one: mirrored or not, cropped by 0-9 pixels at the
    top-left, saved at JPEG q90 (20,000 distinct images, then the same again with a trailer: other bytes)."""

    def __init__(self) -> None:
        from PIL import Image

        self.base = [Image.open(path).convert("RGB") for path in sorted(PHOTOS.glob("*.JPEG"))]
        self.used, self.lock = 0, threading.Lock()

    def take(self, n: int) -> list[bytes]:
        from PIL import ImageOps

        with self.lock:
            start, self.used = self.used, self.used + n
        out = []
        for k in range(start, start + n):
            im, v = self.base[k % len(self.base)], k // len(self.base)
            im = (ImageOps.mirror(im) if v % 2 else im).crop((v // 2 % 10, v // 20 % 10, *im.size))
            data = io.BytesIO()
            im.save(data, "JPEG", quality=90)
            out.append(data.getvalue() + f"live-bench {k}".encode())
        return out


# ---------------------------------------------------------------------------------------------- add throughput
def small_run(folder: Path, batch: int) -> tuple[Path, object, float]:
    """(run, config, the embed stage's own img/s over the run's items) of a 200-item simulated platform."""

    platform, run = folder / "platform", folder / "run"
    simulate(platform, SimulateConfig(n_users=200, n_items=200, image_size=64, views_per_user=20), seed=0)
    inputs = {f"ingest.{k}": ("bench", platform / f"{k}.csv") for k in ("interactions", "items", "comments")}
    overrides = [
        "factorize.factors=16", "factorize.evaluate=false", "targets.targets=[factors]", "train.weights=imagenet",
        "train.image_size=224", "train.epochs=1", "train.finetune=head", "train.select=last", "train.augment=false",
        "train.targets=[factors]", "embed.workers=0", f"embed.batch_size={batch}", f"live.batch_size={batch}",
        "live.sources=[learned]",
    ]  # fmt: skip
    config = load_config(None, overrides, inputs)
    ingest(config, run / "dataset")
    factorize(config, run)
    targets(config, run)
    train(config, run)
    embed(config, run, "learned")  # the image cache and the export, outside the timing
    return run, config, embed(config, run, "learned").summary["images_per_s"]


def bench_add(n: int, batch: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="live-add-") as tmp:
        run, config, stage_ips = small_run(Path(tmp), batch)
        encoder = encoder_for(config, run, "learned", threads=0)
        live, photos, rounds = Live(config, run, create=True), Photos(), []
        for r in range(repeat):
            data, got = photos.take(n), {}
            for part in ("embed", "add") if r % 2 == 0 else ("add", "embed"):
                t0 = time.perf_counter()
                if part == "add":
                    live.add([Upload(NewItem(f"r{r}-{k}", "upload", row=k), d) for k, d in enumerate(data)],
                             encoders={"learned": encoder})  # fmt: skip
                    got["add"] = n / (time.perf_counter() - t0)
                    continue
                size, limit = encoder.image_size, config.train.max_pixels
                pixels = np.stack([decode(d, size, limit, "bench", k) for k, d in enumerate(data)])
                t1 = time.perf_counter()
                for s in range(0, n, batch):
                    encode_batch(encoder.encoder, pixels[s : s + batch])
                t2 = time.perf_counter()
                got |= {"forward": n / (t2 - t1), "decode": n / (t1 - t0), "decode+forward": n / (t2 - t0)}
            rounds.append(got | {"ratio": got["add"] / got["forward"]})
            print(f"  round {r}: " + ", ".join(f"{k} {v:.2f}" for k, v in rounds[-1].items()), flush=True)
    return {
        "n": n,
        "batch": batch,
        "rounds": rounds,
        "stage_ips": stage_ips,
        "size": encoder.image_size,
        "load": load(),
    }


def add_lines(a: dict) -> list[str]:
    rs = a["rounds"]
    ratio = float(np.median([r["ratio"] for r in rs]))

    def row(name: str, key: str, unit: str = "img/s") -> str:
        return f"| {name} | {max(r[key] for r in rs):.1f} {unit} | {np.median([r[key] for r in rs]):.1f} {unit} |"

    return [
        f"**Add throughput at {a['size']} px, CPU/ONNX** (load average when done: {a['load']}). A simulated run whose "
        "learned model is EfficientNet-Lite0 from the packaged ImageNet weights, with a factors head (1 epoch, head "
        f"only). {a['n']} photos per round, each distinct: the ImageNet sample (~500×375), cropped, JPEG q90. Batch "
        f"{a['batch']}, one ONNX session (2 threads) for both paths, {len(rs)} alternating rounds.",
        "",
        "| path | best | median |",
        "|---|---:|---:|",
        row("embed: forward passes on decoded images (what `embed` counts)", "forward"),
        row("decode alone (JPEG → 224 px, as the image cache does)", "decode"),
        row("embed with the decode", "decode+forward"),
        row("`Live.add`: decode, sha256, forward, factors, image files, one commit, audience", "add", "items/s"),
        "",
        f"Add ÷ embed (forward only), median of the rounds' ratios: **{ratio:.2f}** (target ≥ 0.80: "
        f"{'met' if ratio >= 0.8 else 'missed'}). Each ratio comes from two runs adjacent in time. The embed stage "
        f"itself gave {a['stage_ips']:.1f} img/s on the run's own items, in the same process.",
        "",
    ]


# ---------------------------------------------------------------------------------------------- latency at scale
def scale_run(folder: Path, items: int) -> tuple[Path, Path]:
    """bench/scale.py's platform: ingest, factorize, targets, features, content (no evaluate, report or serve), then
    a learned index; kept in ``folder`` and reused."""
    run, cfg = folder / f"run-{items}", folder / f"platform-{items}" / "config.yaml"
    if not (run / "content" / "model.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        skip = "index,evaluate,report,serve start-up,serve restart"
        cmd = [sys.executable, str(HERE / "scale.py"), "--items", str(items), "--skip", skip, "--reuse", str(folder)]
        subprocess.run([*cmd, "--no-record"], check=True)
    if not (run / "features" / "learned.faiss").is_file():
        subprocess.run([sys.executable, "-m", "socialfeat", "index", str(run), "--source", "learned", "-c", str(cfg)],
                       check=True)  # fmt: skip
    return run, cfg


class Load:
    """8 clients and 2 probes on threads, each with its own ``Live`` made (and warmed up) before the clock, as a
    server makes its one: 3 add one photo at a time, 3 search similar items, 2 rank items for users."""

    KINDS = ("add", "add", "add", "similar", "similar", "similar", "recommend", "recommend")

    def __init__(self, run: Path, cfg: Path) -> None:
        self.run, self.config = run, load_config(cfg, ["live.sources=[learned]"])
        shutil.rmtree(run / "live", ignore_errors=True)
        t0 = time.perf_counter()
        self.rec = rec = Recommender(run, index_log=True)  # as the explorer keeps it: who saw what, in memory
        self.index = load_index(run, "learned", self.config.index.column, self.config)
        self.encoders = {"learned": encoder_for(self.config, run, "learned", threads=1)}  # serve.torch_threads
        self.lives = [Live(self.config, run, rec, create=True) for _ in range(8)]  # 5 clients, writer, reader, logger
        for live in self.lives:
            live.warm_up()  # YᵀY and the log's row-group index: what a process's first event would compute
        self.setup_s, rng = time.perf_counter() - t0, random.Random(0)
        first = pq.ParquetFile(run / "features" / "learned.parquet").read_row_group(0, [self.config.index.column])
        self.queries = np.asarray(first.column(0).combine_chunks().flatten()).reshape(first.num_rows, -1)[:2000]
        self.users = [str(u) for u in rng.sample(list(rec.user_ids), min(20_000, len(rec.user_ids)))]
        known = [str(i) for i, d in zip(rec.item_ids, rec.in_dataset, strict=True) if d]
        self.items = rng.sample(known, min(20_000, len(known)))
        self.photos, self.new_ids = Photos(), itertools.count(10**12)  # integers: the platform's item ids are

    def phase(self, seconds: float, blas: int | None) -> dict:
        self.stop, self.lock, self.counts, self.errors = threading.Event(), threading.Lock(), Counter(), []
        self.probes: dict[str, list[float]] = {k: [] for k in ("ack", "similar", "recommend", "first", "again")}
        self.top10: list[bool] = []
        threads = [threading.Thread(target=self.client, args=(k, n), daemon=True) for n, k in enumerate(self.KINDS)]
        threads += [threading.Thread(target=f, daemon=True) for f in (self.add_probe, self.event_probe)]
        steps = timed_steps(threads[-2])
        with threadpool_limits(blas, "blas"):
            for t in threads:
                t.start()
            time.sleep(seconds)
            self.stop.set()
            for t in threads:
                t.join()
        steps.pop("restore")()
        with LiveStore(self.run) as store:
            items = store.counts()["items"]
        return {"counts": dict(self.counts), "errors": self.errors[:5], "n_errors": len(self.errors), "steps": steps,
                "probes": self.probes, "top10": sum(self.top10), "live_items": items}  # fmt: skip

    def similar(self, query: np.ndarray | str, k: int = 10) -> list:
        """A fresh read of the live vectors beside the batch index, as ``readers.similar`` makes on every call."""
        with LiveStore(self.run) as store:
            ids, vectors = store.vectors("learned", self.config.index.column)
            vector = vectors[ids.index(query)] if isinstance(query, str) else query  # type: ignore[index]
            return merged_nearest(self.index, ids, vectors, store.removed(), vector, k)[0]

    def add(self, live: object, item_id: str, data: bytes) -> list:
        upload = Upload(NewItem(item_id, "upload", row=1), data)
        return live.add([upload], encoders=self.encoders)  # type: ignore[attr-defined]

    def client(self, kind: str, n: int) -> None:
        slot, local = {0: 0, 1: 1, 2: 2, 6: 3, 7: 4}.get(n), random.Random(n)
        live = self.lives[slot] if slot is not None else None
        while not self.stop.is_set():
            try:
                if kind == "add":
                    self.add(live, str(next(self.new_ids)), self.photos.take(1)[0])
                elif kind == "similar":
                    self.similar(self.queries[local.randrange(len(self.queries))])
                else:
                    live.sync()  # type: ignore[union-attr]
                    live.rank(local.choice(self.users), 10)  # type: ignore[union-attr]
                with self.lock:
                    self.counts[kind] += 1
            except Exception as e:  # noqa: BLE001 - counted and shown; the load goes on
                self.errors.append(f"{kind}: {type(e).__name__}: {e}")

    def add_probe(self) -> None:
        writer, reader = self.lives[5], self.lives[6]
        while not self.stop.is_set():
            item_id, data = str(next(self.new_ids)), self.photos.take(1)[0]
            t0 = time.perf_counter()
            added = self.add(writer, item_id, data)
            ack = time.perf_counter() - t0
            found = self.similar(item_id)
            similar, t1 = time.perf_counter() - t0, time.perf_counter()
            reader.sync()
            ranked = reader.rank(added[0].audience[0]["user_id"], 10)
            if item_id not in found or item_id not in reader.live_block()[0]:
                self.errors.append(f"{item_id}: not in its own similar items, or not scored by rank")
            self.top10.append(any(r["item_id"] == item_id for r in ranked))
            for key, value in (("ack", ack), ("similar", similar), ("recommend", ack + time.perf_counter() - t1)):
                self.probes[key].append(value)
            time.sleep(0.3)

    def event_probe(self) -> None:
        local = random.Random(99)
        while not self.stop.is_set():
            user = local.choice(self.users)
            for key in ("first", "again"):  # the user's first live event since start-up, then another
                self.probes[key].append(self.event(self.lives[7], user, local.choice(self.items)))
            time.sleep(0.3)

    @staticmethod
    def event(live: object, user: str, item: str) -> float:
        """Seconds for ``Live.log`` of one event, then ``Live.rank`` for that user."""
        t0 = time.perf_counter()
        live.log([NewEvent(user, item, "like")])  # type: ignore[attr-defined]
        live.rank(user, 10)  # type: ignore[attr-defined]
        return time.perf_counter() - t0

    def quiet(self, n: int = 100) -> dict:
        """The event probe with nothing else running, on users the load phases are unlikely to have touched."""
        out: dict[str, list[float]] = {"first": [], "again": []}
        for k in range(n):
            for key in out:
                out[key].append(self.event(self.lives[7], self.users[-1 - k], self.items[k]))
        return out


def timed_steps(probe: threading.Thread) -> dict:
    """{step: [seconds]} of the steps of ``Live.add`` on the probe's thread, and ``restore`` to unwrap them."""

    steps: dict = {}
    wrapped = ((embedding.Embedder, "embed", "decode + forward (1 thread)"), (embedding.Embedder, "factors", "factors"),
               (catalogue, "_write_image", "image file (fsync)"), (catalogue.Live, "audience", "audience"))  # fmt: skip
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in wrapped]
    for (owner, name, label), (_, _, original) in zip(wrapped, originals, strict=True):

        def timed(*args: object, _f=original, _label=label, **kwargs: object) -> object:  # noqa: ANN001
            t0 = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                if threading.current_thread() is probe:
                    steps.setdefault(_label, []).append(time.perf_counter() - t0)

        setattr(owner, name, timed)
    steps["restore"] = lambda: [setattr(o, n, f) for o, n, f in originals]
    return steps


def bench_latency(run: Path, cfg: Path, seconds: float) -> dict:
    load_ = Load(run, cfg)
    phases = {name: load_.phase(seconds, blas) for name, blas in (("default", None), ("one", 1))}
    for phase in phases.values():  # the rest: the store transaction (lock wait, rows, durable commit) and sync
        steps = phase["steps"]
        n = min(len(v) for v in [phase["probes"]["ack"], *steps.values()])
        steps["the rest: transaction, sync"] = [a - sum(v[i] for v in steps.values()) for i, a in
                                                enumerate(phase["probes"]["ack"][:n])]  # fmt: skip
    result = {"seconds": seconds, "setup_s": load_.setup_s, "phases": phases, "items": len(load_.rec.item_ids),
              "users": len(load_.rec.user_ids), "quiet": load_.quiet(), "load": load()}  # fmt: skip
    shutil.rmtree(run / "live", ignore_errors=True)
    return result


def latency_lines(r: dict) -> list[str]:
    one, default, q = r["phases"]["one"], r["phases"]["default"], r["quiet"]

    def rates(phase: dict) -> str:
        return ", ".join(
            f"{phase['counts'].get(k, 0) / r['seconds']:.1f} {k}/s" for k in ("add", "similar", "recommend")
        )

    def row(name: str, v: list[float], target: str) -> str:
        return (f"| {name} | {len(v)} | {pct(v, 50):.0f} | {pct(v, 90):.0f} | {pct(v, 99):.0f} | {pct(v, 100):.0f} "
                f"| {target} |")  # fmt: skip

    p, d = one["probes"], default["probes"]
    lines = [
        f"**Latency under load at {r['items']:,} items × {r['users']:,} users** (bench/scale.py's platform; load "
        f"average when done: {r['load']}). One process: `Live` and `readers.merged_nearest` called directly from "
        "threads, since the FastAPI app of the serve branch had not landed. Set-up (the Recommender with the log in "
        f"memory, the learned HNSW index, an ONNX session of 1 thread, 8 warmed-up `Live`): {r['setup_s']:.0f} s. "
        f"8 clients for {r['seconds']:.0f} s, each sending its next request when the last returned. The load ran "
        "twice: OpenBLAS's default threads, then one BLAS thread per call (threadpoolctl).",
        "",
        f"One BLAS thread ({rates(one)}; {one['n_errors']} errors; {one['live_items']:,} live items at the end):",
        "",
        "| probe | n | p50 ms | p90 ms | p99 ms | max ms | target |",
        "|---|---:|---:|---:|---:|---:|---|",
        row("add acknowledged (committed)", p["ack"], ""),
        row("request → visible in a fresh `similar` read", p["similar"], "p99 < 1,000 ms"),
        row("request → scored by `rank` for its first audience user", p["recommend"], "p99 < 1,000 ms"),
        row("event: `log` + `rank`, the user's first live event", p["first"], "p99 < 50 ms"),
        row("event: `log` + `rank`, a further event", p["again"], "p99 < 50 ms"),
        row("event, first (quiet: no clients)", q["first"], "p99 < 50 ms"),
        row("event, further (quiet: no clients)", q["again"], "p99 < 50 ms"),
        "",
        "Every probe item was in its own similar items and scored by `rank` once acknowledged. It was in that "
        f"user's top 10 in {one['top10']} of {len(p['ack'])} adds. Where the add probe's time went:",
        "",
        "| step of `Live.add` | p50 ms | p99 ms |",
        "|---|---:|---:|",
        *[f"| {step} | {pct(v, 50):.0f} | {pct(v, 99):.0f} |" for step, v in one["steps"].items()],
        "",
        f"OpenBLAS's default threads ({rates(default)}), p99: add acknowledged {pct(d['ack'], 99):.0f} ms, visible "
        f"in `similar` {pct(d['similar'], 99):.0f} ms, scored by `rank` {pct(d['recommend'], 99):.0f} ms, events "
        f"{pct(d['first'], 99):.0f} / {pct(d['again'], 99):.0f} ms ({len(d['ack'])} adds, {len(d['first'])} events).",
        "",
    ]
    errors = one["errors"] + default["errors"]
    return lines + [f"Errors: {e}" for e in errors] + ([""] if errors else [])


# ---------------------------------------------------------------------------------------------- memory
MEMORY_CHILD = """
import gc, json, sys, time
import numpy as np
from pathlib import Path
from socialfeat.config import load_config
from socialfeat.index import load_index
from socialfeat.live import Live
from socialfeat.live.readers import merged_nearest
from socialfeat.recommend import Recommender
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024
config, run = load_config(sys.argv[1], ['live.sources=[learned]']), Path(sys.argv[2])
rec = Recommender(run, index_log=True); index = load_index(run, 'learned', 'features', config)
gc.collect(); before = rss(); t0 = time.perf_counter()
live = Live(config, run, rec); live.live_block(); start = time.perf_counter() - t0; gc.collect(); after = rss()
t0 = time.perf_counter(); live.rank(str(rec.user_ids[0]), 10); rank = time.perf_counter() - t0
t0 = time.perf_counter(); ids, vectors = live.store.vectors('learned', 'features'); read = time.perf_counter() - t0
t0 = time.perf_counter(); merged_nearest(index, ids, vectors, live.removed, index.index.reconstruct(0), 10)
print(json.dumps({'growth_mb': after - before, 'start_s': start, 'rank_s': rank, 'read_s': read,
                  'search_s': time.perf_counter() - t0, 'read_mb': rss() - after, 'n': len(ids)}))
"""


def bench_memory(run: Path, cfg: Path, n: int) -> dict:
    widths = {
        f.name: f.type.list_size for f in pq.read_schema(run / "features" / "learned.parquet") if f.name != "item_id"
    }
    k = pq.read_schema(run / "factors" / "item_factors.parquet").field("factors").type.list_size
    shutil.rmtree(run / "live", ignore_errors=True)
    rng, t0 = np.random.default_rng(0), time.perf_counter()
    with LiveStore(run, create=True) as store:
        for start in range(0, n, 1000):
            with store.write() as version:
                for i in range(start, min(n, start + 1000)):
                    sha = f"{i:064x}"
                    item = LiveItem(str(10**12 + i), sha, sha + ".jpg", f"title {i}", None, "a|b", {},
                                    rng.standard_normal(k), "content", time.time(), version, False)  # fmt: skip
                    store.put_item(item, {("learned", c): rng.standard_normal(w) for c, w in widths.items()})
    write_s, disk = time.perf_counter() - t0, sum(p.stat().st_size for p in (run / "live").glob("live.db*"))
    child = [sys.executable, "-c", MEMORY_CHILD, str(cfg), str(run)]
    full = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    shutil.rmtree(run / "live")
    empty = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    return {"n": n, "widths": widths, "k": k, "write_s": write_s, "disk_mb": disk / 1024**2, "with": full,
            "without": empty, "load": load()}  # fmt: skip


def memory_lines(m: dict) -> list[str]:
    per, w = 100_000 / m["n"], m["with"]
    growth = (w["growth_mb"] - m["without"]["growth_mb"]) * per
    return [
        f"**Memory per 100K added items** (load average when done: {m['load']}). {m['n']:,} synthetic items put "
        f"through `LiveStore.put_item`, 1,000 per transaction, in {m['write_s']:.0f} s: random learned vectors "
        f"({', '.join(f'{c} {n}' for c, n in m['widths'].items())}-d) and {m['k']} factors, no image files.",
        "",
        f"- RSS growth of a process holding `Live` (replayed, ranking block built): **{growth:,.0f} MB per 100K** "
        f"({w['growth_mb']:,.0f} MB with the items, {m['without']['growth_mb']:,.0f} MB with an empty store).",
        f"- Store on disk: **{m['disk_mb'] * per:,.0f} MB per 100K**.",
        f"- At {m['n']:,} live items: start-up replay {w['start_s']:.1f} s; one `rank` {1000 * w['rank_s']:.0f} ms; "
        f"a reader's read of every live vector (what `readers.similar` does per call) {w['read_s']:.2f} s and "
        f"{w['read_mb']:,.0f} MB more RSS; `merged_nearest` over them {1000 * w['search_s']:.0f} ms.",
        "",
    ]


# ---------------------------------------------------------------------------------------------- crash
def bench_crash(demo: Path, rounds: int, adds: int, events: int) -> dict:
    overrides, out, rng = ["live.sources=[learned]"], {"adds": adds, "events": events, "rounds": []}, random.Random(0)
    with tempfile.TemporaryDirectory(prefix="live-crash-") as tmp:
        run, acks = Path(tmp) / "run", Path(tmp) / "acks"
        shutil.copytree(demo, run, ignore=shutil.ignore_patterns("cache", "live", "report.html"))
        for r in range(rounds + 1):
            ran, finished = crash.run_round(run, acks, r, adds, events, overrides, rng.random() if r else None)
            got = crash.check(run, acks, overrides)
            got.killed_after, got.finished = ran, finished
            out["rounds"].append(got.__dict__ | {"ok": got.ok})
            print(
                f"  round {r}: {'finished' if finished else 'killed'} after {ran:.1f} s; acked {got.acked_items} "
                f"items, {got.acked_events} events; lost {len(got.lost_items)}/{len(got.lost_events)}; half-added "
                f"{len(got.half_added)}; {got.disagree[:2]}; {got.integrity}; check {got.check_s:.0f} s",
                flush=True,
            )
    return out | {"load": load()}


def crash_lines(c: dict) -> list[str]:
    rs, last = c["rounds"], c["rounds"][-1]
    lost = sum(len(r["lost_items"]) + len(r["lost_events"]) for r in rs)
    bad = sum(bool(r["disagree"]) or r["integrity"] != "ok" for r in rs)
    return [
        f"**Crash test** (tests/live/crash.py on a copy of the demo run, 96-px models; load average when done: "
        f"{c['load']}). A child adds {c['adds']:,} items (`Live.add` of 8×8 PNG uploads, 25 per call, through the "
        f"run's ONNX encoders) and logs {c['events']:,} events (100 per call), interleaved. It writes each "
        f"acknowledged id to a file once the call that committed it returned. Round 0 ran to the end in "
        f"{rs[0]['killed_after']:.0f} s. Each later round was SIGKILLed once a uniformly random share of its write "
        "batches was acknowledged, a random part of one batch's time later. Each round works on the store the last "
        "one left. After each: reopen, check, and replay as a restart does.",
        "",
        f"- Rounds: {len(rs)}, {sum(not r['finished'] for r in rs)} killed. Acknowledged in all: "
        f"{last['acked_items']:,} items, {last['acked_events']:,} events; the store held {last['store_items']:,} "
        f"items, {last['store_events']:,} events.",
        f"- Acknowledged writes lost: **{lost}**. Half-added items (a row without all its vectors or its image file, "
        f"or a file whose sha256 differs): **{sum(len(r['half_added']) for r in rs)}**.",
        "- Rounds where the restart's replay (live items, ranking block, users' events, live vectors beside the "
        f"batch index, `similar` on 20 live items) disagreed with the store, or `PRAGMA integrity_check` failed: "
        f"**{bad}**.",
        "",
    ]


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="add,latency,memory,crash", help="none: record what earlier runs measured")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (its figures are not kept)")
    parser.add_argument("--demo", type=Path, default=HERE.parent / "runs" / "demo", help="a demo run (crash part)")
    parser.add_argument("--scale-dir", type=Path, help="where bench/scale.py's platform is made or reused; kept")
    parser.add_argument("--items", type=int, help="platform items (default 423,000; --quick 20,000)")
    parser.add_argument("--seconds", type=float, help="each load phase (default 120; --quick 15)")
    parser.add_argument("--n", type=int, help="photos per add round (default 512; --quick 64)")
    parser.add_argument("--batch", type=int, default=32, help="live.batch_size = embed.batch_size")
    parser.add_argument("--repeat", type=int, help="add rounds (default 6; --quick 2)")
    parser.add_argument("--rounds", type=int, help="killed crash rounds (default 20; --quick 2)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    q, items = args.quick, args.items or (20_000 if args.quick else 423_000)
    parts = [p.strip() for p in args.parts.split(",") if p.strip() not in ("", "none")]
    state = json.loads(STATE.read_text()) if STATE.is_file() and not q else {}
    command = " ".join(["python bench/live.py", *(a for a in sys.argv[1:] if a != "--no-record")])
    if "add" in parts:
        state["add"] = bench_add(args.n or (64 if q else 512), args.batch, args.repeat or (2 if q else 6))
        print("\n".join(add_lines(state["add"])), flush=True)
    if "latency" in parts or "memory" in parts:
        run, cfg = scale_run(args.scale_dir or Path(tempfile.gettempdir()) / f"socialfeat-live-scale-{items}", items)
        if "latency" in parts:
            state["latency"] = bench_latency(run, cfg, args.seconds or (15 if q else 120))
            print("\n".join(latency_lines(state["latency"])), flush=True)
        if "memory" in parts:
            state["memory"] = bench_memory(run, cfg, 5_000 if q else 100_000)
            print("\n".join(memory_lines(state["memory"])), flush=True)
    if "crash" in parts:
        adds, events = (300, 3_000) if q else (10_000, 100_000)
        state["crash"] = bench_crash(args.demo, args.rounds or (2 if q else 20), adds, events)
        print("\n".join(crash_lines(state["crash"])), flush=True)
    for part in parts:
        state[part]["command"] = command
    if not q:
        STATE.write_text(json.dumps(state))
    if args.no_record:
        return
    lines = []
    for part, render in (("add", add_lines), ("latency", latency_lines), ("memory", memory_lines),
                         ("crash", crash_lines)):  # fmt: skip
        if part in state:
            lines += render(state[part]) + [f"    {state[part]['command']}", ""]
    record("Live catalogue (bench/live.py)", "\n".join(lines))


if __name__ == "__main__":
    main()
