"""The report's "Hybrid cold start" section: the content model's rows from ``eval/metrics.json`` as a table and a
stacked chart (bar = test AUC − 0.5, one segment per source in proportion to the fusion weights), the test items
missing a source counted; without a content model it says how to get one, and a broken file costs only the section."""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from socialfeat.config import load_config
from socialfeat.report import hybrid as hybrid_module
from socialfeat.report import report
from socialfeat.report.plots import stacked_bars

SPLIT = {"train": 320, "valid": 20, "test": 60}
PEER = {"name": "LightFM (WARP), item features: text + tags", "auc": 0.61, "recall@20": 0.4, "ndcg@20": 0.3}


def content_row(sources: list[str], auc: float, weights: dict[str, float] | None, missing: int = 0, **extra: Any):
    """A row of eval/metrics.json's content section, as ``evaluate`` writes it."""
    group = {1: "single", 2: "pair"}.get(len(sources), "all")
    scores = {"valid_auc": auc + 0.01, "auc": auc, "recall@20": auc / 2, "ndcg@20": auc / 3, "users": 250}
    return {
        "sources": sources,
        "weights": weights,
        **scores,
        "test_items_missing_a_source": missing,
        "group": group,
    } | {
        "name": " + ".join(sources),
        **extra,
    }


def section() -> dict[str, Any]:
    rows = [
        content_row(["learned"], 0.64, {"learned": 1.0}),
        content_row(["tags"], 0.66, {"tags": 1.0}, missing=3),
        content_row(["imagenet"], 0.6, {"imagenet": 1.0}),
        content_row(["imagenet", "tags"], 0.7, {"imagenet": 0.25, "tags": 0.75}, missing=3),
        content_row(["imagenet", "learned"], 0.65, {"imagenet": 0.5, "learned": 0.5}),
        content_row(["learned", "tags"], 0.67, None, model="joint", name="learned + tags · joint"),
        content_row(["learned", "text", "tags"], 0.72, {"learned": 0.5, "text": 0.0, "tags": 0.5}, missing=3),
    ]
    notes = ["tags: 5 tags of cold items are not in the warm vocabulary"]
    return {"from": "content/metrics.json", "k": 20, "split": SPLIT, "rows": rows, "peer": PEER, "model": None} | {
        "test_items_missing_a_source": 3,
        "notes": notes,
    }


def make_run(tmp_path: Path, content: dict[str, Any] | None, notes: tuple[str, ...] = (), model: bool = True) -> Path:
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    metrics = {"k": 20, "split": {**SPLIT, "users_evaluated": 250}, "rows": [], "references": [], "notes": list(notes)}
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics | ({"content": content} if content else {})))
    if model:
        (run / "content").mkdir()
        (run / "content" / "metrics.json").write_text(json.dumps({"rows": []}))
    return run


def hybrid_html(run: Path) -> str:
    html = report(load_config(None, []), run).read_text()
    m = re.search(r'<section id="hybrid">(.*?)</section>', html, re.S)
    assert m, "no hybrid section"
    return m.group(1)


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_the_section_has_the_table_the_chart_and_the_missing_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[tuple] = []

    def spy(groups, colors, xlabel, vlines=None):  # noqa: ANN001, ANN202
        drawn.append((groups, colors, vlines))
        return stacked_bars(groups, colors, xlabel, vlines)

    monkeypatch.setattr(hybrid_module.plots, "stacked_bars", spy)
    html = hybrid_html(make_run(tmp_path, section()))
    text = text_of(html)
    assert "<h2>Hybrid cold start</h2>" in html and "not available" not in text

    # the chart, embedded as a PNG data URI
    uri = re.search(r'<img class="chart" src="(data:image/png;base64,[^"]+)"', html)
    assert uri and base64.b64decode(uri.group(1).split(",", 1)[1]).startswith(b"\x89PNG")
    (groups, colors, vlines) = drawn[0]
    assert [title for title, _ in groups] == ["alone", "pairs", "all together"]
    bars = {bar.label: bar for _, stacks in groups for bar in stacks}
    assert [bar.label for bar in groups[1][1]] == ["ImageNet + tags", "learned + tags · joint", "ImageNet + learned"]
    assert bars["ImageNet + tags"].segments == [("imagenet", pytest.approx(0.05)), ("tags", pytest.approx(0.15))]
    assert [k for k, _ in bars["learned + text + tags"].segments] == ["learned", "tags"]  # text: weight 0, no segment
    assert [k for k, _ in bars["learned + tags · joint"].segments] == ["?"]  # no weights nor shares: one grey segment
    assert {label for label, bar in bars.items() if bar.bold} == {"learned", "ImageNet", "ImageNet + learned"}
    assert sum(length for _, length in bars["learned + text + tags"].segments) == pytest.approx(0.22)
    assert vlines == {
        "best image alone (ImageNet + learned, 0.650)": pytest.approx(0.15),
        "LightFM (WARP) peer (0.610)": pytest.approx(0.11),
    }
    assert "3 of 60 test items miss at least one source" in text

    # the table: every row, best first within its group, weights, the peer as a reference row
    rows = re.findall(r"<tr( class=\"ref\")?>(.*?)</tr>", html.split("<tbody>")[1], re.S)
    cells = [[text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for _, r in rows]
    assert [c[1] for c in cells] == [
        "tags",
        "learned",
        "ImageNet",
        "ImageNet + tags",
        "learned + tags · joint",
        "ImageNet + learned",
        "learned + text + tags",
        PEER["name"],
    ]
    assert [c[0] for c in cells] == ["alone", "", "", "pairs", "", "", "all together", "peer"]
    assert cells[3][2] == "ImageNet 0.25 · tags 0.75" and cells[6][2] == "learned 0.50 · text 0 · tags 0.50"
    assert [c[7] for c in cells[:7]] == ["3", "0", "0", "3", "0", "0", "3"]
    assert rows[-1][0] and "<b>0.7200</b>" in html  # the best test AUC in bold; the peer is a reference
    assert "5 tags of cold items are not in the warm vocabulary" in text


def test_without_a_content_model_the_section_says_how_to_get_one(tmp_path: Path) -> None:
    run = make_run(tmp_path, None, model=False)
    text = text_of(hybrid_html(run))
    assert "not available" in text and f"socialfeat content {run}" in text and f"socialfeat evaluate {run}" in text


def test_a_content_model_the_evaluation_left_out_says_why(tmp_path: Path) -> None:
    note = "content model: content/ is older than factors/ (fit on earlier factors); rerun `socialfeat content R`"
    text = text_of(hybrid_html(make_run(tmp_path, None, notes=(note,))))
    assert "not available" in text and "older than factors/" in text and "socialfeat evaluate" in text


@pytest.mark.parametrize("broken", ["file", "rows"])
def test_a_broken_file_costs_only_the_section(tmp_path: Path, broken: str) -> None:
    run = make_run(tmp_path, {"rows": [{"sources": ["tags"], "group": "single"}]} if broken == "rows" else None)
    if broken == "file":
        (run / "eval" / "metrics.json").write_text("{not json")
    html = report(load_config(None, []), run).read_text()
    assert "could not read its inputs" in text_of(re.search(r'<section id="hybrid">(.*?)</section>', html, re.S)[1])
    assert '<section id="config">' in html


def test_a_joint_fit_is_split_by_its_variance_shares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[tuple] = []
    monkeypatch.setattr(hybrid_module.plots, "stacked_bars", lambda groups, *a, **k: drawn.append(groups) or "")
    content = section()
    joint = next(r for r in content["rows"] if r.get("model") == "joint")
    joint["shares"] = {"learned": 0.25, "tags": 0.75}
    hybrid_html(make_run(tmp_path, content))
    bars = {bar.label: bar for _, stacks in drawn[0] for bar in stacks}
    assert bars["learned + tags · joint"].segments == [
        ("learned", pytest.approx(0.0425)),
        ("tags", pytest.approx(0.1275)),
    ]


def test_intervals_and_the_differences_are_stated_plainly(tmp_path: Path) -> None:
    content = section()
    for r in content["rows"]:
        r["auc_ci"] = [r["auc"] - 0.02, r["auc"] + 0.02]
    PEER_CI = [0.59, 0.63]  # noqa: N806
    content["peer"] = PEER | {"auc_ci": PEER_CI}
    content["sample"] = {"users": 250, "of": 900, "text": "AUC over 250 of 900 users, seed 0"}
    content["bootstrap"] = {"resamples": 1000}
    content["differences"] = [
        {"a": "learned + text + tags · late fusion", "b": "tags", "label": "full model − best without the image"}
        | {"diff": 0.06, "ci": [0.03, 0.09], "contains_zero": False},
        {"a": "learned + text + tags · late fusion", "b": "imagenet + text + tags · late fusion"}
        | {"label": "learned − ImageNet (full models)", "diff": 0.004, "ci": [-0.003, 0.011], "contains_zero": True},
    ]
    shown = hybrid_module.hybrid_section(make_run(tmp_path, content))
    assert shown["table"]["head"][4:6] == ["test AUC", "95% interval"]
    cells = {r[1]["text"]: r for r in shown["table"]["rows"]}
    assert cells["learned + text + tags"][5]["text"] == "0.7000–0.7400"
    assert cells[PEER["name"]][5]["text"] == "0.5900–0.6300"  # LightFM on the same users: its interval too
    assert "AUC over 250 of 900 users, seed 0" in shown["table"]["caption"]
    assert "paired bootstrap over the same users and test items (1,000 resamples)" in shown["table"]["caption"]
    said = shown["differences"]
    assert "full model − best without the image: +0.0600 (95% interval +0.0300 to +0.0900), which excludes 0" in said
    assert (
        "learned − ImageNet (full models): +0.0040 (95% interval −0.0030 to +0.0110), which contains 0: not "
        "distinguishable from noise" in said
    )
    text = text_of(hybrid_html(tmp_path / "run"))
    assert "which contains 0: not distinguishable from noise" in text
