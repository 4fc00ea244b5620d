"""The content model: one ridge map per source (checked against the closed form), late fusion with weights on
valid, a missing source scored from the others, unseen tags counted and ignored, and the recommend flags."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok
from environment import need_module

from socialfeat.config import load_config
from socialfeat.content import ContentModel, content, fuse, numeric_rows, numeric_stats, year_from_title
from socialfeat.data.tags import multi_hot
from socialfeat.features import read_features
from socialfeat.measures.coldstart import load_coldstart
from socialfeat.measures.metrics import standardizer

need_module("sentence_transformers", "the text extra is not installed")

SOURCES = "content.sources=[learned,imagenet,text,tags]"


@pytest.fixture(scope="module")
def run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    dest = tmp_path_factory.mktemp("content") / "run"
    shutil.copytree(embedded_run, dest, ignore=shutil.ignore_patterns("export"))
    metrics = content(load_config(None, [SOURCES, "content.fusion_step=0.25"]), dest).metrics
    return dest, metrics


def test_every_source_alone_every_pair_and_the_full_models_are_scored(run: tuple[Path, dict]) -> None:
    path, m = run
    combos = [tuple(r["sources"]) for r in m["rows"] if r["model"] != "joint"]
    singles = [c for c in combos if len(c) == 1]
    pairs = [c for c in combos if len(c) == 2]
    assert sorted(s[0] for s in singles) == ["imagenet", "learned", "tags", "text"]
    assert len(pairs) == 6
    assert ("learned", "text", "tags") in combos and ("imagenet", "text", "tags") in combos
    joint = [tuple(r["sources"]) for r in m["rows"] if r["model"] == "joint"]
    assert sorted(joint) == [("imagenet", "text", "tags"), ("learned", "text", "tags"), ("text", "tags")]  # models
    assert [w["withheld"] for w in m["withheld"]] == m["model"]["sources"]  # each of the model's sources withheld
    single_valid = {r["sources"][0]: r["valid_auc"] for r in m["rows"] if len(r["sources"]) == 1}
    for r in m["rows"]:
        assert 0.0 <= r["auc"] <= 1.0
        if r["model"] == "late fusion":  # forward selection starts from the best block: never below it on valid
            assert abs(sum(r["weights"].values()) - 1) < 1e-6
            assert r["valid_auc"] >= max(single_valid[s] for s in r["sources"]) - 1e-9
        if r["model"] == "joint":
            assert set(r["lambdas"]) == set(r["sources"]) and r["dropout"] in (0.0, 0.25, 0.5)
            assert set(r["shares"]) == set(r["sources"]) and sum(r["shares"].values()) == pytest.approx(1.0)
    full = [r for r in m["rows"] if r["sources"] == ["learned", "text", "tags"]]
    best = max(full, key=lambda r: r["valid_auc"])  # the fitted model is the full variant better on valid
    assert m["model"]["kind"] == ("joint" if best["model"] == "joint" else "fusion")
    for source in ("text", "tags"):  # item sources are feature sources like the image ones
        assert (path / "features" / f"{source}.parquet").is_file()
    assert (path / "content" / "model.safetensors").is_file() and not list((path / "content").glob("*.pkl"))


def test_each_block_is_the_closed_form_ridge(run: tuple[Path, dict]) -> None:
    path, m = run
    data = load_coldstart(path)
    t = pq.read_table(path / "features" / "tags.parquet")
    row = {i: r for r, i in enumerate(data.item_ids)}
    x = np.zeros((data.n_items, t.column("features").type.list_size))
    has = np.zeros(data.n_items, dtype=bool)
    for item, v in zip(t.column("item_id").to_pylist(), t.column("features").to_pylist(), strict=True):
        x[row[item]], has[row[item]] = v, True
    fit = data.train[has[data.train]]
    lam = m["fits"]["tags"]["lambda"]
    mean_x, std_x = standardizer(x[fit])
    z = (x[fit] - mean_x) / std_x
    y = data.item_factors[has[data.train]]
    w = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ (y - y.mean(axis=0)))
    saved = ContentModel(path).maps["tags"]
    assert saved.weight == pytest.approx(w.astype(np.float32), abs=1e-4)
    assert saved.predict(x[:3]) == pytest.approx((((x[:3] - mean_x) / std_x) @ w + y.mean(axis=0)), abs=1e-4)


def test_a_missing_source_is_scored_from_the_others() -> None:
    predictions = {"a": np.array([[1.0, 0.0], [3.0, 3.0]]), "b": np.array([[0.0, 1.0], [5.0, 5.0]])}
    has = {"a": np.array([True, False]), "b": np.array([True, True])}
    fused = fuse(predictions, has, {"a": 0.75, "b": 0.25})
    assert fused[0] == pytest.approx([0.75, 0.25])
    assert fused[1] == pytest.approx([5.0, 5.0])  # no "a": all from "b", not pulled toward a mean


def test_prediction_with_fewer_sources_renormalises(run: tuple[Path, dict]) -> None:
    path, _ = run
    model = ContentModel(path)
    image = model.image_source
    features = np.ones(model.maps[image].mean_x.shape, np.float32) if image else None
    blocks, notes = model.blocks_for(features, "Vivid mood", None, ["mono", "thirds"])
    assert not notes
    full = model.predict(blocks)
    present = {b: w for b, w in model.weights.items() if b in blocks}
    if model.joint is not None:  # the joint map: each given block's term; one source missing: its fallback

        def expected(given: list[str]) -> np.ndarray:
            missing = [b for b in model.joint.blocks if b not in given]
            m = model.joint.fallbacks[missing[0]] if len(missing) == 1 else model.joint
            z = {b: (blocks[b] - m.mean_x[b]) / m.std_x[b] for b in given}
            return m.mean_v + sum(z[b] @ m.weight[b] for b in given if b in m.blocks)

        assert full == pytest.approx(expected(list(present)), abs=1e-4)
        assert set(model.joint.fallbacks) == set(model.joint.blocks)
        for given in ([next(iter(present))], list(present)[1:]):
            assert model.predict({b: blocks[b] for b in given}) == pytest.approx(expected(given), abs=1e-4)
        return
    expected = sum(w / sum(present.values()) * model.maps[b].predict(blocks[b][None])[0] for b, w in present.items())
    assert full == pytest.approx(expected, abs=1e-5)
    if len(present) > 1:
        only = next(iter(present))
        assert model.predict({only: blocks[only]}) == pytest.approx(
            model.maps[only].predict(blocks[only][None])[0], abs=1e-5
        )


def test_unseen_tags_are_counted_and_ignored(run: tuple[Path, dict]) -> None:
    rows, unseen = multi_hot([["a", "zzz"], ["b"]], ["a", "b"])
    assert unseen == 1 and rows.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    model = ContentModel(run[0])
    _, notes = model.blocks_for(None, None, None, ["mono", "never-seen-tag"])
    assert notes == ["1 of 2 tags are not in the run's vocabulary; ignored"]
    blocks, _ = model.blocks_for(None, None, None, ["never-seen-tag"])
    assert "tags" not in blocks


def test_year_from_a_title_and_numeric_bins() -> None:
    assert year_from_title("Toy Story (1995)") == 1995.0 and year_from_title("Heat") is None
    values = {"year": [1995.0, 1971.0, None, 1999.0]}
    stats = numeric_stats(values, np.array([0, 1, 3]))
    rows, has = numeric_rows(values, stats)
    assert has.tolist() == [True, True, False, True]
    assert rows[2].tolist() == [0.0] * rows.shape[1]  # missing: nothing, and the row says so
    assert rows[0, 1:].sum() == 1 and rows[0, 1:].argmax() != rows[1, 1:].argmax()  # 1990s vs 1970s


def test_recommend_with_title_and_tags(run: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = run
    root = Path(json.loads((path / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    image = root / pq.read_table(path / "dataset" / "items.parquet", columns=["image"]).column("image")[0].as_py()
    ok(["recommend", str(path), "--image", str(image), "--title", "Vivid mood", "--tags", "mono,thirds", "--k", "3"])
    printed = capsys.readouterr().out
    assert "audience of" in printed and "similar items" in printed
    ok(["recommend", str(path), "--title", "Quiet form", "--tags", "mono", "--k", "3"])  # no image: from the rest
    printed = capsys.readouterr().out.replace("\n", " ")
    model = ContentModel(path)
    if model.image_source:
        assert f"not given: {model.image_source}" in printed
    if "text" not in model.weights:  # a title alone cannot score a model that does not read text
        assert "none of the model's sources" in fails(["recommend", str(path), "--title", "Quiet form"], capsys)
    assert "--title: empty title" in fails(["recommend", str(path), "--title", " "], capsys)
    assert "--tags: no tags given" in fails(["recommend", str(path), "--image", str(image), "--tags", ","], capsys)
    assert "not both" in fails(["recommend", str(path), "--title", "x", "--user", "u0001"], capsys)


def test_a_run_without_a_content_model_says_how_to_make_one(
    embedded_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = fails(["recommend", str(embedded_run), "--title", "Quiet form"], capsys)
    assert "no content model; run `socialfeat content" in line


def test_the_lightfm_row_is_there_or_says_why(run: tuple[Path, dict]) -> None:
    peer = run[1]["peer"]
    assert peer is not None and peer["name"].startswith("LightFM")
    try:
        import lightfm  # noqa: F401
    except ImportError:
        assert "not installed" in peer["skipped"]
    else:
        assert 0.0 <= peer["auc"] <= 1.0


def test_the_joint_ridge_is_the_expected_loss_over_source_dropout() -> None:
    """Marginalised source dropout in closed form = ridge on every mask pattern of the blocks, each copy of the data
    weighted by its probability (each block kept with probability 1 − p), with a λ per block."""
    from types import SimpleNamespace

    from socialfeat.content import Block, JointFitter

    rng = np.random.default_rng(0)
    n, f = 40, 3
    a, b = rng.normal(size=(n, 4)), rng.normal(size=(n, 2))
    y = a @ rng.normal(size=(4, f)) + b @ rng.normal(size=(2, f)) + 0.1 * rng.normal(size=(n, f))
    data = SimpleNamespace(train=np.arange(30), item_factors=y[:30], n_items=n)
    has = np.ones(n, dtype=bool)
    fitter = JointFitter([Block("a", a, has, {}), Block("b", b, has, {}), Block("c", b[:, :1], has, {})], data)
    p, lams = 0.25, {"a": 2.0, "b": 7.0}
    m = fitter.fit(["a", "b"], lams, p)

    def z(name: str, x: np.ndarray) -> np.ndarray:  # the fitter keeps no standardised rows: its mean and std
        return (x - fitter.mean_x[name]) / fitter.std_x[name]

    za, zb = z("a", a[:30]), z("b", b[:30])
    yc = y[:30] - y[:30].mean(axis=0)
    rows, targets = [], []
    for keep_a in (0, 1):
        for keep_b in (0, 1):
            prob = ((1 - p) if keep_a else p) * ((1 - p) if keep_b else p)
            rows.append(np.sqrt(prob) * np.hstack([keep_a * za, keep_b * zb]))
            targets.append(np.sqrt(prob) * yc)
    x, t = np.vstack(rows), np.vstack(targets)
    penalty = np.diag([lams["a"]] * 4 + [lams["b"]] * 2)
    w = np.linalg.solve(x.T @ x + penalty, x.T @ t)
    assert np.hstack([m.weight["a"].T, m.weight["b"].T]).T == pytest.approx(w, abs=1e-9)
    # without fallbacks a source missing at prediction adds nothing; the rest is the same map
    full = m.predict({"a": a[:5], "b": b[:5]})
    only_a = m.predict({"a": a[:5]})
    assert only_a == pytest.approx(full - (z("b", b[:5]) @ m.weight["b"]).astype(np.float32), abs=1e-5)
    assert m.predict({"a": a[:5]}, {"a": np.zeros(5, dtype=bool)}) == pytest.approx(np.tile(m.mean_v, (5, 1)))
    # with them, an item missing one source is scored by the map fit on the others alone
    fitter.with_fallbacks(m)
    alone = fitter.fit(["a"], {"a": 2.0}, p)
    assert m.predict({"a": a[:5]}) == pytest.approx(alone.predict({"a": a[:5]}), abs=1e-6)
    has_b = np.array([True, False, True, True, False])
    mixed = m.predict({"a": a[:5], "b": b[:5]}, {"b": has_b})
    assert mixed[has_b] == pytest.approx(full[has_b], abs=1e-6)  # items with both: the full map
    assert mixed[~has_b] == pytest.approx(alone.predict({"a": a[:5]})[~has_b], abs=1e-6)
    three = fitter.with_fallbacks(fitter.fit(["a", "b", "c"], lams | {"c": 1.0}, p))
    assert (
        three.predict({"c": b[:5, :1]})
        == pytest.approx(  # two missing: no fallback, the main map's term
            three.mean_v + z("c", b[:5, :1]) @ three.weight["c"], abs=1e-5
        )
    )


def test_every_items_predicted_factors_are_written(run: tuple[Path, dict]) -> None:
    path, m = run
    t = pq.read_table(path / "content" / "item_factors.parquet")
    data = load_coldstart(path)
    assert t.column("item_id").to_pylist() == data.item_ids
    factors = np.array(t.column("factors").to_pylist(), dtype=np.float32)
    model = ContentModel(path)
    test_item = int(data.test[0])
    sources = t.column("sources")[test_item].as_py()
    assert set(sources) <= set(m["model"]["sources"]) and sources
    blocks = {}
    for source in sources:
        ids, matrix = read_features(path, source)
        blocks[source] = matrix[ids.index(data.item_ids[test_item])]
    assert model.predict(blocks) == pytest.approx(factors[test_item], abs=1e-4)  # the CLI's path = the stage's


def test_recommend_user_ranks_cold_items_by_the_content_model(run: tuple[Path, dict]) -> None:
    from socialfeat.recommend import for_user

    path, _ = run
    t = pq.read_table(path / "content" / "item_factors.parquet")
    predicted = dict(zip(t.column("item_id").to_pylist(), t.column("factors").to_pylist(), strict=True))
    uf = pq.read_table(path / "factors" / "user_factors.parquet")
    user = uf.column("user_id")[3].as_py()
    u = np.asarray(uf.column("factors")[3].as_py())
    rows = for_user(load_config(), path, user, k=1000, include_seen=True)
    cold = [r for r in rows if not r["warm"]]
    assert cold and all(r["predicted_by"] == "content" for r in cold)
    for r in cold:
        assert r["score"] == pytest.approx(float(u @ np.asarray(predicted[r["item_id"]])), abs=1e-4)
    # a content model older than the image features it was fit on is not trusted: back to the factors head
    features = path / "features" / "learned.parquet"
    stamp = (path / "content" / "item_factors.parquet").stat().st_mtime
    was = features.stat().st_mtime_ns
    os.utime(features, (stamp + 10, stamp + 10))
    try:
        assert all(r["predicted_by"] == "image" for r in for_user(load_config(), path, user, k=50) if not r["warm"])
    finally:
        os.utime(features, ns=(was, was))  # as embedded: not older than the model (the other tests share this run)


def test_without_the_text_extra_the_text_source_is_skipped_with_a_note(
    embedded_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socialfeat.models.text as text_module
    from socialfeat.errors import UserError

    def missing(*_a: object, **_k: object) -> None:
        raise UserError("text model", text_module.TEXT_EXTRA)

    monkeypatch.setattr(text_module, "embed_texts", missing)
    dest = tmp_path / "run"
    shutil.copytree(embedded_run, dest, ignore=shutil.ignore_patterns("export", "content"))
    cfg = load_config(None, ["content.sources=[learned,text,tags]", "content.lightfm=false", "content.joint=false"])
    m = content(cfg, dest).metrics
    assert any(n.startswith("text: needs the text extra") and n.endswith("skipped") for n in m["notes"])
    assert {s for r in m["rows"] for s in r["sources"]} == {"learned", "tags"}


def test_the_content_command_prints_every_row_and_the_model(
    run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "run"
    shutil.copytree(run[0], dest)
    ok(["content", str(dest), "--sources", "learned,text,tags", "--set", "content.fusion_step=0.25",
        "--set", "content.lightfm=false"])  # fmt: skip
    printed = capsys.readouterr().out.replace("\n", " ")
    m = json.loads((dest / "content" / "metrics.json").read_text())
    assert "hybrid cold start on" in printed and "joint" in printed  # late fusion and joint rows in one table
    assert f"{m['rows'][0]['auc']:.3f}" in printed
    kind = "joint ridge over" if m["model"]["kind"] == "joint" else "late fusion:"
    assert f"wrote {dest / 'content'} (model: {kind}" in printed


def test_rows_are_on_evaluates_user_sample_with_intervals_and_the_headline_differences(run: tuple[Path, dict]) -> None:
    path, m = run
    sample, cfg = m["sample"], load_config(None, [])
    assert sample["users"] == min(cfg.evaluate.users or sample["of"], sample["of"]) and sample["seed"] == cfg.seed
    assert m["bootstrap"]["resamples"] == cfg.evaluate.bootstrap and m["bootstrap"]["paired"]
    for r in m["rows"]:  # every row on the same users, with its interval around its AUC
        assert r["users"] == sample["users"]
        lo, hi = r["auc_ci"]
        assert lo <= r["auc"] <= hi
    labels = [d["label"] for d in m["differences"]]
    assert labels[:2] == ["full model − best without the image", "learned − ImageNet (full models)"]
    for d in m["differences"]:
        assert d["contains_zero"] == (d["ci"][0] <= 0 <= d["ci"][1])
    chosen = " + ".join(m["model"]["sources"])
    assert m["differences"][0]["a"].startswith(chosen)
