"""``socialfeat evaluate`` end to end on the embedded run: every source row with its metrics, references, probes on
the simulator's labels, and one-line errors for bad labels files and runs without features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from socialfeat.cli import main
from socialfeat.config import load_config
from socialfeat.data.tags import split_tags
from socialfeat.errors import UserError
from socialfeat.evaluate import evaluate
from socialfeat.evaluate.probe import read_labels
from socialfeat.evaluate.stage import plan_rows
from socialfeat.features import vectors_column
from socialfeat.measures.bootstrap import OVER

BASE_ROWS = {
    "learned · pooled": ("learned", "features", "ridge"),
    "learned · factor head": ("learned", "head_factors", "head"),
    "learned · factor head + ridge": ("learned", "head_factors", "ridge"),
    "imagenet": ("imagenet", "features", "ridge"),
    "random": ("random", "features", "ridge"),
    "metadata": ("metadata", "tags", "ridge"),
}


def expected_rows(run: Path) -> dict[str, tuple[str, str, str]]:
    """The base rows plus one ridge row per further head of the learned model (factor clusters, engagement …)."""
    heads = [c for c in pq.read_schema(run / "features" / "learned.parquet").names if c.startswith("head_")]
    extra = {
        f"learned · {c[5:].replace('_', ' ')} head + ridge": ("learned", c, "ridge")
        for c in heads
        if c != "head_factors"
    }
    return {**BASE_ROWS, **extra}


def cli(*args: object) -> int:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return int(exc.value.code or 0)


@pytest.fixture(scope="module")
def evaluated(embedded_run: Path, platform: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("evaluate") / "run"
    shutil.copytree(embedded_run, run)
    assert cli("evaluate", run, "--labels", platform / "labels.csv", "--set", "evaluate.max_queries=200") == 0
    return {"run": run, "metrics": json.loads((run / "eval" / "metrics.json").read_text())}


def test_every_source_row_has_its_metrics(evaluated: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    m, run = evaluated["metrics"], evaluated["run"]
    assert m["k"] == 20
    split = m["split"]
    assert split["train"] > 0 and split["valid"] > 0 and split["test"] > 0 and split["users_evaluated"] > 0
    rows = {r["name"]: r for r in m["rows"]}
    expected = expected_rows(run)
    assert set(rows) == set(expected)
    for name, (source, column, mapping) in expected.items():
        r = rows[name]
        assert (r["source"], r["column"], r["mapping"]) == (source, column, mapping)
        assert r["dim"] > 0
        c = r["coldstart"]
        assert 0 <= c["auc"] <= 1 and 0 <= c["recall@20"] <= 1 and 0 <= c["ndcg@20"] <= 1
        assert c["users"] == split["users_evaluated"]
        assert (c["lambda"] is None) == (mapping == "head") and 0 <= c["valid_auc"] <= 1
        ret = r["retrieval"]
        assert ret["queries"] == 200 and 0 <= ret["overlap"] <= 1 and ret["random_overlap"] > 0
        assert ret["lift"] == pytest.approx(ret["overlap"] / ret["random_overlap"])
    assert rows["learned · factor head"]["dim"] == 16
    # the random source is a randomly initialised CNN: its features still see colour, which the simulated tastes
    # follow, so it may beat 0.5 (pure noise features are checked against 0.5 below); it must not beat the oracle
    refs = {r["name"]: r["coldstart"] for r in m["references"]}
    assert set(refs) == {"random scores", "popularity (oracle)"}
    assert abs(refs["random scores"]["auc"] - 0.5) <= 0.08 and refs["popularity (oracle)"]["auc"] > 0.5
    assert all(r["coldstart"]["auc"] < refs["popularity (oracle)"]["auc"] for r in m["rows"])
    assert m["seconds"] > 0
    assert (run / "eval" / "config.yaml").is_file()
    assert json.loads((run / "eval" / "manifest.json").read_text())["stage"] == "evaluate"


def test_probes_on_platform_labels(evaluated: dict[str, Any]) -> None:
    m = evaluated["metrics"]
    for row in m["rows"]:
        probes = row["probes"]
        assert set(probes) == {"palette", "texture", "composition", "object"}  # popularity is numeric: skipped
        for p in probes.values():
            assert 0 <= p["all"] <= 1 and 0 <= p["few"] <= 1 and 0 < p["chance"] < 1 and p["classes"] >= 2
    assert any("popularity" in note and "skipped" in note for note in m["notes"])


def test_the_cli_prints_the_table(embedded_run: Path, platform: Path, tmp_path: Path, capsys: Any) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    shutil.rmtree(run / "features")
    (run / "features").mkdir()
    ids = pq.read_table(embedded_run / "features" / "random.parquet", columns=["item_id"]).column("item_id")
    noise = np.random.default_rng(0).normal(size=(len(ids), 32)).astype(np.float32)
    pq.write_table(pa.table({"item_id": ids, "features": vectors_column(noise)}), run / "features" / "random.parquet")
    assert cli("evaluate", run, "--source", "random", "--source", "learned", "--set", "evaluate.max_queries=50") == 0
    text = capsys.readouterr().out
    assert "random scores" in text and "popularity (oracle)" in text and "AUC" in text
    assert f"wrote {run / 'eval' / 'metrics.json'}" in text.replace("\n", "")
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert [r["name"] for r in m["rows"]] == ["random"]
    assert abs(m["rows"][0]["coldstart"]["auc"] - 0.5) <= 0.08  # noise carries no audience: no leak of the truth
    assert any("socialfeat embed" in n and "--source learned" in n for n in m["notes"])


def test_bad_labels_files_are_one_line_errors(embedded_run: Path, tmp_path: Path, capsys: Any) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    assert cli("evaluate", run, "--labels", tmp_path / "nope.csv") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'nope.csv'}: labels file not found")
    assert not (run / "eval").exists()
    no_id = tmp_path / "no_id.csv"
    no_id.write_text("id,palette\n1,red\n")
    with pytest.raises(UserError, match="no item_id column"):
        read_labels(no_id, ["1"], 0)
    other = tmp_path / "other.csv"
    other.write_text("item_id,palette\nzz1,red\nzz2,blue\n")
    with pytest.raises(UserError, match="none of its 2 item ids"):
        read_labels(other, ["1", "2"], 0)


def test_runs_without_features_or_factors_are_one_line_errors(embedded_run: Path, tmp_path: Path, capsys: Any) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    shutil.rmtree(run / "features")
    assert cli("evaluate", run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no features/" in err[0] and "socialfeat embed" in err[0]
    shutil.rmtree(run / "factors")
    assert cli("evaluate", run) == 2
    assert "socialfeat factorize" in capsys.readouterr().err
    assert cli("evaluate", run, "--source", "pixels") == 2
    assert "--source" in capsys.readouterr().err
    with pytest.raises(UserError, match="ridge_lambdas"):
        evaluate(load_config(None, ["evaluate.ridge_lambdas=[0, 1]"]), run)


def test_split_tags() -> None:
    assert split_tags("Comedy|Romance") == ["comedy", "romance"]
    assert split_tags("a, b;c") == ["a", "b", "c"] and split_tags(None) == [] and split_tags(["X", " y "]) == ["x", "y"]


def test_plan_rows_has_a_ridge_row_per_head(tmp_path: Path) -> None:
    ids = pa.array(["a", "b"])
    columns = {"item_id": ids, "features": vectors_column(np.zeros((2, 8)))}
    for head, width in (("head_factors", 4), ("head_factor_clusters", 6), ("head_engagement", 3)):
        columns[head] = vectors_column(np.zeros((2, width)))
    (tmp_path / "features").mkdir()
    pq.write_table(pa.table(columns), tmp_path / "features" / "learned.parquet")
    rows, notes = plan_rows(tmp_path, ["learned", "imagenet"], n_factors=4)
    assert [(r.name, r.column, r.mapping) for r in rows] == [
        ("learned · pooled", "features", "ridge"),
        ("learned · factor head", "head_factors", "head"),
        ("learned · factor head + ridge", "head_factors", "ridge"),
        ("learned · factor clusters head + ridge", "head_factor_clusters", "ridge"),
        ("learned · engagement head + ridge", "head_engagement", "ridge"),
    ]
    assert notes == [
        f"imagenet: no features/imagenet.parquet; make it with: socialfeat embed {tmp_path} --source imagenet"
    ]
    rows, notes = plan_rows(tmp_path, ["learned"], n_factors=8)  # a head of another width is no factor predictor
    assert "learned · factor head" not in [r.name for r in rows] and "head width" in notes[0]


def test_every_auc_has_a_paired_interval_and_the_headline_differences_theirs(evaluated: dict[str, Any]) -> None:
    m = evaluated["metrics"]
    sample = m["sample"]  # the tiny platform has fewer users than evaluate.users: every eligible user is scored
    assert sample["users"] == sample["of"] == m["split"]["users_evaluated"] and not sample["sampled"]
    assert sample["text"] == f"AUC over {sample['users']:,} of {sample['of']:,} users"
    assert m["bootstrap"] == {
        "resamples": 1000,
        "level": 0.95,
        "paired": True,
        "over": "users and items",
        "items": m["split"]["test"],
        "method": OVER,
        "seed": 0,
    }
    for entry in [*m["rows"], *m["references"]]:
        c = entry["coldstart"]
        assert c["auc_ci"][0] <= c["auc"] <= c["auc_ci"][1] and c["users"] == sample["users"], entry["name"]
        assert c["auc_ci_users"][0] <= c["auc"] <= c["auc_ci_users"][1], entry["name"]
        if "oracle" not in entry:  # the items add spread (the oracle's ranking does not depend on them alone)
            assert c["auc_ci"][1] - c["auc_ci"][0] > c["auc_ci_users"][1] - c["auc_ci_users"][0], entry["name"]
    rows = {r["name"]: r for r in m["rows"]}
    learned = max((r for r in m["rows"] if r["source"] == "learned"), key=lambda r: r["coldstart"]["valid_auc"])
    diffs = {d["label"]: d for d in m["differences"]}
    assert set(diffs) == {"learned − ImageNet", "learned − random", "learned − metadata"}
    for d in diffs.values():
        assert d["a"] == learned["name"] and rows[d["b"]]["source"] in ("imagenet", "random", "metadata")
        assert d["diff"] == pytest.approx(rows[d["a"]]["coldstart"]["auc"] - rows[d["b"]]["coldstart"]["auc"])
        lo, hi = d["ci"]
        assert lo <= hi and d["contains_zero"] == (lo <= 0 <= hi)
        lo_u, hi_u = d["ci_users"]
        assert lo_u <= hi_u and d["contains_zero_users"] == (lo_u <= 0 <= hi_u)


def test_the_cli_states_the_user_sample_and_the_differences(
    embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    sets = ["evaluate.users=40", "evaluate.valid_users=30", "evaluate.bootstrap=200", "evaluate.max_queries=50"]
    args = ["--source", "learned", "--source", "imagenet", *[a for s in sets for a in ("--set", s)]]
    assert cli("evaluate", run, *args) == 0
    text = capsys.readouterr().out.replace("\n", " ")
    m = json.loads((run / "eval" / "metrics.json").read_text())
    sample = m["sample"]
    assert sample["users"] == 40 and sample["valid_users"] == 30 and sample["of"] > 40 and sample["sampled"]
    assert f"AUC over 40 of {sample['of']:,} users, seed 0" in text and "95% CI" in text
    assert all(r["coldstart"]["users"] == 40 for r in [*m["rows"], *m["references"]])
    (diff,) = m["differences"]
    assert diff["label"] == "learned − ImageNet" and m["bootstrap"]["resamples"] == 200
    assert "learned − ImageNet: " in text and ("contains 0" in text) == diff["contains_zero"]
    again = tmp_path / "again"
    shutil.copytree(embedded_run, again)
    assert cli("evaluate", again, *args) == 0  # the same seed: the same users, AUCs and intervals
    assert json.loads((again / "eval" / "metrics.json").read_text())["differences"] == m["differences"]
