"""``evaluate``'s hybrid rows: the content model's scores (every source alone, each pair, all together, the peer)
copied into ``eval/metrics.json`` and printed best first — only when the model is on this evaluation's split and
factors; a stale or unreadable one is left out with a note that says to rerun ``socialfeat content``."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from environment import need_module
from rich.console import Console

from socialfeat.cli import main, out
from socialfeat.cli.tables import hybrid_table
from socialfeat.config import ContentConfig, load_config
from socialfeat.evaluate.hybrid import content_section

SOURCES = ("learned", "imagenet", "text", "tags")
SPLIT = {"train": 320, "valid": 20, "test": 60}


def evaluate_cli(run: Path) -> tuple[dict[str, Any], str]:
    """``socialfeat evaluate RUN`` on the learned rows only (the hybrid rows do not depend on them): metrics, stdout."""
    with out.capture() as cap, pytest.raises(SystemExit) as exc:
        main(["evaluate", str(run), "--source", "learned", "--set", "evaluate.max_queries=50"])
    assert exc.value.code == 0
    return json.loads((run / "eval" / "metrics.json").read_text()), cap.get()


@pytest.fixture(scope="module")
def fitted(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the embedded run with a content model on learned, ImageNet, text and tags (the content stage)."""
    need_module("sentence_transformers", "the text extra is not installed (the content model's text)")
    from socialfeat.content import content

    run = tmp_path_factory.mktemp("hybrid") / "run"
    shutil.copytree(embedded_run, run, ignore=shutil.ignore_patterns("export", "eval"))
    settings = [f"content.sources=[{','.join(SOURCES)}]", "content.fusion_step=0.25"]
    if "joint" in ContentConfig.model_fields:  # the joint fit's search is minutes on CPU; its rows are tested below
        settings.append("content.joint=false")
    content(load_config(None, settings), run)
    return run


@pytest.fixture
def run(fitted: Path, tmp_path: Path) -> Path:
    """A private copy (mtimes kept: content/ stays newer than factors/)."""
    return Path(shutil.copytree(fitted, tmp_path / "run"))


def test_every_single_pair_and_full_row_is_in_the_evaluation(run: Path) -> None:
    m, text = evaluate_cli(run)
    theirs = json.loads((run / "content" / "metrics.json").read_text())
    section = m["content"]
    by_group: dict[str, set[frozenset[str]]] = {}
    for r in section["rows"]:
        assert r["group"] == {1: "single", 2: "pair"}.get(len(r["sources"]), "all")
        by_group.setdefault(r["group"], set()).add(frozenset(r["sources"]))
    assert by_group["single"] == {frozenset([s]) for s in SOURCES}
    assert by_group["pair"] == set(map(frozenset, itertools.combinations(SOURCES, 2)))
    assert by_group["all"] == {frozenset({"learned", "text", "tags"}), frozenset({"imagenet", "text", "tags"})}
    # the content stage's numbers, not a refit: same AUC, weights and missing-source counts row by row
    scored = {tuple(r["sources"]): r for r in theirs["rows"]}
    assert len(section["rows"]) == len(scored)
    for r in section["rows"]:
        mine = scored[tuple(r["sources"])]
        for key in ("auc", "valid_auc", "weights", "test_items_missing_a_source", "recall@20", "ndcg@20", "users"):
            assert r[key] == pytest.approx(mine[key]), key
        assert r["auc_ci"] == mine["auc_ci"] and r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1]
    # on evaluate's user sample, with the differences the content stage's headline states: no "no intervals" note
    assert section["sample"] == theirs["sample"] and section["sample"]["users"] == m["sample"]["users"]
    assert section["differences"] == theirs["differences"] and section["intervals"] is None
    assert [d["label"] for d in section["differences"]][:2] == [
        "full model − best without the image",
        "learned − ImageNet (full models)",
    ]
    for group in ("single", "pair", "all"):  # best first within each group
        aucs = [r["auc"] for r in section["rows"] if r["group"] == group]
        assert aucs == sorted(aucs, reverse=True)
    assert section["split"] == {key: m["split"][key] for key in ("train", "valid", "test")} == theirs["split"]
    assert section["peer"] == theirs["peer"] and section["peer"]["name"].startswith("LightFM")
    assert section["test_items_missing_a_source"] == max(r["test_items_missing_a_source"] for r in theirs["rows"])
    assert section["notes"] == theirs["notes"]
    assert not [n for n in m["notes"] if n.startswith("content model")]

    # the CLI table: every row with its fusion weights and AUCs, in the same order (best first within each group)
    assert "hybrid cold start on" in text
    wide = Console(width=200, record=True)
    wide.print(hybrid_table(section))
    table = wide.export_text()
    positions = []
    for r in section["rows"]:
        shown = (
            " + ".join(f"{s} {short(r['weights'][s])}" for s in r["sources"]) if len(r["sources"]) > 1 else r["name"]
        )
        ci = rf"\[{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}\]"  # the 95% interval beside each test AUC
        scores = rf"{r['valid_auc']:.3f} +{r['auc']:.3f} +{ci} +{r['recall@20']:.3f} +{r['ndcg@20']:.3f}"
        line = re.search(rf"^ ?{re.escape(shown)} .*?{scores} +{r['test_items_missing_a_source']} *$", table, re.M)
        assert line, shown
        positions.append(line.start())
    assert positions == sorted(positions)
    assert "LightFM (WARP), item features" in table
    assert "95% CI: paired bootstrap over the users and test items (1,000 resamples)" in " ".join(table.split())
    said = " ".join(text.split())
    for d in section["differences"]:  # printed under the table, saying whether the interval contains 0
        assert f"{d['label']}: " in said
    assert "not distinguishable from noise" in said or "better beyond the bootstrap's noise" in said


def short(weight: float) -> str:
    """A fusion weight as the table prints it: ``.25``, ``1``, ``0``."""
    return f"{weight:.2f}".rstrip("0").rstrip(".").lstrip("0") or "0"


@pytest.mark.parametrize(
    ("touched", "said"),
    [
        ("factors/item_factors.parquet", "older than factors/"),
        ("features/learned.parquet", "older than features/learned"),
    ],
)
def test_a_content_model_older_than_its_inputs_is_left_out(run: Path, touched: str, said: str) -> None:
    later = (run / "content" / "metrics.json").stat().st_mtime + 60
    os.utime(run / touched, (later, later))
    if touched.startswith("factors/"):  # factorized again, and what evaluate reads rebuilt on it — all but content/
        for folder in ("targets", "model"):
            for p in (run / folder).rglob("*"):
                os.utime(p, (later + 1, later + 1))
        for p in (run / "features").glob("learned.*"):
            os.utime(p, (later + 2, later + 2))
    m, text = evaluate_cli(run)
    assert "content" not in m
    (note,) = [n for n in m["notes"] if n.startswith("content model")]
    assert said in note and f"rerun `socialfeat content {run}`" in note
    assert "hybrid cold start" not in text and said in text


def test_a_content_model_on_another_split_is_left_out(run: Path) -> None:
    path = run / "content" / "metrics.json"
    m = json.loads(path.read_text())
    m["split"]["test"] += 1
    path.write_text(json.dumps(m))
    m, _ = evaluate_cli(run)
    assert "content" not in m
    assert any("another split" in n and "socialfeat content" in n for n in m["notes"])


# ------------------------------------------------------------------------------ the reader on its own (no text model)
def write(run: Path, metrics: Any) -> Path:
    path = run / "content" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return path


def row(sources: list[str], auc: float, **extra: Any) -> dict[str, Any]:
    """A content row as the content stage writes it (equal fusion weights), with ``extra`` keys on top."""
    scores = {"valid_auc": auc, "auc": auc, "recall@20": 0.3, "ndcg@20": 0.2, "users": 250}
    weights = {s: 1 / len(sources) for s in sources}
    return {"sources": sources, "weights": weights, **scores, "test_items_missing_a_source": 0, **extra}


def test_no_content_model_no_section_and_no_note(tmp_path: Path) -> None:
    assert content_section(tmp_path, SPLIT, 20) == (None, [])


@pytest.mark.parametrize("broken", ["{not json", "[1, 2]", json.dumps({"split": SPLIT, "rows": [{"auc": 0.7}]})])
def test_an_unreadable_content_model_is_a_note_not_a_failure(tmp_path: Path, broken: str) -> None:
    write(tmp_path, broken)
    section, notes = content_section(tmp_path, SPLIT, 20)
    assert section is None and notes and f"socialfeat content {tmp_path}" in notes[-1]


def test_unknown_keys_pass_through_and_variants_name_the_rows(tmp_path: Path) -> None:
    rows = [
        row(["learned"], 0.62, model="late fusion"),
        row(["learned", "tags"], 0.66, model="late fusion", item_factors="content/item_factors.parquet"),
        row(["learned", "tags"], 0.68, model="joint", weights=None, lambdas={"learned": 10, "tags": 100}),
        row(["tags", "text", "learned"], 0.7, model="joint", test_items_missing_a_source=4),
        {"sources": [], "auc": 0.9},  # nothing to show: skipped, and said so
    ]
    write(tmp_path, {"split": SPLIT, "rows": rows, "peer": {"name": "LightFM", "skipped": "not installed"}})
    section, notes = content_section(tmp_path, SPLIT, 10)
    assert section is not None
    names = [(r["group"], r["name"]) for r in section["rows"]]
    assert names == [  # a variant is named only where the same sources were fit two ways
        ("single", "learned"),
        ("pair", "learned + tags · joint"),
        ("pair", "learned + tags · late fusion"),
        ("all", "tags + text + learned"),
    ]
    assert section["rows"][1]["lambdas"] == {"learned": 10, "tags": 100}
    assert section["rows"][2]["item_factors"] == "content/item_factors.parquet"
    assert section["test_items_missing_a_source"] == 4 and section["k"] == 20
    assert any("1 row(s)" in n for n in notes) and any("@20" in n and "not @10" in n for n in notes)


def test_intervals_and_differences_come_along_and_another_user_sample_is_said(tmp_path: Path) -> None:
    sample = {"users": 250, "of": 400, "valid_users": 100, "valid_of": 380, "seed": 0}
    sample["text"] = "AUC over 250 of 400 users, seed 0"
    diff = {"a": "learned + tags · late fusion", "b": "tags", "label": "full model − best without the image"}
    diff |= {"diff": 0.04, "ci": [0.01, 0.07], "contains_zero": False}
    rows = [row(["tags"], 0.62, auc_ci=[0.6, 0.64]), row(["learned", "tags"], 0.66, auc_ci=[0.64, 0.68])]
    write(tmp_path, {"split": SPLIT, "rows": rows, "differences": [diff], "sample": sample})
    section, notes = content_section(tmp_path, SPLIT, 20, sample)
    assert section is not None and not notes
    assert section["intervals"] is None and section["differences"] == [diff] and section["sample"] == sample
    assert [r["auc_ci"] for r in section["rows"]] == [[0.6, 0.64], [0.64, 0.68]]
    # scored on other users than this evaluation: the rows stay, said to be unpaired with these
    section, notes = content_section(tmp_path, SPLIT, 20, sample | {"users": 300, "text": "AUC over 300 of 400"})
    assert section is not None and len(section["rows"]) == 2
    (note,) = notes
    assert "another user sample" in note and "AUC over 250 of 400 users" in note and "not paired" in note
    # a row without an interval (written before the bootstrap, or with evaluate.bootstrap = 0): said why
    rows[0].pop("auc_ci")
    write(tmp_path, {"split": SPLIT, "rows": rows, "differences": [], "sample": sample})
    section, _ = content_section(tmp_path, SPLIT, 20, sample)
    assert section is not None and "no 95% intervals" in section["intervals"]
    assert f"socialfeat content {tmp_path}" in section["intervals"]
