"""The live catalogue against the batch path: parity of added items and folded-in users, and the commands'
behaviour (idempotent adds, removal, events, all-or-none writes)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.live import Live, LiveStore
from socialfeat.live.catalogue import confidence
from socialfeat.live.foldin import fold_in
from socialfeat.live.operations import add_items, log_events, remove_items
from socialfeat.live.readers import for_user, similar
from socialfeat.live.tables import NewEvent, NewItem

CFG = load_config(None, [])


@pytest.fixture
def run(embedded_run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(embedded_run, dest)
    return dest


def _items(run: Path) -> dict[str, dict]:
    return {str(r["item_id"]): r for r in pq.read_table(run / "dataset" / "items.parquet").to_pylist()}


def _image_root(run: Path) -> Path:
    import json

    return Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])


def _test_items(run: Path) -> list[str]:
    split = pq.read_table(run / "factors" / "item_split.parquet").to_pylist()
    return [str(r["item_id"]) for r in split if r["split"] == "test"]


def _write_items(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _as_new(run: Path, ids: list[str], prefix: str = "new-") -> list[NewItem]:
    items = _items(run)
    return [
        NewItem(prefix + i, items[i]["image"], items[i].get("title"), None, items[i].get("tags"), row=n)
        for n, i in enumerate(ids, start=1)
    ]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ----------------------------------------------------------------------------------------------- parity
@pytest.mark.slow
def test_cold_items_added_one_at_a_time_get_the_batch_heads_factors_and_auc(run: Path) -> None:
    """Without a content model an added item's factors are the learned model's factors head, as `embed` wrote it
    for the batch's cold items: the same within 1e-4, so the cold-start AUC is the same too."""
    from socialfeat.content.stage import scored
    from socialfeat.features import read_features
    from socialfeat.measures.coldstart import load_coldstart

    live = Live(CFG, run)
    test = _test_items(run)
    for item in _as_new(run, test):
        live.add([item], _image_root(run), where="t")
    ids, head = read_features(run, "learned", "head_factors")
    row = {str(i): r for r, i in enumerate(ids)}
    batch = np.stack([head[row[i]] for i in test])
    added = np.stack([LiveStore(run).item("new-" + i).factors for i in test])
    assert _rel(added, batch) <= 1e-4
    data = load_coldstart(run)
    order = [data.item_ids[i] for i in data.test]
    pick = {i: n for n, i in enumerate(test)}
    auc_batch = scored(batch[[pick[str(i)] for i in order]], data, 10)[0]["auc"]
    auc_live = scored(added[[pick[str(i)] for i in order]], data, 10)[0]["auc"]
    assert abs(auc_batch - auc_live) <= 1e-6


@pytest.mark.slow
def test_cold_items_added_through_the_cli_match_the_content_model(content_run: Path, tmp_path: Path) -> None:
    """With a content model (learned + title text + tags), `socialfeat add` one item at a time predicts what the
    content stage wrote for the same cold test items (max relative difference ≤ 1e-4)."""
    from typer.testing import CliRunner

    from socialfeat.cli import app

    run = tmp_path / "run"
    shutil.copytree(content_run, run)
    test = _test_items(run)[:6]
    items = _items(run)
    for i in test:
        table = _write_items(
            tmp_path / f"{i}.csv",
            [{"item_id": "new-" + i, "image": items[i]["image"], "title": items[i]["title"], "tags": items[i]["tags"]}],
        )
        result = CliRunner().invoke(
            app, ["add", str(run), "--items", str(table), "--image-root", str(_image_root(run))]
        )
        assert result.exit_code == 0, result.output
        assert "new-" + i in result.output
    batch = {
        str(r["item_id"]): np.array(r["factors"])
        for r in pq.read_table(run / "content" / "item_factors.parquet").to_pylist()
    }
    store = LiveStore(run)
    for i in test:
        item = store.item("new-" + i)
        assert item.predicted_by == "content"
        assert _rel(item.factors, batch[i]) <= 1e-4


def test_folding_in_a_users_own_training_pairs_reproduces_the_fitted_vector(run: Path) -> None:
    """factorize ends with an exact user half-step, so the fold-in of a warm user's training pairs against the
    item factors is the stored vector (relative difference ≤ 1e-3; measured ~1e-6)."""
    live = Live(CFG, run)
    rec = live.rec
    errors = []
    for row in range(len(rec.user_ids)):
        rows, weights = live.batch_pairs(row)
        if not len(rows):
            continue
        v = fold_in(rec.vectors[rows], live.item_gram, confidence(weights, live.params), live.reg)
        errors.append(np.linalg.norm(v - rec.users[row]) / np.linalg.norm(rec.users[row]))
    assert len(errors) > 100
    assert max(errors) <= 1e-3


def test_our_fold_in_is_implicits_recalculate_user(run: Path) -> None:
    """The same normal equations as implicit's exact solver, on the same confidences."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    live = Live(CFG, run)
    rec = live.rec
    y = np.ascontiguousarray(rec.vectors[: live.n_warm])
    model = AlternatingLeastSquares(factors=y.shape[1], regularization=live.reg, alpha=1.0)
    model.item_factors = y
    model.user_factors = np.zeros((1, y.shape[1]), np.float32)
    for row in (0, 5, 17):
        rows, weights = live.batch_pairs(row)
        conf = confidence(weights, live.params)
        ours = fold_in(y[rows], live.item_gram, conf, live.reg)
        matrix = sp.csr_matrix((conf, (np.zeros(len(rows)), rows)), shape=(1, len(y)), dtype=np.float32)
        theirs = model.recalculate_user(0, matrix)
        assert _rel(ours, theirs) <= 1e-4


def test_a_new_user_who_logs_a_warm_users_events_gets_that_users_vector(run: Path, tmp_path: Path) -> None:
    """Through `log`: a new user whose events are exactly a warm user's training log folds in to that user's vector."""
    from socialfeat.live.catalogue import absorbed_version

    assert absorbed_version(run) == 0
    live = Live(CFG, run)
    rec = live.rec
    row = 3
    inter = pq.read_table(run / "dataset" / "interactions.parquet").to_pylist()
    users = pq.read_table(run / "dataset" / "users.parquet").to_pylist()
    uidx = next(u["user_idx"] for u in users if str(u["user_id"]) == str(rec.user_ids[row]))
    items = {r["item_idx"]: str(r["item_id"]) for r in pq.read_table(run / "dataset" / "items.parquet").to_pylist()}
    warm_rows, _ = live.batch_pairs(row)
    warm_ids = {str(rec.item_ids[r]) for r in warm_rows}
    kinds = list(CFG.ingest.event_weights) + ["interaction"]
    rows = []
    for r in inter:
        if r["user_idx"] != uidx or items[r["item_idx"]] not in warm_ids:
            continue
        for kind in kinds:
            for _ in range(int(r.get(f"n_{kind}") or 0)):
                rows.append({"user_id": "clone", "item_id": items[r["item_idx"]], "event": kind})
    assert rows
    table = _write_items(tmp_path / "events.csv", rows)
    logged = log_events(CFG, run, table)
    assert logged.new_users == 1
    clone = Live(CFG, run).user_vector("clone")
    assert np.linalg.norm(clone - rec.users[row]) / np.linalg.norm(rec.users[row]) <= 1e-3


# ----------------------------------------------------------------------------------------------- behaviour
def test_adding_is_idempotent_by_id_and_refuses_other_bytes_without_replace(run: Path, tmp_path: Path) -> None:
    test = _test_items(run)
    items = _items(run)
    root = _image_root(run)
    table = _write_items(tmp_path / "a.csv", [{"item_id": "fresh", "image": items[test[0]]["image"]}])
    assert add_items(CFG, run, table, root)[0].status == "added"
    version = LiveStore(run).version()
    assert add_items(CFG, run, table, root)[0].status == "unchanged"
    assert LiveStore(run).version() == version  # a no-op writes nothing
    other = _write_items(tmp_path / "b.csv", [{"item_id": "fresh", "image": items[test[1]]["image"]}])
    with pytest.raises(UserError, match="other image bytes; give --replace"):
        add_items(CFG, run, other, root)
    assert add_items(CFG, run, other, root, replace=True)[0].status == "replaced"
    batch = _write_items(tmp_path / "c.csv", [{"item_id": test[0], "image": items[test[0]]["image"]}])
    with pytest.raises(UserError, match="in the batch catalogue already"):
        add_items(CFG, run, batch, root)


def test_a_bad_image_among_good_ones_adds_nothing(run: Path, tmp_path: Path) -> None:
    test = _test_items(run)
    items = _items(run)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy(_image_root(run) / items[test[0]]["image"], tmp_path / "good.png")
    table = _write_items(
        tmp_path / "items.csv", [{"item_id": "good", "image": "good.png"}, {"item_id": "bad", "image": "broken.jpg"}]
    )
    with pytest.raises(UserError, match=r"row 2: cannot use this image"):
        add_items(CFG, run, table)
    assert LiveStore(run).counts()["items"] == 0


def test_an_image_outside_the_root_is_refused(run: Path, tmp_path: Path) -> None:
    table = _write_items(tmp_path / "items.csv", [{"item_id": "x", "image": "../../etc/passwd"}])
    with pytest.raises(UserError, match="leads outside the image root"):
        add_items(CFG, run, table)


def test_added_items_are_searchable_and_removed_ones_are_not(run: Path, tmp_path: Path) -> None:
    test = _test_items(run)
    live = Live(CFG, run)
    live.add(_as_new(run, test[:2]), _image_root(run), where="t")
    found = similar(CFG, run, item_id=test[0], k=5)
    assert found[0]["item_id"] == "new-" + test[0] and found[0]["live"]  # the same image: cosine 1
    assert similar(CFG, run, item_id="new-" + test[0], k=3)[0]["item_id"] == test[0]
    remove_items(CFG, run, ["new-" + test[0], test[1]])
    ids = [r["item_id"] for r in similar(CFG, run, item_id=test[0], k=50)]
    assert "new-" + test[0] not in ids and test[1] not in ids
    with pytest.raises(UserError, match="already removed"):
        remove_items(CFG, run, [test[1]])
    with pytest.raises(UserError, match="unknown item"):
        remove_items(CFG, run, ["never-there"])


def test_events_change_a_users_recommendations_at_once(run: Path, tmp_path: Path) -> None:
    test = _test_items(run)
    live = Live(CFG, run)
    live.add(_as_new(run, test[:3]), _image_root(run), where="t")
    user = str(live.rec.user_ids[0])
    before = for_user(CFG, run, user, k=2000)
    assert any(r["item_id"] == "new-" + test[0] for r in before)  # live items are offered
    live.log([NewEvent(user, "new-" + test[0], "like", row=1)])
    after = for_user(CFG, run, user, k=2000)
    assert all(r["item_id"] != "new-" + test[0] for r in after)  # seen now
    assert not np.allclose(Live(CFG, run).user_vector(user), live.rec.users[0])
    seen = for_user(CFG, run, user, k=2000, include_seen=True)
    assert any(r["item_id"] == "new-" + test[0] and r["seen"] for r in seen)


def test_an_added_item_warms_up_after_enough_events(run: Path) -> None:
    test = _test_items(run)
    cfg = load_config(None, ["live.warm_after=3"])
    live = Live(cfg, run)
    live.add(_as_new(run, test[:1]), _image_root(run), where="t")
    item = "new-" + test[0]
    predicted = live.item_vector(item).copy()
    users = [str(u) for u in live.rec.user_ids[:3]]
    logged = live.log([NewEvent(u, item, "like", row=n) for n, u in enumerate(users[:2], 1)])
    assert logged.warm_items == [] and np.array_equal(live.item_vector(item), predicted)
    logged = live.log([NewEvent(users[2], item, "like", row=1)])
    assert logged.warm_items == [item]
    folded = live.item_vector(item)
    assert not np.allclose(folded, predicted)
    everyone = [str(u) for u in live.rec.user_ids]

    def mean_rank(v: np.ndarray) -> float:
        ranked = [u["user_id"] for u in live.audience(v, len(everyone))]
        return float(np.mean([ranked.index(u) for u in users]))

    assert mean_rank(folded) < mean_rank(predicted)  # the users who engaged moved up its audience


def test_a_new_users_first_event_gives_a_vector(run: Path) -> None:
    live = Live(CFG, run)
    item = str(live.rec.item_ids[0])
    with pytest.raises(UserError, match="unknown user"):
        live.rank("stranger", 5)
    live.log([NewEvent("stranger", item, "view", row=1)])
    assert Live(CFG, run).rank("stranger", 5)
    assert any(u["user_id"] == "stranger" for u in Live(CFG, run).audience(live.item_vector(item), 10_000))


def test_events_on_unknown_or_removed_items_are_refused_and_nothing_is_logged(run: Path) -> None:
    live = Live(CFG, run)
    item = str(live.rec.item_ids[0])
    with pytest.raises(UserError, match="row 2: item 'nope': unknown item"):
        live.log([NewEvent("a", item, "view", row=1), NewEvent("a", "nope", "view", row=2)])
    live.remove([item])
    with pytest.raises(UserError, match="removed"):
        live.log([NewEvent("a", item, "view", row=1)])
    assert LiveStore(run).counts()["events"] == 0


def test_two_live_objects_see_each_others_writes(run: Path) -> None:
    """A server's Live and a `socialfeat add` process's: sync picks up the other's commits."""
    test = _test_items(run)
    server = Live(CFG, run)
    other = Live(CFG, run)
    other.add(_as_new(run, test[:1]), _image_root(run), where="t")
    assert "new-" + test[0] not in server.items
    assert server.sync() and "new-" + test[0] in server.items
    assert not server.sync()  # nothing new: a version check, no replay


def test_the_report_counts_the_live_state(run: Path) -> None:
    from socialfeat.report.report import _glance

    assert "live" not in _glance(run)["facts"]
    test = _test_items(run)
    live = Live(CFG, run)
    live.add(_as_new(run, test[:2]), _image_root(run), where="t")
    live.remove([test[2]])
    live.log([NewEvent("someone", "new-" + test[0], "like", row=1)])
    line = _glance(run)["facts"]["live"]
    assert line.startswith("2 items added, 1 removed and 1 events from 1 users")
