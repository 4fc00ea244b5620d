"""targets: normalized factors, k-means pseudo-classes on factors, and clusters described in words."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.factorize.stage import factorize
from socialfeat.targets.collaborative import kmeans, normalize_factors
from socialfeat.targets.describe import distinctive_words, tokens
from socialfeat.targets.stage import targets


def test_normalize_factors() -> None:
    x = np.random.default_rng(0).normal(2, 3, (50, 4))
    assert np.allclose(np.linalg.norm(normalize_factors(x, "l2"), axis=1), 1, atol=1e-5)
    s = normalize_factors(x, "standardize")
    assert np.allclose(s.mean(0), 0, atol=1e-5) and np.allclose(s.std(0), 1, atol=1e-4)
    assert np.allclose(normalize_factors(x, "none"), x.astype(np.float32))


def test_kmeans_recovers_separated_groups() -> None:
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(3), 60)
    centres = np.eye(3, 8) * 10
    x = centres[truth] + rng.normal(0, 0.5, (180, 8))
    labels, centroids = kmeans(x, 3, 20, seed=0, spherical=False)
    assert centroids.shape == (3, 8)
    for g in range(3):  # each true group lands in a single cluster, and different groups in different ones
        assert len(set(labels[truth == g])) == 1
    assert len(set(labels)) == 3
    with pytest.raises(UserError, match="5 clusters need at least 5 items"):
        kmeans(x[:4], 5, 5, seed=0, spherical=False)


def test_distinctive_words_contrast_against_the_corpus() -> None:
    words = [{"sunset", "nice", "glow"}] * 20 + [{"icy", "nice"}] * 20 + [{"rare"}]
    labels = np.array([0] * 20 + [1] * 20 + [0])
    result = distinctive_words(words, labels, 2, top=2, min_items=3)
    assert [w["word"] for w in result[0]][:1] in (["sunset"], ["glow"]) and result[1][0]["word"] == "icy"
    assert all(w["word"] not in ("nice", "rare") for group in result for w in group)  # common / too rare
    assert tokens("Animation|Children's|Comedy") == ["animation", "children's", "comedy"]
    assert tokens("I love this, it is GLOWING!") == ["love", "glowing"]


@pytest.fixture(scope="module")
def factorized(demo_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("targets")
    shutil.copytree(demo_dataset / "dataset", run / "dataset")
    factorize(load_config(None, ["factorize.factors=16", "factorize.alpha=1", "factorize.evaluate=false"]), run)
    return run


def test_targets_stage_writes_targets_and_descriptions(factorized: Path, platform: Path) -> None:
    result = targets(load_config(None, ["targets.clusters=6"]), factorized)
    out = factorized / "targets"
    f = pq.read_table(out / "factors.parquet")
    assert f.schema.field("target").type == pa.list_(pa.float32(), 16)
    norms = np.linalg.norm(f.column("target").combine_chunks().flatten().to_numpy().reshape(len(f), 16), axis=1)
    assert np.allclose(norms, 1, atol=1e-5)
    c = pq.read_table(out / "factor_clusters.parquet")
    assert set(c.column("cluster").to_pylist()) == set(range(6))
    described = json.loads((out / "clusters.json").read_text())["factor-clusters"]
    assert len(described) == 6 and all(g["words"] and len(g["items"]) == 5 for g in described)
    assert result.summary["items"] == len(f)
    # the pseudo-classes carry the hidden palette users care about (simulated ground truth), far above chance
    with open(platform / "labels.csv", newline="") as fh:
        palette = {r["item_id"]: r["palette"] for r in csv.DictReader(fh)}
    pal = np.array([palette[i] for i in c.column("item_id").to_pylist()])
    cl = c.column("cluster").to_numpy()

    def purity(labels: np.ndarray) -> float:
        return sum(np.unique(pal[labels == k], return_counts=True)[1].max() for k in np.unique(labels)) / len(pal)

    shuffled = np.random.default_rng(0).permutation(cl)
    assert purity(cl) > purity(shuffled) + 0.1, (purity(cl), purity(shuffled))


def test_targets_errors(tmp_path: Path, factorized: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from socialfeat.cli import main

    for argv, fragment in [
        (["targets", str(tmp_path)], "no factors/item_factors.parquet"),
        (["targets", str(factorized), "--targets", "colours"], "--targets"),
        (["targets", str(factorized), "--clusters", "100000"], "100000 clusters need at least"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and fragment in err[0], err


def test_tag_vocabulary_multi_hot_and_unseen_tags() -> None:
    from socialfeat.data.tags import multi_hot, vocabulary

    warm = [["drama", "war"], ["drama"], ["comedy", "drama"], ["comedy"], ["noir"]]
    vocab = vocabulary(warm, limit=10, min_items=2)
    assert vocab == ["drama", "comedy"]  # by frequency; noir and war label fewer than 2 items
    rows, unseen = multi_hot([["war", "comedy"], ["western"], []], vocab)
    assert rows.tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]] and unseen == 2  # war and western: counted, ignored
    assert vocabulary(warm, limit=1) == ["drama"]


def test_tags_target_is_multi_hot_over_the_warm_items_vocabulary(factorized: Path, tmp_path: Path) -> None:
    from socialfeat.data.tags import item_tags

    run = tmp_path / "run"
    shutil.copytree(factorized, run, ignore=shutil.ignore_patterns("targets"))
    result = targets(load_config(None, ["targets.targets=[factors,tags]", "targets.min_tag_items=3"]), run)
    summary = result.summary["tags"]
    table = pq.read_table(run / "targets" / "tags.parquet")
    col = table.column("target").combine_chunks()
    matrix = col.flatten().to_numpy().reshape(len(table), col.type.list_size)
    assert matrix.shape[1] == summary["k"] == len(summary["vocabulary"]) > 1
    tags = item_tags(run)
    assert tags is not None
    for idx, row in zip(table.column("item_idx").to_pylist()[:50], matrix[:50], strict=True):
        expected = {t for t in tags[idx] if t in summary["vocabulary"]}
        assert {summary["vocabulary"][c] for c in np.flatnonzero(row)} == expected
