"""The next batch run absorbs the live store: ingest unions the store's items and events (up to one version) with
the raw logs, each exactly once, ids in the log's own type; a second ingest with no new writes gives the same
dataset; events logged after the snapshot stay live; removed items stay out of search; ``run`` reruns ingest only
when the store grew."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from socialfeat.config import load_config
from socialfeat.data.images import LIVE_PREFIX, ImageRoot, dataset_root
from socialfeat.data.ingest import ingest
from socialfeat.errors import UserError
from socialfeat.live.store import LiveItem, LiveStore, image_dir

NO_FILTER = ["filter.min_user_interactions=1", "filter.min_item_interactions=1", "filter.drop_top_users=0",
             "filter.drop_top_items=0"]  # fmt: skip
WEIGHTS = {"view": 1.0, "like": 4.0}
LOG = [  # user, item, event, value, time
    (1, 10, "view", 1.0, "2024-01-01T10:00:00"),
    (1, 10, "like", None, "2024-01-01T10:01:00"),
    (1, 11, "view", 2.0, "2024-01-02T10:00:00"),
    (2, 10, "view", None, "2024-01-03T10:00:00"),
    (2, 12, "view", 1.0, "2024-01-04T10:00:00"),
    (3, 12, "like", 3.0, "2024-01-05T10:00:00"),
]
LIVE_ITEMS = ["901", "902"]
LIVE_EVENTS = [  # the store's rows: ids as text, a kind the log never had, a new user
    ("1", "10", "view", 2.0, "2025-02-01T08:00:00"),  # onto a batch pair: its weight grows, no new pair
    ("1", "901", "like", None, "2025-02-01T09:00:00"),
    ("2", "901", "view", None, "2025-02-02T09:00:00"),
    ("2", "902", "save", 5.0, "2025-02-03T09:00:00"),
    ("7", "902", "view", None, "2025-02-04T09:00:00"),
    ("7", "11", "like", None, "2025-02-05T09:00:00"),
]


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _platform(folder: Path, fmt: str, int_ids: bool) -> dict[str, tuple[str, Path]]:
    """A tiny log and item table in ``fmt`` (csv: times as ISO text; parquet: timestamps; jsonl: epoch seconds)."""
    folder.mkdir(parents=True)
    (folder / "images").mkdir()
    ids = sorted({r[1] for r in LOG})
    for n, item in enumerate(ids):
        (folder / "images" / f"{item}.png").write_bytes(_png(n))
    users = [r[0] if int_ids else f"u{r[0]}" for r in LOG]
    items = [r[1] if int_ids else f"i{r[1]}" for r in LOG]
    times: list = [r[4] for r in LOG]
    if fmt == "parquet":
        times = [dt.datetime.fromisoformat(t) for t in times]
    elif fmt == "jsonl":
        times = [int(dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC).timestamp()) for t in times]
    log = pa.table({"user_id": users, "item_id": items, "event": [r[2] for r in LOG],
                    "value": [r[3] for r in LOG], "timestamp": times})  # fmt: skip
    item_ids = [i if int_ids else f"i{i}" for i in ids]
    table = pa.table({"item_id": item_ids, "image": [f"images/{i}.png" for i in ids], "title": [f"t{i}" for i in ids]})
    paths = {"interactions": folder / f"interactions.{fmt}", "items": folder / f"items.{fmt}"}
    for name, t in (("interactions", log), ("items", table)):
        if fmt == "parquet":
            pq.write_table(t, paths[name])
        elif fmt == "jsonl":
            paths[name].write_text("".join(json.dumps(row) + "\n" for row in t.to_pylist()))
        else:
            rows = [",".join(t.column_names)]
            rows += [",".join("" if v is None else str(v) for v in row.values()) for row in t.to_pylist()]
            paths[name].write_text("\n".join(rows) + "\n")
    return {f"ingest.{k}": ("test", v) for k, v in paths.items()}


def _config(flags: dict, extra: list[str] = ()):  # noqa: ANN202
    weights = [f"ingest.event_weights.{k}={v}" for k, v in WEIGHTS.items()]
    return load_config(None, [*NO_FILTER, *weights, *extra], flags)


def _weight(event: str, value: float | None) -> float:
    return WEIGHTS.get(event, 1.0) * (1.0 if value is None else value)


def put_items(run: Path, ids: list[str], titles: bool = True) -> int:
    """Items written straight into the run's store, as ``add`` stores them; returns the version."""
    store = LiveStore(run, create=True)
    folder = image_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    with store.write() as version:
        for n, item in enumerate(ids):
            data = _png(100 + n + int(hashlib.sha1(item.encode()).hexdigest()[:4], 16))
            digest = hashlib.sha256(data).hexdigest()
            (folder / f"{digest}.png").write_bytes(data)
            live = LiveItem(item, digest, f"{digest}.png", f"live {item}" if titles else None, None, None, {},
                            np.zeros(4, np.float32), "image", time.time(), version, False)  # fmt: skip
            store.put_item(live, {})
    store.close()
    return version


def put_events(run: Path, rows: list[tuple]) -> int:
    store = LiveStore(run, create=True)
    with store.write() as version:
        store.put_events([(*r, _weight(r[2], r[3])) for r in rows], version)
    store.close()
    return version


def pairs(dataset: Path) -> dict[tuple[str, str], dict]:
    """(user id, item id) as text → the pair's row of interactions.parquet."""
    users = pq.read_table(dataset / "users.parquet").to_pylist()
    items = pq.read_table(dataset / "items.parquet").to_pylist()
    uid = {u["user_idx"]: str(u["user_id"]) for u in users}
    iid = {i["item_idx"]: str(i["item_id"]) for i in items}
    return {
        (uid[r["user_idx"]], iid[r["item_idx"]]): r for r in pq.read_table(dataset / "interactions.parquet").to_pylist()
    }


def expected(rows: list[tuple]) -> dict[tuple[str, str], dict]:
    """Per pair: summed weight and count per kind, from the log's rows and the store's, by hand."""
    out: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(float))
    for u, i, e, v, _ in rows:
        out[(u, i)]["weight"] += _weight(e, v)
        out[(u, i)][f"n_{e}"] += 1
    return out


def _as_text(row: tuple, int_ids: bool, live: bool) -> tuple:
    """A row with ids as the dataset spells them (text, ``u``/``i`` prefixes for a text-id platform)."""
    u, i = row[0], row[1]
    if not int_ids:
        u = u if live else f"u{u}"
        i = i if live else f"i{i}"
    return (str(u), str(i), *row[2:])


@pytest.mark.parametrize(("fmt", "int_ids"), [("csv", False), ("parquet", True), ("jsonl", True), ("csv", True)])
def test_the_dataset_holds_every_live_item_and_event_exactly_once(tmp_path: Path, fmt: str, int_ids: bool) -> None:
    flags = _platform(tmp_path / "platform", fmt, int_ids)
    run = tmp_path / "run"
    live_events = LIVE_EVENTS if int_ids else [
        (f"u{u}", i if i.startswith("9") else f"i{i}", *rest) for u, i, *rest in LIVE_EVENTS
    ]  # fmt: skip
    put_items(run, LIVE_ITEMS)
    version = put_events(run, live_events)
    cfg = _config(flags)
    plain = ingest(cfg, tmp_path / "plain" / "dataset", live=False).stats
    stats = ingest(cfg, run / "dataset").stats
    assert "live" not in plain
    assert {k: stats["live"][k] for k in ("version", "items", "events", "items_in_dataset")} == {
        "version": version, "items": 2, "events": len(LIVE_EVENTS), "items_in_dataset": 2,
    }  # fmt: skip
    assert stats["after"]["interactions"] == plain["after"]["interactions"] + len(LIVE_EVENTS)
    assert stats["after"]["events"]["save"] == 1  # a kind only the store had

    rows = [_as_text(r, int_ids, live=False) for r in LOG] + [_as_text(r, int_ids, live=True) for r in live_events]
    want = expected(rows)
    found = pairs(run / "dataset")
    assert set(found) == set(want)  # no pair twice ("1" and 1 would be two users), none lost
    for key, w in want.items():
        assert found[key]["weight"] == pytest.approx(w["weight"], rel=1e-6), key
        for kind in ("view", "like", "save"):
            assert found[key][f"n_{kind}"] == w.get(f"n_{kind}", 0), (key, kind)
    user_type = pq.read_schema(run / "dataset" / "users.parquet").field("user_id").type
    assert pa.types.is_integer(user_type) == int_ids  # the log's id type, live ids cast to it
    if fmt == "csv" and not int_ids:
        onto = found[("u1", "i10")]  # a batch pair a live event joined: its last time is the live one
        assert str(onto["last_ts"]).startswith("2025-02-01 08:00:00")

    items = {str(r["item_id"]): r for r in pq.read_table(run / "dataset" / "items.parquet").to_pylist()}
    for item in LIVE_ITEMS:
        assert items[item]["image"].startswith(LIVE_PREFIX) and items[item]["title"] == f"live {item}"
        assert dataset_root(run / "dataset", stats).resolve(items[item]["image"]).is_file()


def test_a_second_ingest_without_new_writes_gives_the_same_dataset(tmp_path: Path) -> None:
    flags = _platform(tmp_path / "platform", "csv", False)
    run = tmp_path / "run"
    put_items(run, LIVE_ITEMS)
    put_events(run, [("u1", "901", "like", None, None), ("u9", "902", "view", 2.0, "2025-01-01")])
    cfg = _config(flags)
    first = ingest(cfg, run / "dataset").stats
    tables = {p.name: pq.read_table(p) for p in (run / "dataset").glob("*.parquet")}
    second = ingest(cfg, run / "dataset").stats
    assert second["live"] == first["live"]
    for name, table in tables.items():
        assert pq.read_table(run / "dataset" / name).equals(table), name


def test_ingest_absorbs_up_to_the_version_it_is_given(tmp_path: Path) -> None:
    """The pipeline passes the version its hash saw: a write after it waits for the next run."""
    flags = _platform(tmp_path / "platform", "csv", False)
    run = tmp_path / "run"
    put_items(run, LIVE_ITEMS)
    snapshot = put_events(run, [("u1", "901", "like", None, None)])
    put_events(run, [("u2", "901", "view", None, None), ("u3", "902", "view", None, None)])
    stats = ingest(_config(flags), run / "dataset", live_version=snapshot).stats
    assert (stats["live"]["version"], stats["live"]["events"]) == (snapshot, 1)
    found = pairs(run / "dataset")
    assert ("u1", "901") in found and ("u2", "901") not in found and ("u3", "902") not in found


def test_a_live_item_takes_over_an_item_table_row_with_its_id(tmp_path: Path) -> None:
    """An id the item table lists (without events, so never in the batch) and ``add`` added later: the catalogue
    showed the live item, and that is the one the dataset keeps."""
    flags = _platform(tmp_path / "platform", "csv", False)
    items = Path(flags["ingest.items"][1])
    items.write_text(items.read_text() + "901,images/10.png,table title\n")
    run = tmp_path / "run"
    put_items(run, ["901"])
    put_events(run, [("u1", "901", "view", None, None)])
    stats = ingest(_config(flags), run / "dataset").stats
    assert stats["live"]["replaced_item_rows"] == 1
    row = [r for r in pq.read_table(run / "dataset" / "items.parquet").to_pylist() if r["item_id"] == "901"]
    assert len(row) == 1 and row[0]["title"] == "live 901" and row[0]["image"].startswith(LIVE_PREFIX)


def test_the_store_images_are_a_second_root_no_item_table_path_reaches(tmp_path: Path) -> None:
    flags = _platform(tmp_path / "platform", "csv", False)
    run = tmp_path / "run"
    put_items(run, ["901"])
    put_events(run, [("u1", "901", "view", None, None)])
    stored = next(image_dir(run).iterdir()).name
    items = Path(flags["ingest.items"][1])  # a user's path spelled like a store path, and one climbing into it
    items.write_text(items.read_text() + f"i77,{LIVE_PREFIX}{stored},x\ni78,../../run/live/images/{stored},y\n")
    log = Path(flags["ingest.interactions"][1])
    log.write_text(log.read_text() + "u1,i77,view,,\nu1,i78,view,,\n")
    stats = ingest(_config(flags), run / "dataset").stats
    kept = {r["item_id"]: r["image"] for r in pq.read_table(run / "dataset" / "items.parquet").to_pylist()}
    assert "i77" not in kept and "i78" not in kept  # missing under the platform, and outside it: dropped
    assert stats["dropped"]["items_missing_image"] == 1 and stats["dropped"]["items_image_outside_root"] == 1
    live_root = ImageRoot(tmp_path / "platform", live=image_dir(run))
    assert live_root.resolve(f"{LIVE_PREFIX}../../../platform/images/10.png") is None  # confined to the store
    assert live_root.resolve(f"./{LIVE_PREFIX}{stored}") == tmp_path / "platform" / f"{LIVE_PREFIX}{stored}"
    assert ImageRoot(tmp_path / "platform").resolve(f"{LIVE_PREFIX}{stored}") == (
        tmp_path / "platform" / f"{LIVE_PREFIX}{stored}"
    )  # without the live root (a dataset that absorbed nothing) it is an ordinary name


def test_a_text_id_in_a_store_beside_an_integer_log_is_one_line(tmp_path: Path) -> None:
    flags = _platform(tmp_path / "platform", "parquet", True)
    run = tmp_path / "run"
    put_events(run, [("u1", "10", "view", None, None)])  # `log` refuses it for such a run; a hand-made store may not
    with pytest.raises(UserError, match=r"live\.db: the id 'u1' of a logged event does not fit column 'user_id'"):
        ingest(_config(flags), run / "dataset")


def test_no_store_or_an_empty_one_changes_nothing(tmp_path: Path) -> None:
    flags = _platform(tmp_path / "platform", "csv", False)
    run = tmp_path / "run"
    LiveStore(run, create=True).close()  # version 0
    stats = ingest(_config(flags), run / "dataset").stats
    assert "live" not in stats
    shutil.rmtree(run / "live")
    assert "live" not in ingest(_config(flags), run / "dataset").stats


# ------------------------------------------------------------------------------------------------ the pipeline
def test_ingest_reruns_when_the_store_grew_and_only_then(tmp_path: Path) -> None:
    from socialfeat.pipeline import StageOutcome, _write_marker, stage_hash, stale_reason

    flags = _platform(tmp_path / "platform", "csv", False)
    run = tmp_path / "run"
    cfg = _config(flags)
    bare = stage_hash(cfg, "ingest", run, "")
    LiveStore(run, create=True).close()
    assert stage_hash(cfg, "ingest", run, "") == bare  # an empty store is no input yet: nothing reruns
    version = put_events(run, [("u1", "10", "view", None, None)])
    grown = stage_hash(cfg, "ingest", run, "")
    assert grown != bare and stage_hash(cfg, "ingest", run, "", live=version) == grown
    ingest(cfg, run / "dataset", live_version=version)
    _write_marker(cfg, run, StageOutcome("ingest", "ran"), grown, version)
    assert stale_reason(cfg, run, "ingest", grown, ()) is None  # nothing new: ingest is current
    put_events(run, [("u2", "10", "view", None, None)])
    now = stage_hash(cfg, "ingest", run, "")
    assert now != grown
    assert (
        stale_reason(cfg, run, "ingest", now, ()) == f"live: 'store version {version}' → 'store version {version + 1}'"
    )


# ------------------------------------------------------------------------------------------------ end to end
E2E = ["factorize.factors=16", "factorize.alpha=1", "factorize.evaluate=false", "split.cold_fraction=0.2",
       "targets.clusters=6", "train.backbone=socialfeat_tiny", "train.weights=random", "train.image_size=32",
       "train.epochs=2", "train.batch_size=32", "train.finetune=all", "train.threads=1",
       "train.targets=[factors,factor-clusters]", "live.warm_after=3"]  # fmt: skip


def _noise(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def rerun(embedded_run: Path, platform: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the trained tiny run that gained live items, events and removals, then went through the batch
    again (ingest up to the store's version V, factorize, targets, train, embed, index), while more events came in
    after V."""
    from socialfeat.embed import embed
    from socialfeat.factorize.stage import factorize
    from socialfeat.index import build_index
    from socialfeat.live.catalogue import Live, Upload
    from socialfeat.live.tables import NewEvent, NewItem
    from socialfeat.targets.stage import targets
    from socialfeat.train import train

    run = Path(shutil.copytree(embedded_run, tmp_path_factory.mktemp("absorb") / "run"))
    flags = {f"ingest.{k}": ("t", platform / f"{k}.csv") for k in ("interactions", "items", "comments")}
    cfg = load_config(None, E2E, flags)
    live = Live(cfg, run, create=True)
    users = [str(u) for u in live.rec.user_ids[:12]]
    warm = [str(i) for i, w in zip(live.rec.item_ids, live.rec.is_warm, strict=True) if w]
    live.add([Upload(NewItem(f"new{k}", f"new{k}.png", title=f"new {k}"), _noise(k)) for k in range(4)])
    before = [
        NewEvent(u, f"new{k}", "like" if n % 2 else "view", None, None)
        for k in range(3)
        for n, u in enumerate(users[:9])
    ]
    before += [NewEvent("newcomer", item, "view", 2.0, "2025-03-01T10:00:00") for item in warm[:6]]
    before.append(NewEvent(users[1], "new3", "share", None, None))  # one user: the popularity filter drops new3
    live.log(before)
    gone = warm[7]
    live.remove([gone, "new2"])
    snapshot = live.store.version()
    before_counts = pq.read_metadata(run / "dataset" / "interactions.parquet").num_rows
    ingest(cfg, run / "dataset", live_version=snapshot)
    after = [NewEvent(users[0], item, "like", None, None) for item in warm[10:13]]
    live.log(after)  # logged after the snapshot: the batch never saw them
    factorize(cfg, run)
    targets(cfg, run)
    train(cfg, run)
    for source in ("learned", "imagenet", "random"):
        embed(cfg, run, source)
    build_index(cfg, run)
    return {"run": run, "cfg": cfg, "snapshot": snapshot, "before": before, "after": after, "gone": gone,
            "users": users, "batch_pairs": before_counts}  # fmt: skip


@pytest.mark.slow
def test_after_the_rerun_the_batch_holds_the_snapshot_and_the_rest_stays_live(rerun: dict) -> None:
    from socialfeat.live.catalogue import Live

    run, cfg = rerun["run"], rerun["cfg"]
    stats = json.loads((run / "dataset" / "stats.json").read_text())
    assert stats["live"]["version"] == rerun["snapshot"] and stats["live"]["events"] == len(rerun["before"])
    assert stats["live"]["items"] == 4 and stats["live"]["items_in_dataset"] == 3  # new2 too: removed, events kept
    live = Live(cfg, run)
    assert live.absorbed == rerun["snapshot"]
    assert list(live.items) == ["new3"]  # the others are batch items now; new3 stays live, as the filter left it
    assert {"new0", "new1", "new2", "newcomer"} <= set(map(str, live.item_row)) | set(map(str, live.rec.user_ids))
    user, other = rerun["users"][:2]
    weights = {e.item_id: cfg.ingest.event_weights.get(e.event, 1.0) for e in rerun["after"]}
    share = cfg.ingest.event_weights.get("share", 1.0)
    found = {u: dict(v) for u, v in live.user_events.items()}
    assert found == {user: weights, other: {"new3": share}}  # after V, and what the filter left out of the batch
    assert dict(live.item_counts) == {**dict.fromkeys(weights, 1), "new3": 1}
    row = live.rec.user_row(user)
    assert not np.allclose(live.user_vector(user), live.rec.users[row])  # the later events folded in at once
    view = cfg.ingest.event_weights.get("view", 1.0)
    newcomer = {k: r for k, r in pairs(run / "dataset").items() if k[0] == "newcomer"}
    assert len(newcomer) == 6 and all(
        r["weight"] == pytest.approx(2 * view) and r["n_view"] == 1 for r in newcomer.values()
    )
    new0 = [r for k, r in pairs(run / "dataset").items() if k[1] == "new0"]
    assert len(new0) == 9 and sum(r["n_like"] + r["n_view"] for r in new0) == 9  # each event once


@pytest.mark.slow
def test_removed_items_stay_out_of_search_after_the_rerun(rerun: dict) -> None:
    from socialfeat.live.catalogue import Live
    from socialfeat.live.readers import for_user, similar

    run, cfg, gone = rerun["run"], rerun["cfg"], rerun["gone"]
    live = Live(cfg, run)
    assert {gone, "new2"} <= live.removed
    everything = len(live.rec.item_ids) + 10
    for user in rerun["users"][:3]:
        ranked = [r["item_id"] for r in live.rank(user, everything, include_seen=True)]
        assert gone not in map(str, ranked) and "new2" not in ranked and "new0" in ranked
        served = [r["item_id"] for r in for_user(cfg, run, user, k=everything, include_seen=True)]
        assert served == ranked
    found = similar(cfg, run, item_id="new0", k=everything)
    ids = [str(r["item_id"]) for r in found]
    assert gone not in ids and "new2" not in ids and "new0" not in ids  # removed, removed, the query itself
    assert len(ids) == len(set(ids)) and "new1" in ids  # an absorbed item is found once, as a batch item
    assert {str(r["item_id"]) for r in found if r["live"]} == {"new3"}  # the one the filter left live
    with pytest.raises(UserError, match="removed from the catalogue"):
        similar(cfg, run, item_id="new2")
