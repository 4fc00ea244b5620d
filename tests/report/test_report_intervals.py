"""The report states how sure the evaluation is: each row's 95% interval beside its AUC, the sampled users in the
caption, the headline differences with their intervals (and "contains 0" said plainly), and, for the hybrid rows
that have none yet, why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from socialfeat.report import hybrid, sections


def row(name: str, source: str, auc: float, valid: float, ci: list[float] | None) -> dict[str, Any]:
    c = {"auc": auc, "valid_auc": valid, "recall@20": 0.4, "ndcg@20": 0.3, "users": 2000}
    return {
        "name": name,
        "source": source,
        "mapping": "ridge",
        "dim": 8,
        "coldstart": c | ({"auc_ci": ci} if ci else {}),
    }


def metrics(with_ci: bool) -> dict[str, Any]:
    rows = [
        row("learned · pooled", "learned", 0.66, 0.65, [0.65, 0.67] if with_ci else None),
        row("imagenet", "imagenet", 0.654, 0.64, [0.644, 0.664] if with_ci else None),
        row("random", "random", 0.6, 0.6, [0.59, 0.61] if with_ci else None),
    ]
    diffs = [
        {"a": "learned · pooled", "b": "imagenet", "label": "learned − ImageNet", "diff": 0.006}
        | {"ci": [-0.002, 0.0135], "contains_zero": True},
        {"a": "learned · pooled", "b": "random", "label": "learned − random", "diff": 0.06}
        | {"ci": [0.05, 0.07], "contains_zero": False},
    ]
    sample = {"users": 2000, "of": 30900, "valid_users": 500, "valid_of": 29000, "seed": 0, "sampled": True}
    return {
        "k": 20,
        "split": {"train": 300, "valid": 50, "test": 60, "users_evaluated": 2000},
        "sample": sample | {"text": "AUC over 2,000 of 30,900 users, seed 0"},
        "bootstrap": {"resamples": 1000, "level": 0.95},
        "rows": rows,
        "references": [{"name": "random scores", "coldstart": {"auc": 0.5, "auc_ci": [0.49, 0.51]}}],
        "differences": diffs if with_ci else [],
        "notes": [],
    }


def write(tmp_path: Path, m: dict[str, Any]) -> Path:
    (tmp_path / "eval").mkdir(parents=True, exist_ok=True)
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
    return tmp_path


def test_the_evaluation_shows_intervals_the_sample_and_the_differences(tmp_path: Path) -> None:
    run = write(tmp_path, metrics(with_ci=True))
    e = sections.evaluation(run)
    head = e["table"]["head"]
    assert head[3:5] == ["cold-start AUC", "95% interval"]
    first = e["table"]["rows"][0]
    assert [c["text"] for c in first[3:5]] == ["0.6600", "0.6500–0.6700"] and first[3].get("best")
    assert not first[4].get("best")  # an interval is text, never the column's best
    assert "AUC over 2,000 of 30,900 users, seed 0" in e["table"]["caption"]
    assert "paired bootstrap over the same users and test items (1,000 resamples)" in e["table"]["caption"]
    said = e["differences"]
    assert (
        "learned − ImageNet: +0.0060 (95% interval −0.0020 to +0.0135), which contains 0: not distinguishable" in said
    )
    assert "learned − random: +0.0600 (95% interval +0.0500 to +0.0700), which excludes 0" in said
    headline = sections.evaluation_summary(run)["headline"]
    assert headline.startswith("Learned features: cold-start AUC 0.66 vs 0.65 for ImageNet features")
    assert "95% interval −0.0020 to +0.0135: not distinguishable from noise" in headline


def test_an_evaluation_without_intervals_shows_none(tmp_path: Path) -> None:
    m = metrics(with_ci=False)
    m["references"][0]["coldstart"].pop("auc_ci")
    e = sections.evaluation(write(tmp_path, m))
    assert "95% interval" not in e["table"]["head"] and e["differences"] is None
    assert "interval" not in sections.evaluation_summary(tmp_path)["headline"]


def test_hybrid_rows_say_why_they_have_no_interval(tmp_path: Path) -> None:
    m = metrics(with_ci=True)
    content_row = {"sources": ["imagenet", "tags"], "group": "pair", "name": "imagenet + tags", "auc": 0.7}
    m["content"] = {"k": 20, "split": {"test": 60}, "rows": [content_row], "intervals": "no 95% intervals: why"}
    shown = hybrid.hybrid_section(write(tmp_path, m))
    assert "no 95% intervals: why" in shown["notes"] and "95% interval" not in shown["table"]["head"]
    m["content"]["rows"][0]["auc_ci"] = [0.68, 0.72]  # once the content stage bootstraps its rows, they show
    m["content"]["intervals"] = None
    shown = hybrid.hybrid_section(write(tmp_path, m))
    assert shown["table"]["head"][4:6] == ["test AUC", "95% interval"]
    assert shown["table"]["rows"][0][5]["text"] == "0.6800–0.7200"
