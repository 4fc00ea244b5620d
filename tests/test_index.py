"""index / similar: each index kind against exact search on clustered data, staleness, neighbours of known items
and of new images (an item's own image must come back first), hidden attributes of the simulated platform, and
one-line user errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok

from socialfeat.artifacts import fingerprints
from socialfeat.config import load_config
from socialfeat.features import read_features, vectors_column
from socialfeat.index import (
    build_index,
    choose_kind,
    index_path,
    load_index,
    normalize,
    pq_subquantizers,
    search,
    similar,
)


@pytest.fixture(scope="module")
def run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private copy of the embedded run for the tests that only add indexes to it."""
    dest = tmp_path_factory.mktemp("index") / "run"
    shutil.copytree(embedded_run, dest)
    return dest


def image_of(run: Path, item_id: str) -> Path:
    """The image file of an item, resolved as ingest recorded it."""
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    items = pq.read_table(run / "dataset" / "items.parquet", columns=["item_id", "image"]).to_pylist()
    return root / next(r["image"] for r in items if r["item_id"] == item_id)


def exact_top(matrix: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Reference: rows of the k largest cosines, by brute force."""
    x, q = normalize(matrix), normalize(queries)
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


# --------------------------------------------------------------------------------------------- index kinds
@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int], np.ndarray, np.ndarray]:
    """A run with a synthetic feature source: 2,000 points around 20 centres in 32 dimensions, integer ids."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, 32)) * 3
    labels = rng.integers(0, 20, 2000)
    matrix = (centres[labels] + rng.standard_normal((2000, 32))).astype(np.float32)
    ids = [int(i) for i in rng.permutation(10_000)[:2000]]
    run = tmp_path_factory.mktemp("clustered") / "run"
    (run / "features").mkdir(parents=True)
    table = pa.table({"item_id": pa.array(ids, pa.int64()), "features": vectors_column(matrix)})
    pq.write_table(table, run / "features" / "synthetic.parquet")
    return run, ids, matrix, labels


@pytest.mark.parametrize(("kind", "min_recall"), [("flat", 1.0), ("hnsw", 0.9), ("ivfpq", 0.8)])
def test_each_kind_finds_the_exact_neighbours(clustered: tuple, kind: str, min_recall: float) -> None:
    run, ids, matrix, labels = clustered
    cfg = load_config(None, [f"index.kind={kind}", "index.hnsw_m=16"])
    result = build_index(cfg, run, "synthetic")
    assert result.path == run / "features" / "synthetic.faiss" and result.path.is_file()
    meta = json.loads((run / "features" / "synthetic.faiss.json").read_text())
    assert (meta["kind"], meta["n"], meta["dim"], meta["source"], meta["column"]) == (
        kind,
        2000,
        32,
        "synthetic",
        "features",
    )
    assert meta["features"][0]["bytes"] == (run / "features" / "synthetic.parquet").stat().st_size

    queries = np.arange(0, 2000, 10)
    found, scores = search(load_index(run, "synthetic", config=cfg), matrix[queries], 10)
    truth = exact_top(matrix, matrix[queries], 10)
    row_of = {item: r for r, item in enumerate(ids)}
    recall = np.mean([len({row_of[i] for i in f} & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= min_recall, f"{kind}: recall@10 vs exact {recall:.3f}"
    same_cluster = np.mean([labels[row_of[i]] == labels[q] for f, q in zip(found, queries, strict=True) for i in f])
    assert same_cluster > 0.95
    assert all(isinstance(i, int) for i in found[0])  # ids come back as given
    assert all(np.all(np.diff(s) <= 1e-6) for s in scores)  # best first
    if kind == "flat":
        reference = normalize(matrix[queries]) @ normalize(matrix).T
        np.testing.assert_allclose(scores, np.sort(reference, axis=1)[:, ::-1][:, :10], atol=1e-5)
    if kind == "ivfpq":
        assert meta["params"]["nlist"] <= 2000 // 39 and 32 % meta["params"]["pq_m"] == 0


def test_auto_kind_follows_the_size_limits(clustered: tuple) -> None:
    cfg = load_config(None, ["index.exact_max=100", "index.hnsw_max=1000"]).index
    assert [choose_kind(cfg, n) for n in (100, 101, 1000, 1001)] == ["flat", "hnsw", "hnsw", "ivfpq"]
    run = clustered[0]
    meta = build_index(load_config(None, ["index.exact_max=100", "index.hnsw_max=1000"]), run, "synthetic").meta
    assert meta["kind"] == "ivfpq"


def test_few_items_get_an_exact_index_and_short_results(tmp_path: Path) -> None:
    matrix = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    (tmp_path / "features").mkdir()
    ids = [f"x{i}" for i in range(30)]
    pq.write_table(
        pa.table({"item_id": ids, "features": vectors_column(matrix)}), tmp_path / "features" / "few.parquet"
    )
    assert build_index(load_config(None, ["index.kind=ivfpq"]), tmp_path, "few").meta["kind"] == "flat"
    found, scores = search(load_index(tmp_path, "few"), matrix[:2], 50)
    assert [len(f) for f in found] == [30, 30] and found[0][0] == "x0" and found[1][0] == "x1"
    assert scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_pq_code_size_divides_the_dimension() -> None:
    assert pq_subquantizers(64, 32) == 32
    assert pq_subquantizers(48, 32) == 24  # the divisors nearest 32 are 24 and 48: 24 is nearer
    assert pq_subquantizers(1280, 32) == 32
    assert pq_subquantizers(100, 32) == 25
    assert pq_subquantizers(7, 32) == 7


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_index_command_builds_each_kind(run: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok(["index", str(run), "--kind", kind, "--source", "imagenet"])
    assert f"wrote {run / 'features' / 'imagenet.faiss'}: {kind} index of 400 items" in capsys.readouterr().out
    index = load_index(run, "imagenet")
    assert index.meta["kind"] == kind and index.index.ntotal == 400
    ids, matrix = read_features(run, "imagenet")
    found, scores = search(index, matrix[:20], 5)
    exact = exact_top(matrix, matrix[:20], 5)
    # every query finds itself (score ≈ 1) among its nearest; approximate kinds may reorder near-ties
    assert np.mean([ids[q] in f for q, f in enumerate(found)]) >= (1.0 if kind != "ivfpq" else 0.9)
    recall = np.mean([len({ids[r] for r in e} & set(f)) / 5 for e, f in zip(exact, found, strict=True)])
    assert recall >= (1.0 if kind == "flat" else 0.6)
    for built in index.path.parent.glob("imagenet.faiss*"):  # later tests expect the default (exact) index
        built.unlink()


def test_head_column_gets_its_own_index(run: Path) -> None:
    ok(["index", str(run), "--column", "head_factors", "--kind", "flat"])
    path = index_path(run, "learned", "head_factors")
    assert path.name == "learned.head_factors.faiss" and path.is_file()
    assert json.loads((path.parent / (path.name + ".json")).read_text())["dim"] == 16


def test_stale_or_missing_index_is_rebuilt(embedded_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(embedded_run, tmp_path / "run")
    path = index_path(run, "random")
    assert not path.exists()
    load_index(run, "random")  # missing: built
    first = json.loads((path.parent / "random.faiss.json").read_text())
    assert first["n"] == 400
    features = run / "features" / "random.parquet"
    table = pq.read_table(features).slice(0, 300)  # re-embedded: fewer items, a new file
    pq.write_table(table, features)
    os.utime(features, ns=(first["features"][0]["mtime_ns"] + 10**9,) * 2)
    summary = features.with_suffix(".json")  # as embed writes it: the new file's fingerprint beside it
    summary.write_text(json.dumps({**json.loads(summary.read_text()), **fingerprints(features.parent, features.name)}))
    index = load_index(run, "random")
    assert index.index.ntotal == 300 and len(index.ids) == 300
    assert json.loads((path.parent / "random.faiss.json").read_text())["n"] == 300


# --------------------------------------------------------------------------------------------- similar
def test_similar_by_id_matches_exact_search_without_the_query(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config()
    ids, matrix = read_features(run, "learned")
    query = ids.index("i00003")
    rows = similar(cfg, run, item_id="i00003", k=7)
    assert len(rows) == 7 and "i00003" not in [r["item_id"] for r in rows]
    assert [r["rank"] for r in rows] == list(range(1, 8))
    reference = [ids[r] for r in exact_top(matrix, matrix[[query]], 8)[0] if r != query][:7]
    assert [r["item_id"] for r in rows] == reference
    assert rows[0]["title"] and Path(rows[0]["image"]).is_file()
    ok(["similar", str(run), "i00003", "--k", "4"])
    printed = capsys.readouterr().out
    assert all(r["item_id"] in printed for r in rows[:4]) and rows[4]["item_id"] not in printed


@pytest.mark.parametrize("source", ["learned", "imagenet", "random"])
def test_planted_neighbour_an_items_own_image_comes_first(run: Path, source: str) -> None:
    """A new image file that is really an indexed item's image must find that item, cosine ≈ 1."""
    split = pq.read_table(run / "factors" / "item_split.parquet").to_pylist()
    cold = next(r["item_id"] for r in split if r["split"] == "test")
    for item in ("i00007", cold):
        rows = similar(load_config(), run, image=image_of(run, item), source=source, k=3)
        assert rows[0]["item_id"] == item and rows[0]["score"] == pytest.approx(1.0, abs=1e-4), (source, rows)
        assert len(rows) == 3


def test_sources_give_different_neighbours(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config()
    learned = [r["item_id"] for r in similar(cfg, run, item_id="i00010", source="learned", k=10)]
    imagenet = [r["item_id"] for r in similar(cfg, run, item_id="i00010", source="imagenet", k=10)]
    assert learned != imagenet
    ok(["similar", str(run), "--image", str(image_of(run, "i00010")), "--source", "imagenet", "--k", "3"])
    assert "imagenet/features" in capsys.readouterr().out


def test_hidden_palette_is_shared_by_learned_neighbours(run: Path, platform: Path) -> None:
    """Simulated items that share a hidden palette look alike; the learned features' top-5 neighbours share it far
    more often than chance (measured on the fixture: ~0.84 against a chance rate of ~0.17)."""
    with open(platform / "labels.csv", newline="") as fh:
        palette = {r["item_id"]: r["palette"] for r in csv.DictReader(fh)}
    ids, matrix = read_features(run, "learned")
    found, _ = search(load_index(run, "learned"), matrix, 6)
    pairs = [(palette[q], palette[i]) for q, row in zip(ids, found, strict=True) for i in row if i != q][: 5 * len(ids)]
    share = np.mean([a == b for a, b in pairs])
    _, counts = np.unique(list(palette.values()), return_counts=True)
    chance = float((counts * (counts - 1)).sum() / (len(palette) * (len(palette) - 1)))
    assert share > 2.5 * chance, (share, chance)


# --------------------------------------------------------------------------------------------- errors
def test_user_errors_are_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no-such-item" in fails(["similar", str(run), "no-such-item"], capsys)
    assert "exactly one" in fails(["similar", str(run)], capsys)
    image = image_of(run, "i00001")
    assert "exactly one" in fails(["similar", str(run), "i00001", "--image", str(image)], capsys)
    text = tmp_path / "x.jpg"
    text.write_text("not a picture")
    assert str(text) in fails(["similar", str(run), "--image", str(text)], capsys)
    assert str(tmp_path / "gone.png") in fails(["similar", str(run), "--image", str(tmp_path / "gone.png")], capsys)
    assert "head_nope" in fails(["index", str(run), "--column", "head_nope"], capsys)
    for path in (str(tmp_path), "../features/learned", ""):  # a path is not a source name (was a glob traceback)
        assert "not a path" in fails(["similar", str(run), "i00001", "--source", path], capsys)
        assert "not a path" in fails(["index", str(run), "--source", path], capsys)
    assert "--source" in fails(["similar", str(run), "i00001", "--source", "nope"], capsys)
    assert "index.kind" in fails(["index", str(run), "--kind", "annoy"], capsys)
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("learned.*"))
    line = fails(["similar", str(bare), "i00001"], capsys)
    assert f"socialfeat embed {bare} --source learned" in line
    assert "socialfeat embed" in fails(["index", str(bare)], capsys)


# --------------------------------------------------------------------------------------------- one copy
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_a_batched_build_holds_one_batch_and_equals_a_whole_build(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectors reach the index a batch at a time (normalised in place), so no whole float matrix is held
    beside the index while it is built (numpy allocations traced: the old build held a normalised copy); the
    index searches as one built in a single batch (flat and IVF-PQ identically; HNSW, whose graph depends on
    the insertion batches, with the same recall)."""
    import tracemalloc

    import socialfeat.index as index_module

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((6000, 48)).astype(np.float32)
    run = tmp_path / "run"
    (run / "features").mkdir(parents=True)
    table = pa.table({"item_id": pa.array(range(6000), pa.int64()), "features": vectors_column(matrix)})
    pq.write_table(table, run / "features" / "synthetic.parquet", row_group_size=1000)
    cfg = load_config(None, [f"index.kind={kind}", "index.hnsw_m=16", "index.ivf_lists=10"])
    monkeypatch.setattr(index_module, "TRAIN_SAMPLE", 600)  # IVF-PQ trains on a sample: 600 rows, not all 6,000

    build_index(cfg, run, "synthetic")
    whole = load_index(run, "synthetic", config=cfg)
    queries = matrix[::50]
    found_whole, scores_whole = search(whole, queries, 10)

    monkeypatch.setattr(index_module, "BATCH_BYTES", 500 * 48 * 4)  # 12 batches of 500 rows
    (run / "features" / "synthetic.faiss").unlink()
    real, peaks = index_module._make_index, []

    def traced(*args: object) -> object:  # the build itself, not the file write's 1 MB buffer
        tracemalloc.start()
        try:
            return real(*args)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(index_module, "_make_index", traced)
    build_index(cfg, run, "synthetic")
    assert peaks[0] < matrix.nbytes / 3, (peaks, matrix.nbytes)  # the old build: a whole normalised copy
    batched = load_index(run, "synthetic", config=cfg)
    found, scores = search(batched, queries, 10)
    if kind == "hnsw":
        truth = exact_top(matrix, queries, 10)
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
        assert recall >= 0.9
    else:
        assert found == found_whole
        np.testing.assert_allclose(scores, scores_whole, atol=1e-6)


def test_a_build_refuses_missing_rank_parts(tmp_path: Path) -> None:
    from socialfeat.errors import UserError

    (tmp_path / "features").mkdir()
    table = pa.table({"item_id": [1, 2], "features": vectors_column(np.ones((2, 4), np.float32))})
    pq.write_table(table, tmp_path / "features" / "parted.part-0-of-2.parquet")
    with pytest.raises(UserError, match="1 of 2 rank parts present"):
        build_index(load_config(None, []), tmp_path, "parted")


def test_exact_search_and_read_rows_stream_the_file(clustered: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's search: exact top-k by (cosine, then row) in one batched pass, against a full sort."""
    import socialfeat.index as index_module
    from socialfeat.index import exact_search, feature_files, read_rows

    run, _, matrix, _ = clustered
    monkeypatch.setattr(index_module, "BATCH_BYTES", 300 * 32 * 4)
    files = feature_files(run, "synthetic")
    rows = [1999, 0, 77, 77, 1000]
    np.testing.assert_array_equal(read_rows(run, files, "features", rows), matrix[rows])
    top, cos = exact_search(run, files, "features", matrix[rows], 12)
    reference = normalize(matrix[rows]) @ normalize(matrix).T
    assert top.tolist() == np.argsort(-reference, axis=1, kind="stable")[:, :12].tolist()
    np.testing.assert_allclose(cos, np.sort(reference, axis=1)[:, ::-1][:, :12], atol=1e-5)
