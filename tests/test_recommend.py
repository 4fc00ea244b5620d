"""recommend: the audience of a new image (users by u·v̂) and the items for a known user (warm items by their true
factors, cold ones by predicted factors), each against a plain numpy reference; seen items; user errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok
from run_edits import rewrite_table

from socialfeat.config import load_config
from socialfeat.features import read_features
from socialfeat.recommend import audience, for_user, top_k


@pytest.fixture(scope="module")
def run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("recommend") / "run"
    shutil.copytree(embedded_run, dest)
    return dest


def table(path: Path) -> dict[str, list]:
    return pq.read_table(path).to_pydict()


def image_of(run: Path, item_id: str) -> Path:
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    items = table(run / "dataset" / "items.parquet")
    return root / items["image"][items["item_id"].index(item_id)]


def seen_by(run: Path, user_id: str) -> set:
    """Reference: the items a user interacted with, joined by hand through the dataset's index tables."""
    users, items = table(run / "dataset" / "users.parquet"), table(run / "dataset" / "items.parquet")
    inter = table(run / "dataset" / "interactions.parquet")
    u = users["user_idx"][users["user_id"].index(user_id)]
    item_of = dict(zip(items["item_idx"], items["item_id"], strict=True))
    return {item_of[i] for uu, i in zip(inter["user_idx"], inter["item_idx"], strict=True) if uu == u}


def test_top_k_orders_best_first_and_keeps_ties_stable() -> None:
    scores = np.array([0.5, 2.0, 2.0, -1.0, 3.0, 2.0])
    assert top_k(scores, 3).tolist() == [4, 1, 2]
    assert top_k(scores, 10).tolist() == [4, 1, 2, 5, 0, 3]
    assert top_k(scores, 0).tolist() == []


def test_audience_ranks_users_by_predicted_factors(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An item's own image through the model predicts exactly its head_factors row: the users must be ranked by
    u·that vector, scores included."""
    item = "i00012"
    result = audience(load_config(), run, image_of(run, item), k=15)
    ids, predicted = read_features(run, "learned", "head_factors")
    v = predicted[ids.index(item)]
    np.testing.assert_allclose(result.factors, v, rtol=1e-4, atol=1e-5)
    uf = table(run / "factors" / "user_factors.parquet")
    scores = np.asarray(uf["factors"], dtype=np.float64) @ v
    order = np.argsort(-scores, kind="stable")[:15]
    assert [r["user_id"] for r in result.users] == [uf["user_id"][i] for i in order]
    np.testing.assert_allclose([r["score"] for r in result.users], scores[order], rtol=1e-4, atol=1e-4)
    assert [r["rank"] for r in result.users] == list(range(1, 16))
    assert result.similar[0]["item_id"] == item and len(result.similar) == 15

    ok(["recommend", str(run), "--image", str(image_of(run, item)), "--k", "3"])
    printed = capsys.readouterr().out
    assert "audience" in printed and "similar items" in printed
    assert all(uf["user_id"][i] in printed for i in order[:3]) and uf["user_id"][order[3]] not in printed


def reference_scores(run: Path, user_id: str) -> tuple[dict, set]:
    """Reference: u·v for every item, true factors for warm items, head_factors for the others."""
    uf = table(run / "factors" / "user_factors.parquet")
    u = np.asarray(uf["factors"][uf["user_id"].index(user_id)], dtype=np.float64)
    warm = table(run / "factors" / "item_factors.parquet")
    scores = {i: float(np.dot(u, f)) for i, f in zip(warm["item_id"], warm["factors"], strict=True)}
    ids, predicted = read_features(run, "learned", "head_factors")
    cold = {i: float(np.dot(u, p)) for i, p in zip(ids, predicted.astype(np.float64), strict=True) if i not in scores}
    return scores | cold, set(cold)


def test_for_user_ranks_warm_and_cold_items_by_u_dot_v(run: Path) -> None:
    user = "u0005"
    reference, cold = reference_scores(run, user)
    split = table(run / "factors" / "item_split.parquet")
    assert cold == {i for i, s in zip(split["item_id"], split["split"], strict=True) if s != "train"}
    rows = for_user(load_config(), run, user, k=1000, include_seen=True)
    assert len(rows) == 400 and {r["item_id"] for r in rows} == set(reference)
    assert [r["rank"] for r in rows] == list(range(1, 401))
    scores = np.array([r["score"] for r in rows])
    assert np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores, [reference[r["item_id"]] for r in rows], rtol=1e-4, atol=1e-4)
    for r in rows:
        assert r["warm"] == (r["item_id"] not in cold)
        assert r["factors"] == ("predicted" if r["item_id"] in cold else "true")
        assert (r["split"] == "train") == r["warm"]
    warm_rows = [r["item_id"] for r in rows if r["warm"]]
    assert warm_rows == sorted((i for i in reference if i not in cold), key=lambda i: -reference[i])

    top = for_user(load_config(), run, user, k=10)
    seen = seen_by(run, user)
    unseen = sorted((i for i in reference if i not in seen), key=lambda i: -reference[i])
    assert [r["item_id"] for r in top] == unseen[:10]
    assert not any(r["seen"] for r in top)
    everything = for_user(load_config(), run, user, k=1000)
    assert len(everything) == 400 - len(seen) and not seen & {r["item_id"] for r in everything}


def test_recommend_user_command(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference, cold = reference_scores(run, "u0007")
    seen = seen_by(run, "u0007")
    ok(["recommend", str(run), "--user", "u0007", "--k", "5"])
    printed = capsys.readouterr().out
    best = sorted((i for i in reference if i not in seen), key=lambda i: -reference[i])
    assert all(i in printed for i in best[:5]) and best[5] not in printed
    assert ("predicted" in printed) == any(i in cold for i in best[:5])
    ok(["recommend", str(run), "--user", "u0007", "--k", "5", "--include-seen"])
    with_seen, printed = sorted(reference, key=lambda i: -reference[i]), capsys.readouterr().out
    assert all(i in printed for i in with_seen[:5]) and "(seen included)" in printed


def test_user_errors_are_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "nobody" in fails(["recommend", str(run), "--user", "nobody"], capsys)
    assert "exactly one" in fails(["recommend", str(run)], capsys)
    image = image_of(run, "i00001")
    assert "exactly one" in fails(["recommend", str(run), "--user", "u0001", "--image", str(image)], capsys)
    text = tmp_path / "x.jpg"
    text.write_text("not a picture")
    assert str(text) in fails(["recommend", str(run), "--image", str(text)], capsys)

    bare = shutil.copytree(run, tmp_path / "bare", ignore=shutil.ignore_patterns("learned.*", "user_factors.parquet"))
    assert f"socialfeat factorize {bare}" in fails(["recommend", str(bare), "--user", "u0001"], capsys)
    shutil.copy2(run / "factors" / "user_factors.parquet", bare / "factors")  # as it was: not newer than targets/
    assert f"socialfeat embed {bare} --source learned" in fails(["recommend", str(bare), "--user", "u0001"], capsys)
    assert "socialfeat embed" in fails(["recommend", str(bare), "--image", str(image)], capsys)
    # features from a model without a factors head: cold items cannot be scored
    features = pq.read_table(run / "features" / "learned.parquet").drop_columns(["head_factors"])
    pq.write_table(features, bare / "features" / "learned.parquet")
    assert "factors" in fails(["recommend", str(bare), "--user", "u0001"], capsys)


def test_audience_needs_a_factors_head(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socialfeat.recommend as recommend
    from socialfeat.errors import UserError

    monkeypatch.setattr(recommend, "image_outputs", lambda *a, **k: {"features": np.zeros(64, np.float32)})
    with pytest.raises(UserError, match="no 'factors' head"):
        audience(load_config(), run, image_of(run, "i00001"))


def test_an_engaged_item_is_never_offered(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For every user: no item the dataset says they engaged with, and only that user's rows of the log are read."""
    import socialfeat.recommend as recommend

    reads: list[tuple[str, object]] = []
    real = recommend.pq.read_table

    def spy(path: object, *args: object, **kwargs: object) -> object:
        reads.append((Path(str(path)).name, kwargs.get("filters")))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(recommend.pq, "read_table", spy)
    rec = recommend.Recommender(run)
    users = table(run / "dataset" / "users.parquet")["user_id"]
    for user in users[:60]:
        reads.clear()
        offered = {r["item_id"] for r in rec.rank(user, 1000)}
        seen = {rec.item_ids[r] for r in rec.seen(rec.user_row(user))}
        log_reads = [f for name, f in reads if name == "interactions.parquet"]
        assert len(log_reads) == 2 and all(f and f[0][0] == "user_idx" for f in log_reads)  # filtered, never all
        assert offered and not offered & seen_by(run, user), user
        assert seen == seen_by(run, user)


def test_an_item_the_dataset_no_longer_holds_is_never_offered(run: Path, tmp_path: Path) -> None:
    """Factors (and features) that hold an item the current dataset does not: it is not offered, seen or not."""
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    items = pq.read_table(copy / "dataset" / "items.parquet")
    gone = items.column("item_id")[0].as_py()
    path = copy / "dataset" / "items.parquet"
    rewrite_table(path, items.slice(1))  # as old as before: the factors stay current
    rows = for_user(load_config(), copy, "u0005", k=1000, include_seen=True)
    assert len(rows) == 399 and gone not in {r["item_id"] for r in rows}


def test_recommend_without_a_dataset_names_a_safe_ingest(run: Path, tmp_path: Path, capsys: Any) -> None:
    """The hint names ``--out RUN/dataset``: ``--out RUN`` would replace the whole run."""
    bare = shutil.copytree(run, tmp_path / "bare", ignore=shutil.ignore_patterns("dataset"))
    line = fails(["recommend", str(bare), "--user", "u0001"], capsys)
    assert f"--out {bare / 'dataset'}" in line and not re.search(rf"--out {re.escape(str(bare))}(\s|$)", line)


@pytest.mark.parametrize("command", ["recommend", "similar"])
def test_the_image_is_decoded_before_any_export_is_built(
    run: Path, tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import socialfeat.index as index

    calls: list[str] = []
    real = index.encoder_for

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(command)
        return real(*args, **kwargs)

    monkeypatch.setattr(index, "encoder_for", spy)
    broken = tmp_path / "broken.png"
    broken.write_bytes(image_of(run, "i00001").read_bytes()[:60])  # a PNG header, then nothing
    assert str(broken) in fails([command, str(run), "--image", str(broken)], capsys)
    assert calls == []  # refused before the export (or the model) was even looked at
    ok([command, str(run), "--image", str(image_of(run, "i00001")), "--k", "2"])
    assert calls == [command]
