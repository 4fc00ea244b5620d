"""The web explorer under load: ``socialfeat serve`` on 127.0.0.1 with 100,000 items, 8 concurrent clients for 60 s.

The index size is what matters for lookups, so the 100k items carry synthetic features (bench/_platform.py's
clustered run: a mixture of 1,000 clusters, the dimensions of the real run); uploads go through the real trained
model and ImageNet model of a demo run and real photos (../shared/data/imagenet-sample, JPEGs of a few hundred KB). Five clients ask for neighbours by id
(learned or ImageNet, k=12), two upload photos (neighbours under both sources + predicted audience) and one
searches titles (a word of a title or a piece of an id, one page of 60), each client sending its next request as
soon as the last one answered. The clients run in this process, on the same 2 cores as the server: the figures
include that contention. ``--users`` plants that many users (random factors, a log of ``--interactions``) instead
of the demo's own, for the seed paper's scale (issue 23: 423K items, 309K users).

Each runtime in ``--runtime`` (default torch,onnx: ``serve.runtime``) gets its own server, one after the other in the
same run, and every upload's answer says where its time went (decode, forward and search per source, audience); the
rest of the client's latency is HTTP and queueing.

Targets (issues 7 and 17): p99 < 50 ms by id, < 300 ms per upload, zero errors. Recorded in bench/RESULTS.md.

    python bench/serve.py --run runs/demo            # a run from `make demo` supplies the model; recorded
    python bench/serve.py --run runs/demo --items 20000 --seconds 10 --no-record   # a quick look
    python bench/serve.py --run runs/demo --items 423000 --users 309000 --runtime onnx   # the seed's size
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _platform import clustered_run  # noqa: E402
from _results import record  # noqa: E402

PHOTOS = HERE.parent.parent / "shared" / "data" / "imagenet-sample"
TARGETS_MS = {"by id": 50.0, "upload": 300.0, "title search": 50.0}


def peak_rss_gb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM), in GB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def search_words(run: Path, ids: list[str], seed: int = 0) -> list[str]:
    """What the title-search client types: words of the catalogue's titles and pieces of its ids (a few match
    thousands of items, most a handful, some none)."""
    rng = random.Random(seed)
    titles = pq.read_table(run / "dataset" / "items.parquet", columns=["title"]).column("title").to_pylist()
    words = sorted({w for t in titles[:5000] for w in (t or "").lower().split()})
    return words + [rng.choice(ids)[: rng.randint(3, 7)] for _ in range(len(words))] + ["zzz-nothing"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, overrides: list[str] = ()) -> tuple[subprocess.Popen, float]:
    """``socialfeat serve`` as a user would start it; returns once /api/health answers, with the start-up time."""
    import httpx

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "socialfeat", "serve", str(run), "--port", str(port)]
        + [arg for item in overrides for arg in ("--set", item)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while time.perf_counter() - t0 < 600:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("server did not start in 600 s")


def _multipart(data: bytes, boundary: str = "socialfeat-bench-boundary") -> tuple[bytes, str]:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
    head += "Content-Type: image/jpeg\r\n\r\n"
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def client(args: tuple[int, int, str, list[str], list[str], list[str], float]) -> dict:
    """One client process: requests back to back over one keep-alive connection until the deadline."""
    n, port, kind, ids, words, photos, deadline = args
    rng = random.Random(n)
    bodies = [_multipart(Path(p).read_bytes()) for p in photos]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    steps: list[dict[str, float]] = []
    errors: list[str] = []
    while time.time() < deadline:
        t0 = time.perf_counter()
        try:
            if kind == "upload":
                body, ctype = rng.choice(bodies)
                conn.request("POST", "/api/upload?k=12&source=learned&source=imagenet", body, {"Content-Type": ctype})
            elif kind == "title search":
                conn.request("GET", f"/api/items?q={quote(rng.choice(words))}&limit=60")
            else:
                source = rng.choice(("learned", "imagenet"))
                conn.request("GET", f"/api/items/{rng.choice(ids)}/similar?k=12&source={source}")
            r = conn.getresponse()
            text = r.read()
            if r.status == 200:
                latency = 1000 * (time.perf_counter() - t0)
                latencies.append(latency)
                if kind == "upload":  # where the server says the time went; the rest is HTTP and queueing
                    answer = json.loads(text)
                    steps.append({**answer.get("steps", {}), "queue + HTTP": latency - answer["ms"]})
            else:
                errors.append(f"HTTP {r.status}: {text[:200]!r}")
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()
    return {"kind": kind, "latencies": latencies, "errors": errors, "steps": steps}


def load(
    port: int,
    ids: list[str],
    words: list[str],
    photos: list[Path],
    clients: int,
    uploaders: int,
    searchers: int,
    seconds: float,
) -> dict:
    """``clients`` concurrent client processes for ``seconds``; the first ``uploaders`` of them upload photos, the
    next ``searchers`` search titles. Processes, not threads or asyncio: a client must not share an interpreter
    lock with the others' parsing."""
    deadline = time.time() + seconds + 1.0  # the extra second covers the processes' start

    def kind(n: int) -> str:
        return "upload" if n < uploaders else "title search" if n < uploaders + searchers else "by id"

    jobs = [(n, port, kind(n), ids, words, [str(p) for p in photos], deadline) for n in range(clients)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        parts = pool.map(client, jobs)
    kinds = ("by id", "upload", "title search")
    result: dict = {"latencies": {k: [] for k in kinds}, "errors": {k: [] for k in kinds}, "steps": []}
    for part in parts:
        result["latencies"][part["kind"]] += part["latencies"]
        result["errors"][part["kind"]] += part["errors"]
        result["steps"] += part["steps"]
    return result


def step_table(by_runtime: dict[str, dict]) -> list[str]:
    """p50 and p99 of each step of an upload, per runtime, as the server timed them."""
    names = list(dict.fromkeys(k for r in by_runtime.values() for s in r["steps"] for k in s))
    head = "| upload step | " + " | ".join(f"{rt} p50 ms | {rt} p99 ms" for rt in by_runtime) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(by_runtime)]
    for name in names:
        cells = []
        for r in by_runtime.values():
            values = np.array([s[name] for s in r["steps"] if name in s]) if r["steps"] else np.array([np.nan])
            cells += [f"{np.percentile(values, 50):.1f}", f"{np.percentile(values, 99):.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def summarize(result: dict, seconds: float) -> list[dict]:
    rows = []
    for kind, values in result["latencies"].items():
        if not values and not result["errors"][kind]:
            continue  # no client of this kind
        ms = np.array(values) if values else np.array([np.nan])
        rows.append(
            {
                "kind": kind,
                "requests": len(values),
                "per_s": len(values) / seconds,
                "p50": float(np.percentile(ms, 50)),
                "p90": float(np.percentile(ms, 90)),
                "p99": float(np.percentile(ms, 99)),
                "max": float(np.max(ms)),
                "errors": len(result["errors"][kind]),
                "target": TARGETS_MS[kind],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished run (make demo) [runs/demo]")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--uploaders", type=int, default=2, help="clients that upload")
    parser.add_argument("--searchers", type=int, default=1, help="clients that search titles; the rest ask by id")
    parser.add_argument("--users", type=int, default=None, help="plant this many users [the run's own]")
    parser.add_argument("--interactions", type=int, default=None, help="log size [2 per item]")
    parser.add_argument("--keep", type=Path, default=None, help="build the synthetic run here, or reuse it")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--server-set", action="append", default=[], metavar="KEY=VALUE",
        help="config override for the server, e.g. serve.torch_threads=0 (torch's default threads) to compare",
    )  # fmt: skip
    parser.add_argument(
        "--runtime", default="torch,onnx",
        help="servers to compare, one after the other: a runtime, optionally with its own overrides after '@' "
        "(onnx@serve.inference_threads=1) [torch,onnx]",
    )  # fmt: skip
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if not (args.run / "model").is_dir() or not (args.run / "features" / "imagenet.parquet").is_file():
        raise SystemExit(f"{args.run} is not a finished run; run `make demo` (or pass --run RUN)")
    photos = sorted(PHOTOS.glob("*.JPEG"))[:50]
    if not photos:
        raise SystemExit(f"no photos in {PHOTOS}")
    runtimes = [r for r in args.runtime.split(",") if r]
    results: dict[str, dict] = {}
    starts: dict[str, float] = {}
    rss: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="socialfeat-serve-bench-") as tmp:
        run = args.keep or Path(tmp) / "run"
        t0 = time.perf_counter()
        if (run / "features" / "imagenet.faiss").is_file():
            index_s = {"reused": 0.0}
        else:
            index_s = clustered_run(args.run, run, args.items, args.users, args.interactions)
        print(f"synthetic run of {args.items:,} items in {time.perf_counter() - t0:.0f} s "
              f"(indexes: {', '.join(f'{k} {v:.0f} s' for k, v in index_s.items())})")  # fmt: skip
        ids = [f"s{i:06d}" for i in range(args.items)]
        words = search_words(run, ids)
        for runtime in runtimes:  # one after the other on the same machine, in one run
            port = free_port()
            engine, *own = runtime.split("@")
            proc, starts[runtime] = start_server(run, port, [*args.server_set, *own, f"serve.runtime={engine}"])
            try:
                base = f"http://127.0.0.1:{port}"
                health = json.loads(__import__("httpx").get(f"{base}/api/health").text)
                if health.get("runtime") != engine:
                    raise SystemExit(f"asked for {engine}, the server runs {health.get('runtime')}")
                started_rss = peak_rss_gb(proc.pid)
                load(port, ids, words, photos[:2], 3, 1, 1, 3.0)  # warm-up: first-touch costs are not latency
                results[runtime] = load(
                    port, ids, words, photos, args.clients, args.uploaders, args.searchers, args.seconds
                )
                rss[runtime] = (started_rss, peak_rss_gb(proc.pid))
            finally:
                proc.terminate()
                proc.wait(30)
            print(f"{runtime}: {len(results[runtime]['latencies']['upload'])} uploads", flush=True)
    kinds = ", ".join(f"{k} {v['kind']} index of {v['dimension']}-d" for k, v in health["sources"].items())
    flags = (
        f"--run {args.run} --runtime {args.runtime} --items {args.items}"
        f"{f' --users {args.users}' if args.users else ''}"
        f"{f' --interactions {args.interactions}' if args.interactions else ''}"
        f"{''.join(f' --server-set {x}' for x in args.server_set)} --seconds {args.seconds:g}"
    )
    kb = np.mean([p.stat().st_size for p in photos]) / 1e3
    by_id = args.clients - args.uploaders - args.searchers
    lines = [
        f"    python bench/serve.py {flags}",
        "",
        f"- {args.items:,} items ({kinds}) and {health['users']:,} users.",
        f"- Uploads go through the models of {args.run} ({health['sources']['learned']['image_size']} px).",
        f"- {args.clients} concurrent clients for {args.seconds:.0f} s per runtime: {by_id} by id, {args.searchers} "
        f"searching titles, {args.uploaders} uploading {len(photos)} ImageNet photos (~{kb:.0f} KB each).",
        f"- Server start-up: {', '.join(f'{k} {v:.1f} s' for k, v in starts.items())}.",
        "  An onnx start-up includes a first export when the run had none.",
        "- Server peak RSS at start-up / after the load: "
        f"{', '.join(f'{k} {a:.2f} / {b:.2f} GB' for k, (a, b) in rss.items())}.",
        f"- Index build {sum(index_s.values()):.0f} s. The runtimes ran one after the other, on the same machine.",
        "",
        "| runtime | request | requests | per s | p50 ms | p90 ms | p99 ms | max ms | errors | p99 target | p99 / target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for runtime, result in results.items():
        for r in summarize(result, args.seconds):
            lines.append(
                f"| {runtime} | {r['kind']} | {r['requests']:,} | {r['per_s']:.1f} | {r['p50']:.1f} | {r['p90']:.1f} "
                f"| {r['p99']:.1f} | {r['max']:.0f} | {r['errors']} | < {r['target']:.0f} | {r['p99'] / r['target']:.2f} |"
            )
    lines += ["", "Where an upload's time goes (server-side steps; queue + HTTP = client latency − server time):", ""]
    lines += step_table(results)
    errs = [e for result in results.values() for kind in result["errors"].values() for e in kind]
    if errs:
        lines += ["", f"First errors: {'; '.join(sorted(set(errs))[:3])}"]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        size = health["sources"]["learned"]["image_size"]
        record(f"Web explorer under load (serve, {size}-px model)", text + "\n")


if __name__ == "__main__":
    main()
