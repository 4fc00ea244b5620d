"""The live catalogue's shortcuts against the plain computation: an added item's audience scored as one product
over every live user, and a batch user's pairs read from the row groups that hold them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from socialfeat.config import load_config
from socialfeat.features import read_features
from socialfeat.index import load_index, normalize
from socialfeat.live import Live, Upload
from socialfeat.live.catalogue import BatchLog
from socialfeat.live.readers import merged_nearest
from socialfeat.live.tables import NewEvent, NewItem
from socialfeat.recommend import Recommender


def test_the_audience_scores_every_users_folded_in_vector(embedded_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    live = Live(load_config(None, []), run)
    rec = live.rec
    items = [str(i) for i, warm in zip(rec.item_ids, rec.is_warm, strict=True) if warm][:6]
    users = [str(u) for u in rec.user_ids[:4]]
    new_users = ["1000001", "1000002"] if live.int_users else ["new-a", "new-b"]
    live.log([NewEvent(u, i, "like") for u in users + new_users for i in items[:3]])
    v = np.random.default_rng(0).standard_normal(rec.users.shape[1]).astype(np.float32)
    got = live.audience(v, len(rec.user_ids) + len(new_users))
    ids = [str(u) for u in rec.user_ids] + new_users
    scores = np.array([float(live.user_vector(u) @ v) for u in ids])
    assert [str(r["user_id"]) for r in got][:10] == [ids[i] for i in np.argsort(-scores, kind="stable")][:10]
    assert np.allclose([r["score"] for r in got], np.sort(scores)[::-1], rtol=1e-5, atol=1e-6)
    assert {str(r["user_id"]) for r in got} >= set(new_users)


def test_a_batch_users_pairs_are_the_filtered_log(embedded_run: Path, tmp_path: Path) -> None:
    """The log rewritten in row groups of 50 pairs (as ingest writes large ones, sorted by user): each user's pairs
    are exactly the rows a filter over the whole log finds."""
    source = embedded_run / "dataset"
    dataset = tmp_path / "run" / "dataset"
    dataset.mkdir(parents=True)
    shutil.copy(source / "users.parquet", dataset / "users.parquet")
    inter = pq.read_table(source / "interactions.parquet", columns=["user_idx", "item_idx", "weight"])
    pq.write_table(inter, dataset / "interactions.parquet", row_group_size=50)
    rec = Recommender(embedded_run)
    log = BatchLog(tmp_path / "run", rec)
    assert log.file.metadata.num_row_groups > 3 and log.low is not None
    users = pq.read_table(dataset / "users.parquet").to_pylist()
    for user in users[:: max(1, len(users) // 25)]:
        idx, weight = log.pairs(rec.user_row(user["user_id"]))
        mine = inter.column("user_idx").to_numpy() == user["user_idx"]
        assert len(idx) and idx.tolist() == inter.column("item_idx").to_numpy()[mine].tolist()
        assert np.array_equal(weight, inter.column("weight").to_numpy()[mine])


def test_merged_nearest_is_the_exact_top_k_of_batch_and_live_items(embedded_run: Path, tmp_path: Path) -> None:
    """Batch index and live vectors merged: the k best cosines over both, the query's own id and removed batch
    items left out, as a brute-force search over every vector finds them."""
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    ids, batch = read_features(run, "learned")
    index = load_index(run, "learned", "features", load_config(None, []))
    rng = np.random.default_rng(1)
    live_ids = [f"live-{n}" for n in range(60)]
    live = batch[rng.integers(0, len(batch), 60)] + rng.normal(0, 0.05, (60, batch.shape[1])).astype(np.float32)
    removed = {str(i) for i in ids[:5]}
    query = live[7]
    got_ids, got_scores = merged_nearest(index, live_ids, live, removed, query, 12, exclude="live-7")
    every = [str(i) for i in ids] + live_ids
    cos = normalize(np.concatenate([batch, live])) @ normalize(query[None])[0]
    keep = [n for n, i in enumerate(every) if i not in removed and i != "live-7"]
    best = sorted(keep, key=lambda n: -cos[n])[:12]
    assert [str(i) for i in got_ids] == [every[n] for n in best]
    assert np.allclose(got_scores, cos[best], atol=1e-5)
    assert any(str(i).startswith("live-") for i in got_ids) and any(not str(i).startswith("live-") for i in got_ids)


def test_the_ranking_block_kept_current_equals_one_built_afresh(embedded_run: Path, tmp_path: Path) -> None:
    """Adds, events (one item turning warm), a replacement and a removal: the block a long-lived Live keeps current
    is, row for row, the one a fresh Live builds from the store, and so are the users' rankings."""
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    config = load_config(None, ["live.warm_after=2", "live.sources=[learned]"])
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    images = [p.read_bytes() for p in sorted((root / "images").glob("*.png"))[:6]]
    live = Live(config, run)
    live.live_block()  # built now; from here on kept current
    user = str(live.rec.user_ids[0])

    def same() -> None:
        fresh = Live(config, run)
        (ids, block), (fresh_ids, fresh_block) = live.live_block(), fresh.live_block()
        assert ids == fresh_ids
        assert np.array_equal(block, fresh_block)
        assert live.rank(user, 20) == fresh.rank(user, 20)

    live.add([Upload(NewItem(f"new-{n}", "upload", row=n), images[n]) for n in range(3)], where="t")
    same()
    live.log([NewEvent(user, "new-0", "like"), NewEvent(str(live.rec.user_ids[1]), "new-0", "view")])
    assert live.is_warm_live("new-0")
    same()
    live.add([Upload(NewItem("new-3", "upload", row=1), images[3])], where="t")
    live.add([Upload(NewItem("new-1", "upload", row=1), images[4])], where="t", replace=True)
    same()
    live.remove(["new-2"])
    same()


def test_rank_is_the_plain_ranking_of_batch_and_live_items(embedded_run: Path, tmp_path: Path) -> None:
    """Masked in place and merged from two top-k: the same items, scores and seen flags as scoring every item,
    hiding what the ranking hides and sorting all of it."""
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    config = load_config(None, ["live.sources=[learned]"])
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    images = [p.read_bytes() for p in sorted((root / "images").glob("*.png"))[:4]]
    live = Live(config, run)
    rec = live.rec
    live.add([Upload(NewItem(f"new-{n}", "upload", row=n), images[n]) for n in range(4)], where="t")
    user, new_user = str(rec.user_ids[0]), "1000001" if live.int_users else "new-user"
    warm = [str(i) for i, w in zip(rec.item_ids, rec.is_warm, strict=True) if w]
    live.log([NewEvent(user, warm[0], "like"), NewEvent(user, "new-1", "like"), NewEvent(new_user, warm[1], "view")])
    live.remove([str(live.rank(user, 1)[0]["item_id"])])
    for who in (user, str(rec.user_ids[1]), new_user):
        u = live.user_vector(who)
        ids, block = live.live_block()
        every = [*rec.item_ids, *ids]
        scores = np.concatenate([rec.vectors @ u, block @ u])
        row = rec.user_row(who)
        seen = {str(rec.item_ids[r]) for r in (rec.seen(row) if row >= 0 else [])} | set(live.user_events.get(who, {}))
        for include_seen in (False, True):
            shown = [
                n for n, i in enumerate(every)
                if str(i) not in live.removed and (n >= len(rec.item_ids) or rec.in_dataset[n])
                and (include_seen or str(i) not in seen)
            ]  # fmt: skip
            for k in (10, len(every)):  # the head, and everything (live items included)
                best = sorted(shown, key=lambda n: (-scores[n], n))[:k]
                got = live.rank(who, k, include_seen)
                assert [str(r["item_id"]) for r in got] == [str(every[n]) for n in best]
                assert [r["score"] for r in got] == [float(scores[n]) for n in best]
                assert [r["seen"] for r in got] == [str(every[n]) in seen for n in best]
            assert sum(r["live"] for r in got) == 4 - (not include_seen and who == user)
