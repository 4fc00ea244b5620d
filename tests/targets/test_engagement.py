"""targets: the VisE engagement target — comment embeddings plus engagement counts, clustered into pseudo labels."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import socialfeat.models.text as text_module
from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.factorize.stage import factorize
from socialfeat.targets.engagement import comment_embeddings, engagement_stats, read_comments, stat_columns


@pytest.fixture(scope="module")
def text_model() -> Any:
    """The sentence model, loaded once for the module with the network unreachable: loading must be offline."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access during the text model load")

    text_module.text_model.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        model = text_module.text_model()
    return model


@pytest.fixture(scope="module")
def engaged(demo_dataset: Path, text_model: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A factorized copy of the demo run with all three targets made through the CLI: (run, what it printed)."""
    from socialfeat.cli import main

    run = tmp_path_factory.mktemp("engagement")
    shutil.copytree(demo_dataset / "dataset", run / "dataset")
    factorize(load_config(None, ["factorize.factors=16", "factorize.alpha=1", "factorize.evaluate=false"]), run)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exc:
        main(["targets", str(run), "--targets", "factors,factor-clusters,engagement", "--clusters", "6"])
    assert exc.value.code in (0, None)
    return run, printed.getvalue()


def test_engagement_target_on_the_demo_platform(engaged: tuple[Path, str]) -> None:
    run, printed = engaged
    out = run / "targets"
    factors = pq.read_table(run / "factors" / "item_factors.parquet")
    table = pq.read_table(out / "engagement.parquet")
    assert table.schema.field("cluster").type == pa.int32()
    assert table.column("item_id").to_pylist() == factors.column("item_id").to_pylist()  # every item with factors
    labels = table.column("cluster").to_numpy()
    summary = json.loads((out / "summary.json").read_text())["engagement"]
    k = summary["k"]
    assert k == 32 and labels.min() >= -1 and labels.max() < k and set(labels[labels >= 0]) == set(range(k))
    commented = set(pq.read_table(run / "dataset" / "comments.parquet").column("item_idx").to_pylist())
    silent = sum(i not in commented for i in table.column("item_idx").to_pylist())
    assert silent > 0 and (labels == -1).sum() == summary["without_comments"] == silent
    assert summary["with_comments"] + summary["without_comments"] == len(factors)
    assert summary["stats"] == stat_columns(pq.read_table(run / "dataset" / "interactions.parquet"))[1]
    described = json.loads((out / "clusters.json").read_text())["engagement"]
    sizes = [g["size"] for g in described]
    assert len(described) == k and sum(sizes) == summary["with_comments"]
    assert min(sizes) == summary["smallest"] and max(sizes) == summary["largest"]
    label_of = dict(zip(table.column("item_id").to_pylist(), labels.tolist(), strict=True))
    assert all(label_of[i] == g["cluster"] for g in described for i in g["items"])  # typical items are members
    assert f"({silent:,} items without comments masked)" in printed and "engagement: 32 clusters of" in printed


def test_engagement_clusters_follow_the_hidden_palette(engaged: tuple[Path, str], platform: Path) -> None:
    """Comments talk about the taste attributes, so clusters should be far purer in palette than chance.

    Measured on this demo (280 of 400 items commented, k=32, stats_weight 0.25, k-means seeds 0-5): weighted
    purity 0.62-0.65 against 0.34 (at most 0.39) for the same cluster sizes shuffled; the largest palette holds
    18% of the items. Text alone (stats_weight 0) reaches 0.63-0.67."""
    run, _ = engaged
    table = pq.read_table(run / "targets" / "engagement.parquet")
    with open(platform / "labels.csv", newline="") as fh:
        palette_of = {r["item_id"]: r["palette"] for r in csv.DictReader(fh)}
    labels = table.column("cluster").to_numpy()
    keep = labels >= 0
    pal = np.array([palette_of[i] for i in table.column("item_id").to_pylist()])[keep]
    labels = labels[keep]

    def purity(lab: np.ndarray) -> float:
        return sum(np.unique(pal[lab == c], return_counts=True)[1].max() for c in np.unique(lab)) / len(pal)

    rng = np.random.default_rng(0)
    chance = float(np.mean([purity(rng.permutation(labels)) for _ in range(20)]))
    majority = np.unique(pal, return_counts=True)[1].max() / len(pal)
    assert purity(labels) > chance + 0.12 and purity(labels) > 2.5 * majority, (purity(labels), chance, majority)


def test_engagement_stats_match_a_naive_loop() -> None:
    rows = [  # user, item, views, likes, comments, shares
        (0, 10, 3, 1, 0, 0),
        (1, 10, 1, 1, 1, 1),
        (0, 11, 2, 0, 0, 0),
        (2, 11, 5, 2, 0, 0),
        (1, 12, 1, 1, 1, 0),
        (3, 99, 9, 9, 9, 9),  # not asked for: ignored
    ]
    names = ["user_idx", "item_idx", "n_view", "n_like", "n_comment", "n_share"]
    table = pa.table({n: pa.array([r[j] for r in rows], pa.int32()) for j, n in enumerate(names)})
    items = np.array([12, 10, 11, 13])  # 13 has no interaction at all

    def naive(counts: list[str], per_view: bool) -> np.ndarray:
        out = []
        for item in items:
            mine = [dict(zip(names, r, strict=True)) for r in rows if r[1] == item]
            total = {c: sum(r[c] for r in mine) for c in counts}
            base = total["n_view"] if per_view else len(mine)
            rates = [total[c] / base if base else 0.0 for c in counts if c != "n_view"]
            out.append([np.log1p(total[c]) for c in counts] + rates)
        x = np.array(out)
        std = x.std(axis=0)
        return (x - x.mean(axis=0)) / np.where(std > 0, std, 1)

    counts = names[2:]
    assert np.allclose(engagement_stats(table, items), naive(counts, per_view=True), atol=1e-5)
    assert stat_columns(table)[1][-3:] == ["like_per_view", "comment_per_view", "share_per_view"]
    no_views = table.drop_columns(["n_view"])
    assert np.allclose(engagement_stats(no_views, items), naive(counts[1:], per_view=False), atol=1e-5)
    assert stat_columns(no_views)[1][-1] == "share_per_interaction"
    constant = pa.table({"item_idx": pa.array([1, 2], pa.int32()), "n_view": pa.array([4, 4], pa.int32())})
    assert np.array_equal(engagement_stats(constant, np.array([1, 2])), np.zeros((2, 1)))  # std 0: no NaN


def test_comments_are_capped_by_time(tmp_path: Path) -> None:
    texts = ["late", "first", "second", "other item", "  "]
    pq.write_table(
        pa.table(
            {
                "item_idx": pa.array([0, 0, 0, 1, 1], pa.int32()),
                "text": texts,
                "timestamp": pa.array([30, 10, 20, 5, 1], pa.timestamp("s")),
            }
        ),
        tmp_path / "comments.parquet",
    )
    assert read_comments(tmp_path, np.array([0, 1, 2]), cap=2) == [["first", "second"], ["other item"], []]
    assert read_comments(tmp_path / "nowhere", np.array([0]), cap=2) == [[]]


def test_comment_embeddings_are_means_of_unit_sentence_vectors(text_model: Any) -> None:
    warm = "sunset glowing golden amber"
    emb, has = comment_embeddings([[warm], [warm, warm], [], ["fiery cozy sunset glow"], ["icy frosty ocean"]], 8)
    assert has.tolist() == [True, True, False, True, True]
    assert np.allclose(np.linalg.norm(emb[has], axis=1), 1, atol=1e-5) and not emb[2].any()
    assert np.allclose(emb[0], emb[1], atol=1e-6)  # the mean of two identical comments is the comment
    assert emb[0] @ emb[3] > emb[0] @ emb[4] + 0.1, (emb[0] @ emb[3], emb[0] @ emb[4])


def test_engagement_errors(engaged: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from socialfeat.cli import main

    run, _ = engaged
    silent = tmp_path / "silent"
    shutil.copytree(run / "dataset", silent / "dataset", ignore=shutil.ignore_patterns("comments.parquet"))
    shutil.copytree(run / "factors", silent / "factors")
    for argv, fragment in [
        (["targets", str(silent), "--targets", "engagement"], f"{silent / 'dataset'}: the engagement target needs"),
        (["targets", str(run), "--targets", "engagement", "--engagement-clusters", "100000"], "100000 engagement"),
        (["targets", str(run), "--engagement-clusters", "1"], "--engagement-clusters"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not (silent / "targets").exists()  # nothing half-written


def test_the_onnx_encoder_gives_sentence_transformers_vectors(text_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the comments go through ONNX Runtime; its vectors must be the library's, to float precision."""
    texts = ["sunset glowing golden amber", "icy", "a much longer comment about the neon stripes " * 6, "x"]
    assert text_module._onnx_encoder() is not None  # the fast path is really the one taken here
    fast = text_module.encode_unit(texts, batch_size=2)  # batches that mix lengths: padding must not leak in
    slow = text_model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    assert fast.shape == slow.shape == (4, 384)
    assert np.min(np.sum(fast * slow, axis=1)) > 0.99999
    monkeypatch.setenv("SOCIALFEAT_TEXT_BACKEND", "torch")
    text_module._build_onnx_encoder.cache_clear()
    try:
        assert text_module._onnx_encoder() is None
        assert np.allclose(text_module.encode_unit(texts[:2]), slow[:2], atol=1e-5)
    finally:
        text_module._build_onnx_encoder.cache_clear()


def test_missing_text_extra_is_a_user_error(monkeypatch: pytest.MonkeyPatch, text_model: Any) -> None:
    """Last in the module: it empties the model cache (a later user reloads the model)."""
    text_module.text_model.cache_clear()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    try:
        with pytest.raises(UserError, match=r"pip install 'socialfeat\[text\]'"):
            text_module.text_model()
    finally:
        text_module.text_model.cache_clear()
