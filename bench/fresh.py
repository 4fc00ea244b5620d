"""The fresh-content evaluation (issue 32, point 7): a time-ordered replay through the live catalogue.

A cut at time T splits each data set. The batch run is trained only on events before T, on items that arrived
before T. The items that arrive after T are added live (``Live.add``) in time order, and the events after T are
logged (``Live.log``) in time order. Each new item is scored at its arrival for the users who engage with it within
their next N events (:mod:`socialfeat.live.fresh` defines the metric).

    python bench/fresh.py simulator --out /tmp/fresh-sim          # the demo platform (3,000 items × 2,000 users)
    python bench/fresh.py movielens --out /tmp/fresh-ml --set train.epochs=3
    python bench/fresh.py record --simulator /tmp/fresh-sim --movielens /tmp/fresh-ml3 /tmp/fresh-ml

Arrival times:
- simulator: its events carry timestamps over 90 days, but its items have no arrival (every item is viewed from
  day 0). The last ``--fresh-share`` of the items by id (ids are independent of every item attribute) get simulated
  arrivals spread evenly from the cut to the end; their events before that arrival are dropped (nobody sees an
  item before it is posted). The other items are there from day 0.
- MovieLens: the shared copy has no timestamps, so a movie's first rating is not known. Arrival order is the
  MovieID order (assumed: MovieLens numbered movies as they joined its catalogue). Each rating is placed at its
  movie's arrival, the earliest moment it could happen; within a movie, ratings go in user id order.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _results import record  # noqa: E402

DAY = 86400
HORIZON_DAYS = 90  # the simulator's (socialfeat.data.simulate.DAYS)
SHARED = ROOT.parent / "shared" / "data" / "movielens-1m"  # the shared data beside the checkout


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return len(rows)


def prepare_simulator(platform: Path, out: Path, fresh_share: float, cut_day: float) -> dict:
    """Pre-cut tables for the batch run, and the arrivals and events after the cut for the replay."""
    con = duckdb.connect()
    con.execute("SET threads = 1")
    items = con.execute(
        f"SELECT item_id, image, title, tags FROM read_csv('{platform / 'items.csv'}', all_varchar=true) ORDER BY item_id"
    ).fetchall()  # noqa: E501
    n_fresh = round(fresh_share * len(items))
    cut, end = cut_day * DAY, HORIZON_DAYS * DAY
    fresh = items[len(items) - n_fresh :]
    arrival = {row[0]: cut + (k + 0.5) / n_fresh * (end - cut) for k, row in enumerate(fresh)}
    con.execute("CREATE TABLE arrival (item_id VARCHAR, a DOUBLE)")
    con.executemany("INSERT INTO arrival VALUES (?, ?)", list(arrival.items()))
    con.execute(
        f"""CREATE TABLE ev AS SELECT user_id, item_id, event, timestamp,
            epoch(CAST(timestamp AS TIMESTAMP) - TIMESTAMP '2024-03-01') AS t
            FROM read_csv('{platform / "interactions.csv"}', all_varchar=true)"""
    )
    con.execute(
        f"""CREATE TABLE cm AS SELECT item_id, user_id, text, timestamp,
            epoch(CAST(timestamp AS TIMESTAMP) - TIMESTAMP '2024-03-01') AS t
            FROM read_csv('{platform / "comments.csv"}', all_varchar=true)"""
    )
    total = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    dropped = con.execute("SELECT count(*) FROM ev JOIN arrival USING (item_id) WHERE t < a").fetchone()[0]
    pre = con.execute(
        f"SELECT user_id, item_id, event, timestamp FROM ev WHERE t < {cut} AND item_id NOT IN (SELECT item_id FROM arrival) ORDER BY t, user_id, item_id"  # noqa: E501
    ).fetchall()
    post = con.execute(
        f"""SELECT user_id, item_id, event, timestamp, t FROM ev LEFT JOIN arrival USING (item_id)
            WHERE t >= {cut} AND (a IS NULL OR t >= a) ORDER BY t, user_id, item_id, event"""
    ).fetchall()
    comments = con.execute(
        f"SELECT item_id, user_id, text, timestamp FROM cm WHERE t < {cut} AND item_id NOT IN (SELECT item_id FROM arrival)"  # noqa: E501
    ).fetchall()
    data = out / "data"
    fresh_ids = set(arrival)
    _write_csv(
        data / "pre" / "items.csv", ["item_id", "image", "title", "tags"], [r for r in items if r[0] not in fresh_ids]
    )
    _write_csv(data / "pre" / "interactions.csv", ["user_id", "item_id", "event", "timestamp"], pre)
    _write_csv(data / "pre" / "comments.csv", ["item_id", "user_id", "text", "timestamp"], comments)
    _write_csv(
        data / "post" / "arrivals.csv",
        ["item_id", "image", "title", "tags", "time"],
        [(*r, arrival[r[0]]) for r in fresh],
    )
    _write_csv(data / "post" / "events.csv", ["user_id", "item_id", "event", "timestamp", "time"], post)
    return {
        "data": "simulator",
        "platform": str(platform),
        "arrival": f"the last {fresh_share:.0%} of the items by id arrive evenly from day {cut_day:g} to day {HORIZON_DAYS}; "
        "their earlier events are dropped; the other items are there from day 0",
        "cut": cut,
        "cut_text": f"day {cut_day:g} of {HORIZON_DAYS}",
        "items_before": len(items) - n_fresh,
        "items_after": n_fresh,
        "events_total": total,
        "events_dropped_before_arrival": dropped,
        "events_before": len(pre),
        "events_after": len(post),
        "image_root": str(platform),
    }


def prepare_movielens(shared: Path, out: Path, fresh_share: float) -> dict:
    """MovieLens in MovieID order: the last ``fresh_share`` of the movies arrive after the cut, one at a time."""
    con = duckdb.connect()
    con.execute("SET threads = 1")
    items = con.execute(
        f"SELECT item_id, image, title, genres FROM read_csv('{shared / 'items.csv'}', all_varchar=true) ORDER BY CAST(item_id AS BIGINT)"  # noqa: E501
    ).fetchall()
    rank = {row[0]: r for r, row in enumerate(items, 1)}
    n_fresh = round(fresh_share * len(items))
    cut = len(items) - n_fresh + 1  # the rank of the first movie after the cut
    fresh = items[cut - 1 :]
    fresh_ids = {r[0] for r in fresh}
    ratings = con.execute(
        f"SELECT user_id, item_id FROM read_csv('{shared / 'interactions.csv'}', all_varchar=true)"
    ).fetchall()
    pre = [(u, i) for u, i in ratings if i not in fresh_ids]
    post = sorted(
        ((u, i, "rating", "", rank[i]) for u, i in ratings if i in fresh_ids), key=lambda e: (e[4], int(e[0]))
    )
    data = out / "data"
    _write_csv(
        data / "pre" / "items.csv", ["item_id", "image", "title", "genres"], [r for r in items if r[0] not in fresh_ids]
    )
    _write_csv(data / "pre" / "interactions.csv", ["user_id", "item_id"], pre)
    _write_csv(
        data / "post" / "arrivals.csv", ["item_id", "image", "title", "tags", "time"], [(*r, rank[r[0]]) for r in fresh]
    )
    _write_csv(data / "post" / "events.csv", ["user_id", "item_id", "event", "timestamp", "time"], post)
    return {
        "data": "movielens",
        "arrival": "MovieID order (no timestamps in the shared copy); a rating happens at its movie's arrival",
        "cut": cut,
        "cut_text": f"movie {cut:,} of {len(items):,} in MovieID order (MovieID {fresh[0][0]})",
        "items_before": len(items) - n_fresh,
        "items_after": n_fresh,
        "events_total": len(ratings),
        "events_dropped_before_arrival": 0,
        "events_before": len(pre),
        "events_after": len(post),
        "image_root": str(shared),
    }


def simulator_config(out: Path, platform: Path) -> dict:
    """The demo's config on the pre-cut tables; content without ImageNet, so the live path is learned + text."""
    base = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    pre = out / "data" / "pre"
    base.pop("simulate", None)
    base.pop("transfer", None)
    base["name"] = "fresh-simulator"
    base["ingest"].update(
        {"interactions": str(pre / "interactions.csv"), "items": str(pre / "items.csv"),
         "comments": str(pre / "comments.csv"), "image_root": str(platform)}
    )  # fmt: skip
    base["evaluate"] = {"labels": None}
    base["content"]["sources"] = ["learned", "text", "tags"]
    base["live"] = {"sources": ["learned", "imagenet"]}
    return base


def movielens_config(out: Path) -> dict:
    """configs/movielens.yaml on the pre-cut tables, a random 20% cold split of the pre-cut movies (the shared
    split names movies after the cut), and content without ImageNet."""
    base = yaml.safe_load((ROOT / "configs" / "movielens.yaml").read_text())
    pre = out / "data" / "pre"
    base["name"] = "fresh-movielens"
    base["ingest"].update({"interactions": str(pre / "interactions.csv"), "items": str(pre / "items.csv"),
                           "image_root": str(SHARED)})  # fmt: skip
    base["split"] = {"cold_items": None, "cold_fraction": 0.2}
    base["content"]["sources"] = ["learned", "text", "tags", "numeric"]
    base["live"] = {"sources": ["learned", "imagenet"]}
    return base


def run_batch(config: dict, out: Path, sets: list[str]) -> float:
    """``socialfeat run`` on the pre-cut data (stages already current are skipped)."""
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "socialfeat", "run", str(path), "--run", str(out / "run")]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def evaluate(out: Path, info: dict, n_next: int, k: int | None, resamples: int | None) -> dict:
    from socialfeat.live.fresh import evaluate_fresh, read_replay

    replay = read_replay(out / "data" / "post", info["cut"], Path(info["image_root"]))
    return evaluate_fresh(out / "run", replay, n_next=n_next, k=k, resamples=resamples, data=info)


PROTOCOL = """A time-ordered replay through the live catalogue (`socialfeat.live.fresh`). The batch run sees only
the events before a cut, on the items that arrived before it. Each later item is added with `Live.add` at its
arrival, and the events in between are logged with `Live.log`. Right after an item is added, each user whose next
N events include it is shown the catalogue as `Live.rank` orders it (every item they had not engaged with). AUC is
the share of those items the new one beats (ties ½); recall@k whether it makes the top k (random tie-break). Means
are over (user, new item) pairs; intervals are a paired bootstrap that resamples users and items together.

The rows differ only in how a new item's factors are predicted before its own events take over (after `live.warm_after` = 5):

- the run's rule as `add` applies it (its content model: learned image + title + tags);
- ridge maps from learned or ImageNet image features, fit on the batch's warm items, λ chosen on its valid cold items (as `evaluate` does);
- the content model without the image;
- the mean item vector.

Popularity (events so far) and random scores rank the same candidates.
Nothing was tuned on the data after the cut: the cut, N, k and every setting were fixed before the replay ran."""


def batch_minutes(run: Path) -> float:
    """The batch run's time: the seconds each stage's marker recorded when it last ran."""
    markers = (run / ".pipeline").glob("*.json")
    return sum(float(json.loads(m.read_text()).get("seconds", 0)) for m in markers) / 60


def describe(folder: Path) -> str:
    """One data set's section: how its arrivals were made, the command, the batch, the table."""
    from socialfeat.live.fresh import markdown_table

    result = json.loads((folder / "run" / "eval" / "fresh.json").read_text())
    info = result.get("data") or {}
    command = (folder / "command.txt").read_text().strip() if (folder / "command.txt").is_file() else ""
    facts = [
        f"Arrivals: {info.get('arrival')}.",
        f"Cut: {info.get('cut_text')}: {info.get('items_before', 0):,} items and {info.get('events_before', 0):,} "
        f"events before it (the batch run), {info.get('items_after', 0):,} items and {info.get('events_after', 0):,} "
        "events after it (the replay).",
        f"Batch run: the stages `socialfeat run` ran took {batch_minutes(folder / 'run'):.0f} min"
        + (f", with `--set {' '.join(info['batch_sets'])}`." if info.get("batch_sets") else "."),
        f"Replays: {result.get('seconds', 0) / 60:.0f} min for {len(result.get('replays', {}))} replays; "
        f"{result.get('events_skipped', 0):,} events on items the batch filtered out were not replayed.",
    ]
    if batch_minutes(folder / "run") < 1:  # its stages ran by hand: notes.md says how
        facts = [f for f in facts if not f.startswith("Batch run:")]
    notes = folder / "notes.md"  # what was run by hand beside the command, when anything was
    facts += (
        [line.removeprefix("- ") for line in notes.read_text().splitlines() if line.strip()] if notes.is_file() else []
    )
    return f"`{command}`\n\n" + "\n".join(f"- {f}" for f in facts) + "\n\n" + markdown_table(result)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["simulator", "movielens", "record"])
    p.add_argument("--out", type=Path)
    p.add_argument("--platform", type=Path, default=ROOT / "runs" / "demo" / "platform")
    p.add_argument("--fresh-share", type=float, default=None)
    p.add_argument("--cut-day", type=float, default=60.0)
    p.add_argument("--next", type=int, default=50, dest="n_next", help="N: the engaged users' next N events")
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--resamples", type=int, default=None)
    p.add_argument("--set", action="append", default=[], dest="sets")
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument("--skip-batch", action="store_true", help="replay on OUT/run as it is (its stages run by hand)")
    p.add_argument("--simulator", type=Path)
    p.add_argument("--movielens", type=Path, nargs="*", help="one or more MovieLens replays' folders")
    a = p.parse_args(argv)
    if a.what == "record":
        parts = [PROTOCOL]
        folders = [("Simulator", a.simulator)] if a.simulator else []
        for folder in a.movielens or []:
            sets = json.loads((folder / "run" / "eval" / "fresh.json").read_text())["data"].get("batch_sets") or []
            folders.append((f"MovieLens-1M ({', '.join(sets) or 'configs/movielens.yaml'})", folder))
        for name, folder in folders:
            parts.append(f"### {name}\n\n{describe(folder)}")
        record("Fresh content (issue 32 point 7)", "\n\n".join(parts))
        return
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text("python bench/fresh.py " + " ".join(sys.argv[1:] if argv is None else argv))
    info_path = out / "data" / "info.json"
    if a.what == "simulator":
        platform = a.platform.resolve()
        if not info_path.is_file():
            info = prepare_simulator(platform, out, a.fresh_share or 0.2, a.cut_day)
            info_path.write_text(json.dumps(info, indent=1))
        config = simulator_config(out, platform)
    else:
        if not info_path.is_file():
            info = prepare_movielens(SHARED, out, a.fresh_share or 0.15)
            info_path.write_text(json.dumps(info, indent=1))
        config = movielens_config(out)
    info = json.loads(info_path.read_text())
    print(json.dumps(info, indent=1))
    if a.prepare_only:
        return
    if not a.skip_batch:
        run_batch(config, out, a.sets)
    info["batch_sets"] = a.sets
    result = evaluate(out, info, a.n_next, a.k, a.resamples)
    print(json.dumps({r["name"]: {m: r.get(m) for m in ("auc", "auc_ci")} for r in result["rows"]}, indent=1))


if __name__ == "__main__":
    main()
