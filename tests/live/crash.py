"""A crash test of the live store: a child process adds items and logs events through :class:`Live` and
acknowledges each write after its commit; the parent SIGKILLs it at a random moment, then checks the store.

Shared by ``tests/live/test_crash.py`` (a few short rounds) and ``bench/live.py`` (20 rounds of 10,000 adds and
100,000 events). The child runs this file: ``python crash.py RUN ACKS ROUND ADDS EVENTS [OVERRIDE...]``.

What a round checks, after the kill:
- no acknowledged write is lost: every acknowledged item is in the store, not removed, and every acknowledged
  event (known by its unique ``ts``) is in the store;
- nothing is half-added: every item row has all its vectors and its image file, with the bytes its sha256 names;
- what a restart rebuilds from the store (``Live``'s replay: the live items, the user-ranking block, the users'
  events; the readers' live vectors beside the batch index) agrees with the store, and ``similar`` finds a live item.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ADD_BATCH = 25  # items per add call: one transaction each
EVENT_BATCH = 100  # events per log call: one transaction each


@dataclass
class Round:
    """One round's outcome: what was acknowledged, what the checks found."""

    killed_after: float
    finished: bool
    acked_items: int
    acked_events: int
    lost_items: list[str] = field(default_factory=list)
    lost_events: list[str] = field(default_factory=list)
    half_added: list[str] = field(default_factory=list)
    disagree: list[str] = field(default_factory=list)
    integrity: str = ""
    store_items: int = 0
    store_events: int = 0
    check_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost_items or self.lost_events or self.half_added or self.disagree) and self.integrity == "ok"


# ---------------------------------------------------------------------------------------------- the child
def _png(rng: random.Random) -> bytes:
    """A distinct 8×8 RGB PNG: a tiny image that decodes in microseconds."""
    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (8, 8), rng.randbytes(192)).save(out, "PNG")
    return out.getvalue()


def child(run: Path, acks: Path, round_: int, adds: int, events: int, overrides: list[str]) -> None:
    """Adds and events interleaved in proportion; each acknowledged (committed) batch is appended to ``acks`` as one
    line (``i`` ids or ``e`` ts values) with a single write, after the call that committed it returned."""
    from socialfeat.config import load_config
    from socialfeat.export import encoder_for
    from socialfeat.live import Live, Upload
    from socialfeat.live.embedding import run_sources
    from socialfeat.live.tables import NewEvent, NewItem

    config = load_config(None, overrides)
    live = Live(config, run, create=True)
    encoders = {s: encoder_for(config, run, s, threads=0) for s in run_sources(config, run)}
    rng = random.Random(round_)
    rec = live.rec
    batch_items = [str(i) for i, keep in zip(rec.item_ids, rec.in_dataset, strict=True) if keep]
    users = [str(u) for u in rec.user_ids]
    live_ids = list(live.items)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("ready", flush=True)
    base = 10**12 + round_ * 10**7
    n_add = n_event = 0
    while n_add < adds or n_event < events:
        if n_add < adds and (n_event >= events or n_add * events <= n_event * adds):
            ids = [
                str(base + n) if live.int_items else f"r{round_}i{n}"
                for n in range(n_add, min(adds, n_add + ADD_BATCH))
            ]
            uploads = [Upload(NewItem(i, "upload", row=r), _png(rng)) for r, i in enumerate(ids)]
            live.add(uploads, k=5, encoders=encoders)
            os.write(fd, ("i " + " ".join(ids) + "\n").encode())
            live_ids += ids
            n_add += len(ids)
            continue
        rows = []
        for n in range(n_event, min(events, n_event + EVENT_BATCH)):
            new_user = rng.random() < 0.05
            user = (
                (str(base + 5 * 10**6 + n) if live.int_users else f"r{round_}u{n}") if new_user else rng.choice(users)
            )
            item = rng.choice(live_ids) if live_ids and rng.random() < 0.5 else rng.choice(batch_items)
            rows.append(NewEvent(user, item, rng.choice(("view", "like")), None, f"r{round_}e{n}", row=n))
        live.log(rows)
        os.write(fd, ("e " + " ".join(r.ts for r in rows if r.ts) + "\n").encode())
        n_event += len(rows)
    os.close(fd)
    print("done", flush=True)


# ---------------------------------------------------------------------------------------------- the parent
def read_acks(path: Path) -> tuple[list[str], list[str]]:
    """(item ids, event ts) acknowledged; a line cut short by the kill (no newline) was never acknowledged."""
    items: list[str] = []
    events: list[str] = []
    if not path.is_file():
        return items, events
    text = path.read_text()
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete (or empty)
    for line in lines:
        kind, *values = line.split(" ")
        (items if kind == "i" else events).extend(values)
    return items, events


def run_round(
    run: Path, acks: Path, round_: int, adds: int, events: int, overrides: list[str], kill_at: float | None
) -> tuple[float, bool]:
    """Start the child; with ``kill_at`` (a share of the round's write batches), SIGKILL it once that share is
    acknowledged, at a random point of the next batch, else let it finish. Progress, not a clock, picks the moment,
    so a kill lands inside the work however fast the machine runs. (seconds it ran once ready, whether it finished)"""
    batches = -(-adds // ADD_BATCH) + -(-events // EVENT_BATCH)
    cmd = [sys.executable, str(Path(__file__).resolve()), str(run), str(acks), str(round_), str(adds), str(events)]
    log = acks.with_name(f"{acks.name}.child-{round_}.log")
    acks.touch()
    with open(log, "w") as err, open(acks, "rb") as seen:
        seen.seek(0, os.SEEK_END)  # count this round's acknowledgements only
        proc = subprocess.Popen([*cmd, *overrides], stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the crash child did not start: {log.read_text()[-3000:]}")
        t0 = time.perf_counter()
        done, rng = 0, random.Random(round_)
        while kill_at is not None and proc.poll() is None:
            done += seen.read().count(b"\n")
            if done >= kill_at * batches:
                time.sleep(rng.uniform(0, (time.perf_counter() - t0) / max(done, 1)))  # into the next batch
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return time.perf_counter() - t0, False
            time.sleep(0.01)
        out = proc.stdout.read()
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the crash child failed ({proc.returncode}): {log.read_text()[-3000:]}")
    return time.perf_counter() - t0, "done" in out


def check(run: Path, acks: Path, overrides: list[str], sample: int = 20) -> Round:
    """Everything a round checks (see the module docstring), on the store as the kill left it."""
    from socialfeat.config import load_config
    from socialfeat.index import load_index
    from socialfeat.live import Live, LiveStore
    from socialfeat.live.readers import merged_nearest, similar
    from socialfeat.live.store import from_blob, image_dir

    t0 = time.perf_counter()
    items, events = read_acks(acks)
    out = Round(0.0, False, len(items), len(events))
    config = load_config(None, overrides)
    store = LiveStore(run)
    assert store.db is not None, "no store after the round"
    db = store.db
    out.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    rows = db.execute("SELECT item_id, sha256, image, removed FROM items").fetchall()
    present = {r[0] for r in rows if not r[3]}
    out.lost_items = [i for i in items if i not in present]
    logged = {r[0] for r in db.execute("SELECT ts FROM events")}
    out.lost_events = [e for e in events if e not in logged]
    out.store_items, out.store_events = len(rows), len(logged)
    kinds = db.execute("SELECT count(DISTINCT source || '/' || col) FROM vectors").fetchone()[0]
    counts = dict(db.execute("SELECT item_id, count(*) FROM vectors GROUP BY item_id").fetchall())
    folder = image_dir(run)
    for item_id, sha, image, _ in rows:
        path = folder / image
        if counts.get(item_id, 0) != kinds or not path.is_file():
            out.half_added.append(item_id)
        elif hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            out.half_added.append(item_id)
    # what a restart rebuilds from the store
    live = Live(config, run)
    if set(live.items) != present:
        out.disagree.append(f"replayed items {len(live.items)} != store {len(present)}")
    block_ids, block = live.live_block()
    if set(block_ids) != present or len(block) != len(present):
        out.disagree.append("the user-ranking block differs from the store's live items")
    sums = db.execute("SELECT user_id, item_id, sum(weight) FROM events GROUP BY user_id, item_id").fetchall()
    wrong = [(u, i) for u, i, w in sums if abs(live.user_events.get(u, {}).get(i, 0.0) - w) > 1e-6 * max(1.0, abs(w))]
    if wrong or sum(len(v) for v in live.user_events.values()) != len(sums):
        out.disagree.append(f"replayed events differ from the store for {len(wrong)} (user, item) pairs")
    source, column = "learned", config.index.column
    live_ids, vectors = store.vectors(source, column)
    if set(live_ids) != present:
        out.disagree.append(f"live {source} vectors {len(live_ids)} != store items {len(present)}")
    if live_ids:
        index = load_index(run, source, column, config)
        for item_id in random.Random(len(rows)).sample(live_ids, min(sample, len(live_ids))):
            own = from_blob(db.execute(
                "SELECT vector FROM vectors WHERE item_id = ? AND source = ? AND col = ?", (item_id, source, column)
            ).fetchone()[0])  # fmt: skip
            ids, scores = merged_nearest(index, live_ids, vectors, store.removed(), own, 5)
            found = dict(zip(ids, scores, strict=True))
            if found.get(item_id, 0.0) < 1 - 1e-4:
                out.disagree.append(f"{item_id}: not its own nearest neighbour after the restart")
            rows_similar = similar(config, run, item_id=item_id, source=source, k=5)
            if len(rows_similar) != 5 or any(r["item_id"] == item_id for r in rows_similar):
                out.disagree.append(f"{item_id}: similar gave {len(rows_similar)} rows")
        if vectors is not None and not np.isfinite(vectors).all():
            out.disagree.append("non-finite live vectors")
    live.store.close()
    store.close()
    out.check_s = time.perf_counter() - t0
    return out


if __name__ == "__main__":
    run_dir, ack_path, round_no, n_adds, n_events, *extra = sys.argv[1:]
    child(Path(run_dir), Path(ack_path), int(round_no), int(n_adds), int(n_events), extra)
