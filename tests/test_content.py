"""The content model: one ridge map per source (checked against the closed form), late fusion with weights on
valid, a missing source scored from the others, unseen tags counted and ignored, and the recommend flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok

from socialfeat.config import load_config
from socialfeat.content import ContentModel, content, fuse, numeric_rows, numeric_stats, year_from_title
from socialfeat.data.tags import multi_hot
from socialfeat.evaluate.coldstart import load_coldstart
from socialfeat.evaluate.metrics import standardizer

pytest.importorskip("sentence_transformers", reason="the text extra is not installed")

SOURCES = "content.sources=[learned,imagenet,text,tags]"


@pytest.fixture(scope="module")
def run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    dest = tmp_path_factory.mktemp("content") / "run"
    shutil.copytree(embedded_run, dest, ignore=shutil.ignore_patterns("export"))
    metrics = content(load_config(None, [SOURCES, "content.fusion_step=0.25"]), dest).metrics
    return dest, metrics


def test_every_source_alone_every_pair_and_the_full_models_are_scored(run: tuple[Path, dict]) -> None:
    path, m = run
    combos = [tuple(r["sources"]) for r in m["rows"]]
    singles = [c for c in combos if len(c) == 1]
    pairs = [c for c in combos if len(c) == 2]
    assert sorted(s[0] for s in singles) == ["imagenet", "learned", "tags", "text"]
    assert len(pairs) == 6
    assert ("learned", "text", "tags") in combos and ("imagenet", "text", "tags") in combos
    for r in m["rows"]:
        assert 0.0 <= r["auc"] <= 1.0 and abs(sum(r["weights"].values()) - 1) < 1e-6
        assert (
            r["valid_auc"]
            >= max(x["valid_auc"] for x in m["rows"] if tuple(x["sources"]) in [(s,) for s in r["sources"]]) - 1e-9
        )
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
