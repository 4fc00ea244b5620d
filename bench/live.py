"""The live catalogue (issue 32, point 8), in four parts; each part's figures are kept, so parts can run apart.

- ``add``: a simulated run whose learned model is EfficientNet-Lite0 from the packaged ImageNet weights with a
  factors head (1 epoch, head only, 224 px): ``encoder_for`` gives a real ONNX export. ``Live.add`` of ``--n`` new
  photos against the embed path on the same photos and ONNX session, batch ``--batch``, in alternating rounds.
  ``embed`` counts forward passes on images its cache holds decoded; the decode is timed apart. Target: add ≥ 80%.
- ``latency``: bench/scale.py's platform (``--items``: 423,000 items × 309K users) with its content model and a
  learned index, served by ``socialfeat serve --writable``. 8 client processes (3 add, 3 similar, 2 recommend)
  and two probes: request → the new item's similar items and its first audience user's recommendations answered;
  one event → that user's recommendations. Twice: OpenBLAS's default threads, then one. Targets: p99 < 1 s to
  visible, < 50 ms per event.
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
import http.client
import io
import itertools
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "live"))
import crash  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from _results import record  # noqa: E402

from socialfeat.config import SimulateConfig, load_config  # noqa: E402
from socialfeat.data.ingest import ingest  # noqa: E402
from socialfeat.data.simulate import simulate  # noqa: E402
from socialfeat.embed import embed  # noqa: E402
from socialfeat.export import encoder_for  # noqa: E402
from socialfeat.factorize.stage import factorize  # noqa: E402
from socialfeat.features import encode_batch  # noqa: E402
from socialfeat.live import Live, LiveStore, Upload  # noqa: E402
from socialfeat.live.embedding import decode  # noqa: E402
from socialfeat.live.store import LiveItem  # noqa: E402
from socialfeat.live.tables import NewItem  # noqa: E402
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

    def __init__(self, offset: int = 0) -> None:
        from PIL import Image

        self.base = [Image.open(path).convert("RGB") for path in sorted(PHOTOS.glob("*.JPEG"))]
        self.used, self.lock = offset, threading.Lock()

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
    with_decode = float(np.median([r["add"] / r["decode+forward"] for r in rs]))

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
        f"{'met' if ratio >= 0.8 else 'missed'}). Add ÷ embed with the decode: {with_decode:.2f}. Each ratio comes "
        f"from two runs adjacent in time. The embed stage itself gave {a['stage_ips']:.1f} img/s on the run's own "
        "items, in the same process.",
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


def start_server(run: Path, cfg: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    """``socialfeat serve --writable`` on 127.0.0.1 as a user starts it; returns once /api/health answers."""
    cmd = [sys.executable, "-m", "socialfeat", "serve", str(run), "-c", str(cfg), "--port", str(port), "--writable"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--set", "live.sources=[learned]"], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    while time.perf_counter() - t0 < 900:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if request(http.client.HTTPConnection("127.0.0.1", port, timeout=2), "GET", "/api/health")[0] == 200:
                return proc, time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start in 900 s")


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            ctype: str | None = None) -> tuple[int, dict]:  # fmt: skip
    conn.request(method, path, body, {"Content-Type": ctype} if ctype else {})
    r = conn.getresponse()
    text = r.read()
    return r.status, json.loads(text) if text.startswith(b"{") else {"text": text[:200].decode(errors="replace")}


def item_form(item_id: str, data: bytes, boundary: str = "live-bench-boundary") -> tuple[bytes, str]:
    """A multipart body for POST /api/items: the id and the image."""
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="item_id"\r\n\r\n{item_id}\r\n'
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
    head += "Content-Type: image/jpeg\r\n\r\n"
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def client(args: tuple) -> dict:
    """One client process, requests back to back over one keep-alive connection until the deadline: ``add``,
    ``similar`` or ``recommend``; or a probe: ``probe`` (an add, then its similar items and its first audience
    user's recommendations) or ``events`` (one event, then that user's recommendations; twice per user)."""
    n, port, kind, users, items, deadline = args
    rng, photos, conn = random.Random(n), Photos(offset=5000 * n), http.client.HTTPConnection("127.0.0.1", port, 60)
    ids = itertools.count(10**12 + 10**8 * n)  # integers: the platform's item ids are
    out: dict = {"kind": kind, "errors": [], "n": 0, **{k: [] for k in ("ack", "similar", "recommend", "first",
                                                                         "again", "top10")}}  # fmt: skip

    def timed(method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> tuple[float, dict]:
        t0 = time.perf_counter()
        status, answer = request(conn, method, path, body, ctype)
        if status != 200:
            raise RuntimeError(f"{method} {path.split('?')[0]}: HTTP {status}: {answer}")
        return time.perf_counter() - t0, answer

    while time.time() < deadline:
        try:
            if kind in ("add", "probe"):
                item_id = str(next(ids))
                ack, added = timed("POST", "/api/items?k=10", *item_form(item_id, photos.take(1)[0]))
                if kind == "probe":
                    similar, _ = timed("GET", f"/api/items/{item_id}/similar?k=10&source=learned")
                    user = quote(str(added["audience"][0]["user_id"]))
                    recommend, ranked = timed("GET", f"/api/recommendations?user={user}&k=10")
                    out["top10"].append(any(str(r["id"]) == item_id for r in ranked["items"]))
                    for key, value in (("ack", ack), ("similar", ack + similar), ("recommend", ack + recommend)):
                        out[key].append(value)
                    time.sleep(0.3)
            elif kind == "similar":
                timed("GET", f"/api/items/{rng.choice(items)}/similar?k=10&source=learned")
            elif kind == "recommend":
                timed("GET", f"/api/recommendations?user={rng.choice(users)}&k=10")
            else:  # events
                user = rng.choice(users)
                for key in ("first", "again"):  # the user's first live event since start-up, then another
                    body = json.dumps({"events": [{"user_id": user, "item_id": rng.choice(items), "event": "like"}]})
                    logged, _ = timed("POST", "/api/events", body.encode(), "application/json")
                    ranked, _ = timed("GET", f"/api/recommendations?user={user}&k=10")
                    out[key].append(logged + ranked)
                time.sleep(0.3)
            out["n"] += 1
        except (OSError, http.client.HTTPException, RuntimeError) as e:
            out["errors"].append(f"{kind}: {type(e).__name__}: {e}"[:300])
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    return out


KINDS = ("add", "add", "add", "similar", "similar", "similar", "recommend", "recommend", "probe", "events")


def bench_latency(run: Path, cfg: Path, seconds: float) -> dict:
    """The server under 8 clients and two probes, twice: OpenBLAS's default threads, then one (the server's
    environment); then the event probe alone. Each server starts on an empty store."""
    users_table = pq.read_table(run / "dataset" / "users.parquet", columns=["user_id"])
    items_table = pq.read_table(run / "dataset" / "items.parquet", columns=["item_id"])
    rng = random.Random(0)
    users = [str(u) for u in rng.sample(users_table.column(0).to_pylist(), min(20_000, users_table.num_rows))]
    items = [str(i) for i in rng.sample(items_table.column(0).to_pylist(), min(20_000, items_table.num_rows))]
    out: dict = {"seconds": seconds, "items": items_table.num_rows, "users": users_table.num_rows, "phases": {}}
    for name, env in (("default", {}), ("one", {"OPENBLAS_NUM_THREADS": "1"})):
        shutil.rmtree(run / "live", ignore_errors=True)
        port = free_port()
        server, start_s = start_server(run, cfg, port, env)
        try:
            deadline = time.time() + seconds + 2.0  # the processes' start
            jobs = [(n, port, kind, users, items, deadline) for n, kind in enumerate(KINDS)]
            with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
                parts = pool.map(client, jobs)
            quiet = client((99, port, "events", users[::-1], items, time.time() + 30)) if name == "one" else None
            live_items = request(http.client.HTTPConnection("127.0.0.1", port, 60), "GET", "/api/health")[1]
        finally:
            server.terminate()
            server.wait()
        phase = {"start_s": start_s, "parts": parts, "health": live_items, "load": load()}
        out["phases"][name] = phase | ({"quiet": quiet} if quiet else {})
        print(f"  {name}: " + ", ".join(f"{p['kind']} {p['n']}" for p in parts), flush=True)
    shutil.rmtree(run / "live", ignore_errors=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latency_lines(r: dict) -> list[str]:
    def merged(phase: dict, key: str) -> list[float]:
        return [x for part in phase["parts"] for x in part[key]]

    def rates(phase: dict) -> str:
        counts = Counter()
        for part in phase["parts"]:
            counts[part["kind"]] += part["n"]
        return ", ".join(f"{counts[k] / r['seconds']:.1f} {k}/s" for k in ("add", "similar", "recommend"))

    def row(name: str, v: list[float], target: str) -> str:
        return (f"| {name} | {len(v)} | {pct(v, 50):.0f} | {pct(v, 90):.0f} | {pct(v, 99):.0f} | {pct(v, 100):.0f} "
                f"| {target} |")  # fmt: skip

    default, one = r["phases"]["default"], r["phases"]["one"]
    errors = [e for phase in (default, one) for part in phase["parts"] for e in part["errors"]]
    lines = [
        f"**Latency under load at {r['items']:,} items × {r['users']:,} users** (bench/scale.py's platform). "
        "`socialfeat serve --writable` on 127.0.0.1 (live.sources = [learned]), started afresh on an empty store "
        f"for each of two runs, in {default['start_s']:.0f} and {one['start_s']:.0f} s. 8 client processes for "
        f"{r['seconds']:.0f} s, each sending its next request when the last answered: 3 add one photo at a time "
        "(POST /api/items), 3 ask for an item's similar items, 2 for a user's recommendations. Two probes beside "
        "them. The add probe adds a photo, then asks for the new item's similar items and for the recommendations "
        "of the user its audience names first. The event probe logs one event (POST /api/events), then asks for "
        "that user's recommendations. The first run keeps OpenBLAS's default threads (2); the second sets "
        f"OPENBLAS_NUM_THREADS=1 for the server. {len(errors)} errors.",
        "",
    ]
    for name, phase in (("OpenBLAS default threads", default), ("OPENBLAS_NUM_THREADS=1", one)):
        lines += [
            f"{name} ({rates(phase)}; load average when done: {phase['load']}):",
            "",
            "| probe | n | p50 ms | p90 ms | p99 ms | max ms | target |",
            "|---|---:|---:|---:|---:|---:|---|",
            row("add acknowledged (committed)", merged(phase, "ack"), ""),
            row("request → the new item's similar items answered", merged(phase, "similar"), "p99 < 1,000 ms"),
            row(
                "request → its first audience user's recommendations answered",
                merged(phase, "recommend"),
                "p99 < 1,000 ms",
            ),  # fmt: skip
            row(
                "event → that user's recommendations, the user's first live event",
                merged(phase, "first"),
                "p99 < 50 ms",
            ),  # fmt: skip
            row("event → that user's recommendations, a further event", merged(phase, "again"), "p99 < 50 ms"),
        ]
        if "quiet" in phase:
            q = phase["quiet"]
            lines += [row("the same, first event, no other clients", q["first"], "p99 < 50 ms"),
                      row("the same, further event, no other clients", q["again"], "p99 < 50 ms")]  # fmt: skip
        top = merged(phase, "top10")
        lines += ["", f"The new item was in that user's top 10 in {sum(top)} of {len(top)} adds.", ""]
    return lines + [f"Errors: {e}" for e in errors[:5]] + ([""] if errors else [])


# ---------------------------------------------------------------------------------------------- memory
MEMORY_CHILD = """
import gc, json, sys, time
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
