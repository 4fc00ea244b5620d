"""``socialfeat run`` and ``demo``: every stage in order, and only the stages whose inputs or config changed.

One small run is made once per module (a copy of the simulated platform inside a work folder, config paths
relative to it); each test copies the whole work folder (mtimes kept) and works in its copy."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from socialfeat import pipeline
from socialfeat.cli import main, out
from socialfeat.config import load_config, with_paths

STAGES = list(pipeline.RUN_STAGES)
LINE = re.compile(r"^([✓▶✗]) (\w+) +(up to date|[\d.]+ s|would run|failed after [\d.]+ s)(?: \((.*)\))?(?: \[.*\])?$")
ACTIONS = {"up to date": "skipped", "would run": "would run"}  # else "N s" (ran) or "failed after N s"
CONFIG = {
    "name": "t",
    "ingest": {
        "interactions": "platform/interactions.csv",
        "items": "platform/items.csv",
        "comments": "platform/comments.csv",
    },
    "split": {"cold_fraction": 0.2},
    "factorize": {"factors": 16, "alpha": 1, "evaluate": False},
    "targets": {"targets": ["factors", "factor-clusters"], "clusters": 6},
    "train": {
        "targets": ["factors", "factor-clusters"],
        "backbone": "socialfeat_tiny",
        "weights": "random",
        "finetune": "all",
        "image_size": 32,
        "epochs": 1,
        "batch_size": 32,
        "threads": 1,
    },
    "evaluate": {"ridge_lambdas": [1, 100, 10000], "max_queries": 200},
    "report": {"gallery_queries": 2},
}
ARTIFACTS = [
    "config.yaml",
    "dataset/interactions.parquet",
    "dataset/items.parquet",
    "factors/item_factors.parquet",
    "factors/item_split.parquet",
    "targets/factors.parquet",
    "targets/factor_clusters.parquet",
    "model/weights.safetensors",
    "model/metrics.jsonl",
    *(f"features/{s}.parquet" for s in ("learned", "imagenet", "random")),
    "features/learned.faiss",
    "features/learned.faiss.json",
    "eval/metrics.json",
    "report.html",
    *(f".pipeline/{s}.json" for s in STAGES),
]


def cli(*args: Any) -> int:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return int(exc.value.code or 0)


def stage_lines(text: str) -> dict[str, tuple[str, str]]:
    """stage → (action, reason) from the stage lines of the output; other lines are ignored."""
    found = {}
    for line in text.splitlines():
        m = LINE.match(line.rstrip())
        if m:
            action = ACTIONS.get(m[3]) or ("failed" if m[3].startswith("failed") else "ran")
            found[m[2]] = (action, m[4] or "")
    return found


def test_a_stage_line_says_what_happened_and_why_only_on_a_rerun() -> None:
    line = pipeline.stage_line
    assert line(pipeline.StageOutcome("simulate", "ran", "not run yet", 9.62)) == "▶ simulate   9.6 s"
    assert line(pipeline.StageOutcome("ingest", "skipped", "up to date")) == "✓ ingest     up to date"
    rerun = pipeline.StageOutcome("train", "ran", "train.epochs: 3 → 2", 12.1)
    assert line(rerun) == "▶ train      12.1 s (train.epochs: 3 → 2)"
    embed = pipeline.StageOutcome("embed", "ran", "after train", 33.6, {"learned": 9.1, "imagenet": 20.3})
    assert line(embed) == "▶ embed      33.6 s (after train) [learned 9.1 s · imagenet 20.3 s]"
    assert line(pipeline.StageOutcome("index", "would run", "not run yet")) == "▶ index      would run (not run yet)"
    assert line(pipeline.StageOutcome("evaluate", "failed", "--force", 3.04)) == "✗ evaluate   failed after 3.0 s"
    for o in (rerun, embed):
        assert stage_lines(line(o)) == {o.stage: ("ran", o.reason)}


def snapshot(run: Path) -> dict[str, int]:
    return {os.path.relpath(p, run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def base(platform: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A work folder (t.yaml, platform/, runs/t) after one complete ``socialfeat run t.yaml``, and its output."""
    work = tmp_path_factory.mktemp("pipeline") / "work"
    shutil.copytree(platform, work / "platform")
    (work / "t.yaml").write_text(yaml.safe_dump(CONFIG))
    with pytest.MonkeyPatch.context() as mp:  # capsys is per test: capture the console itself
        mp.chdir(work)
        with out.capture() as cap:
            code = cli("run", "t.yaml")
    assert code == 0
    return work, cap.get()


@pytest.fixture
def work(base: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the work folder, made the current folder (the run is ``runs/t``)."""
    copy = tmp_path / "work"
    shutil.copytree(base[0], copy)
    monkeypatch.chdir(copy)
    return copy


@pytest.mark.slow
def test_a_first_run_runs_every_stage_and_writes_every_artifact(base: tuple[Path, str]) -> None:
    work, text = base
    lines = stage_lines(text)
    assert list(lines) == STAGES
    assert all(action == "ran" and reason == "" for action, reason in lines.values())  # a first run: the time only
    run = work / "runs" / "t"
    for rel in ARTIFACTS:
        assert (run / rel).is_file(), rel
    recorded, given = load_config(run / "config.yaml"), load_config(work / "t.yaml")  # t.yaml: paths from work/
    assert with_paths(recorded, os.path.normpath) == with_paths(given, lambda p: os.path.normpath(work / p))
    marker = json.loads((run / ".pipeline" / "train.json").read_text())
    assert marker["config"]["train"]["epochs"] == 1
    assert marker["outputs"]["model/weights.safetensors"][1] == (run / "model/weights.safetensors").stat().st_mtime_ns
    assert set(json.loads((run / ".pipeline" / "embed.json").read_text())["steps"]) == {"learned", "imagenet", "random"}
    assert "8 of 8 stages ran" in text


def test_a_second_run_skips_every_stage_and_touches_nothing(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = work / "runs" / "t"
    before = snapshot(run)
    assert cli("run", "t.yaml") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert list(lines) == STAGES
    assert {action for action, _ in lines.values()} == {"skipped"}
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_changed_train_setting_reruns_train_and_everything_after(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = work / "runs" / "t"
    before = snapshot(run)
    assert cli("run", "t.yaml", "--set", "train.epochs=2") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert [s for s, (a, _) in lines.items() if a == "skipped"] == ["ingest", "factorize", "targets"]
    assert [s for s, (a, _) in lines.items() if a == "ran"] == STAGES[3:]
    assert lines["train"][1] == "train.epochs: 1 → 2"
    assert lines["embed"][1].startswith("after train")
    after = snapshot(run)
    for rel, mtime in before.items():
        if rel.split("/")[0] in ("dataset", "factors", "targets"):
            assert after[rel] == mtime, rel
    for rel in ("model/weights.safetensors", "features/learned.parquet", "eval/metrics.json", "report.html"):
        assert after[rel] > before[rel], rel
    assert len((run / "model" / "metrics.jsonl").read_text().splitlines()) == 3  # the start and 2 epochs
    assert "train:\n" in (run / "config.yaml").read_text() and "epochs: 2" in (run / "config.yaml").read_text()
    # and with the same setting again, nothing is left to do
    assert cli("run", "t.yaml", "--set", "train.epochs=2") == 0
    assert {a for a, _ in stage_lines(capsys.readouterr().out).values()} == {"skipped"}


@pytest.mark.slow
def test_a_newer_input_file_reruns_ingest_onwards(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = work / "runs" / "t"
    log = work / "platform" / "interactions.csv"
    newer = (run / "dataset" / "stats.json").stat().st_mtime + 10
    os.utime(log, (newer, newer))
    before = snapshot(run)
    assert cli("run", "t.yaml", "--dry-run") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert all(a == "would run" for a, _ in lines.values()) and list(lines) == STAGES
    assert lines["ingest"][1] == f"{os.path.relpath(log, run)} is newer"
    assert lines["factorize"][1] == "after ingest"
    assert snapshot(run) == before  # a dry run changes nothing
    assert cli("run", "t.yaml") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert [a for a, _ in lines.values()] == ["ran"] * len(STAGES)
    assert lines["ingest"][1] == f"{os.path.relpath(log, run)} is newer"
    after = snapshot(run)
    assert all(after[rel] > before[rel] for rel in ARTIFACTS if rel != "config.yaml")


def test_an_output_changed_behind_the_pipelines_back_reruns_its_stage(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = work / "runs" / "t"
    (run / "eval" / "metrics.json").unlink()
    os.utime(run / "model" / "model.json", None)  # e.g. `socialfeat train` rerun by hand: now newer than features/
    assert cli("run", "t.yaml", "-n") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert [s for s, (a, _) in lines.items() if a == "skipped"] == ["ingest", "factorize", "targets"]
    assert lines["train"][1] == "model/model.json changed since"
    (run / ".pipeline" / "train.json").unlink()
    assert cli("run", "t.yaml", "-n") == 0
    assert stage_lines(capsys.readouterr().out)["train"][1] == "no record"


def test_a_downstream_output_older_than_its_inputs_is_stale(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = work / "runs" / "t"
    # newer than every later output, however slowly the machine wrote them
    new = max(p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()) + 10**9
    os.utime(run / "features" / "learned.parquet", ns=(new, new))
    marker = run / ".pipeline" / "embed.json"  # recorded as it is now: only the index onwards is out of date
    record = json.loads(marker.read_text())
    record["outputs"]["features/learned.parquet"][1] = new
    marker.write_text(json.dumps(record))
    assert cli("run", "t.yaml", "-n") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert [s for s, (a, _) in lines.items() if a == "would run"] == ["index", "evaluate", "report"]
    assert lines["index"][1] == "features/learned.parquet is newer"


@pytest.mark.slow
def test_from_reruns_that_stage_and_the_later_ones_only(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = work / "runs" / "t"
    before = snapshot(run)
    assert cli("run", "t.yaml", "--from", "evaluate") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert [s for s, (a, _) in lines.items() if a == "ran"] == ["evaluate", "report"]
    assert lines["evaluate"][1] == "--from evaluate"
    after = snapshot(run)
    changed = {rel for rel in before if after.get(rel) != before[rel]}
    assert changed and all(rel.split("/")[0] in ("eval", "report.html", ".pipeline") for rel in changed), changed
    assert {".pipeline/evaluate.json", ".pipeline/report.json", "eval/metrics.json", "report.html"} <= changed


@pytest.mark.slow
def test_force_reruns_every_stage(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = work / "runs" / "t"
    before = snapshot(run)
    assert cli("run", "t.yaml", "--force", "--dry-run") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert list(lines) == STAGES
    assert set(lines.values()) == {("would run", "--force")}
    assert snapshot(run) == before
    assert cli("run", "t.yaml", "--force") == 0
    assert set(stage_lines(capsys.readouterr().out).values()) == {("ran", "--force")}
    after = snapshot(run)
    assert all(after[rel] > before[rel] for rel in ARTIFACTS if rel != "config.yaml")


@pytest.mark.slow
def test_a_dataset_reingested_by_hand_is_refused_downstream_and_run_rebuilds_from_it(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ingest --out RUN/dataset`` from other logs: a stage called by hand refuses (one line naming the stage to
    rerun), ``run`` sees the dataset changed behind its back and reruns every stage after it, and succeeds."""
    run = work / "runs" / "t"
    logs = work / "platform" / "interactions.csv"
    rows = logs.read_text(encoding="utf-8").splitlines()
    edited = work / "edited.csv"
    edited.write_text("\n".join(r for r in rows if ",i00001," not in r and ",i00002," not in r) + "\n")
    items = work / "platform" / "items.csv"
    assert cli("ingest", "--interactions", edited, "--items", items, "--out", run / "dataset") == 0
    capsys.readouterr()
    assert cli("train", run) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / 'factors'}: made from an older dataset/ (re-ingested since); rerun: ")
    assert "socialfeat factorize" in err and "\n" not in err
    assert cli("run", "t.yaml") == 0
    lines = stage_lines(capsys.readouterr().out)
    assert [a for a, _ in lines.values()] == ["ran"] * len(STAGES)
    assert lines["ingest"][1].startswith("dataset/") and lines["factorize"][1] == "after ingest"
    assert cli("recommend", run, "--user", "u0004") == 0


def test_a_failing_stage_exits_2_in_one_line_and_keeps_what_came_before(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = work / "runs" / "t"
    markers = {s: (run / ".pipeline" / f"{s}.json").read_text() for s in STAGES}
    model = (run / "model" / "weights.safetensors").read_bytes()
    assert cli("run", "t.yaml", "--set", "train.backbone=nonexistent") == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [captured.err.strip()]
    assert captured.err.startswith("error: train.backbone: unknown timm model 'nonexistent'")
    lines = stage_lines(captured.out)
    assert [lines[s][0] for s in STAGES[:4]] == ["skipped", "skipped", "skipped", "failed"]
    assert "embed" not in lines
    for stage, text in markers.items():  # a failure never deletes an earlier success's record, its own included
        assert (run / ".pipeline" / f"{stage}.json").read_text() == text
    assert (run / "model" / "weights.safetensors").read_bytes() == model  # the previous model is intact
    assert cli("run", "t.yaml", "-n") == 0  # and it is still current for the config that made it
    assert {a for a, _ in stage_lines(capsys.readouterr().out).values()} == {"skipped"}


def test_a_failing_ingest_keeps_its_record_and_nothing_reruns_after_it(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case 5: a failed ingest deleted .pipeline/ingest.json, so every stage reran afterwards."""
    run = work / "runs" / "t"
    marker = (run / ".pipeline" / "ingest.json").read_text()
    assert cli("run", "t.yaml", "--from", "ingest", "--set", "ingest.columns.user=nope") == 2
    assert (run / ".pipeline" / "ingest.json").read_text() == marker
    assert cli("run", "t.yaml", "-n") == 0
    assert {a for a, _ in stage_lines(capsys.readouterr().out).values()} == {"skipped"}


def test_a_run_works_from_any_folder_through_its_recorded_config(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case 5: RUN/config.yaml names its inputs relative to itself, so the printed rerun works from
    another folder and finds every stage current."""
    from socialfeat.artifacts import pipeline_command

    run = work / "runs" / "t"
    recorded = (run / "config.yaml").read_text()
    assert (
        recorded.startswith("# written by socialfeat") and "interactions: ../../platform/interactions.csv" in recorded
    )
    before = snapshot(run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = pipeline_command(Path("../work/runs/t"))
    assert argv == f"socialfeat run {run}/config.yaml --run {run}"  # absolute: it works as printed from anywhere
    assert cli(*argv.split()[1:]) == 0
    assert {a for a, _ in stage_lines(capsys.readouterr().out).values()} == {"skipped"}
    assert snapshot(run) == before and not (elsewhere / "runs").exists()


def test_user_mistakes_are_one_line_errors(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("run", "t.yaml", "--from", "simulate") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --from: expected one of ingest, factorize") and "\n" not in err
    (work / "empty.yaml").write_text("name: e\n")
    assert cli("run", "empty.yaml") == 2
    assert capsys.readouterr().err.startswith("error: ingest.interactions: not set")
    assert cli("run", "missing.yaml") == 2
    assert "config file not found" in capsys.readouterr().err
    (work / "runs" / "file").write_text("")
    assert cli("run", "t.yaml", "--run", "runs/file") == 2
    assert "is a file" in capsys.readouterr().err


def test_the_run_folder_can_be_given(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.move(work / "runs" / "t", work / "elsewhere")
    assert cli("run", "t.yaml", "--run", "elsewhere", "-n") == 0
    text = capsys.readouterr().out
    assert {a for a, _ in stage_lines(text).values()} == {"skipped"}, text
    assert not (work / "runs" / "t").exists()


def test_the_headline_averages_the_taste_probes() -> None:
    metrics = {
        "rows": [
            {
                "name": "learned · pooled",
                "coldstart": {"auc": 0.7},
                "retrieval": {"lift": 1.5},
                "probes": {
                    "palette": {"all": 0.9},
                    "texture": {"all": 0.6},
                    "composition": {"all": 0.3},
                    "object": {"all": 0.0},  # not a taste attribute: left out
                },
            },
            {"name": "metadata", "coldstart": {"auc": 0.6}, "retrieval": {"lift": None}},
        ]
    }
    rows = pipeline.headline(metrics)
    assert rows[0] == {"name": "learned · pooled", "auc": 0.7, "lift": 1.5, "taste_probe": pytest.approx(0.6)}
    assert rows[1] == {"name": "metadata", "auc": 0.6, "lift": None, "taste_probe": None}


def test_the_packaged_demo_config_is_the_repositorys_with_paths_inside_the_run(tmp_path: Path) -> None:
    repo = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").model_dump(mode="json")
    packaged = pipeline.demo_config(tmp_path / "d").model_dump(mode="json")
    for section, name in (key.split(".") for key in pipeline.DEMO_PATHS):
        assert packaged[section][name] == str(tmp_path / "d" / "platform" / Path(packaged[section][name]).name)
        repo[section][name] = packaged[section][name]
    for ours, theirs in zip(packaged["transfer"]["sets"], repo["transfer"]["sets"], strict=True):
        assert ours["labels"] == str(tmp_path / "d" / pipeline.HELDOUT / "labels.csv")
        assert ours["image_root"] == str(tmp_path / "d" / pipeline.HELDOUT)
        theirs.update(labels=ours["labels"], image_root=ours["image_root"])
    assert packaged == repo
    small = pipeline.demo_config(tmp_path / "d", small=True, overrides=["train.epochs=1"])
    assert small.train.backbone == "socialfeat_tiny" and small.train.epochs == 1 and small.simulate.n_items == 400


@pytest.mark.slow
def test_demo_small_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("demo", "--small", "--out", "d") == 0
    text = capsys.readouterr().out
    lines = stage_lines(text)
    assert list(lines) == list(pipeline.STAGES) and {a for a, _ in lines.values()} == {"ran"}  # content included
    run = tmp_path / "d"
    content = json.loads((run / "content" / "metrics.json").read_text())
    assert ["learned", "text", "tags"] in [r["sources"] for r in content["rows"]]
    assert (run / "platform" / "labels.csv").is_file() and (run / "report.html").stat().st_size > 10_000
    assert "report: d/report.html" in text and re.search(r"^total [\d.]+ s$", text, re.M)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["settings"]["labels"] == "d/platform/labels.csv"
    for row in metrics["rows"]:
        if row["source"] in ("learned", "imagenet", "random", "metadata") and row["mapping"] == "ridge":
            taste = [row["probes"][a]["all"] for a in ("palette", "texture", "composition")]
            shown = re.search(rf"^\s*{re.escape(row['name'])}\s+(\S+)\s+(\S+)\s+(\S+)\s*$", text, re.M)
            assert shown, row["name"]
            assert shown.groups() == (
                f"{row['coldstart']['auc']:.3f}",
                f"{row['retrieval']['lift']:.2f}",
                f"{sum(taste) / 3:.3f}",
            )
    # the run it leaves is a normal run: `run` on its config.yaml finds everything current
    assert cli("run", "d/config.yaml", "--run", "d", "-n") == 0
    assert {a for a, _ in stage_lines(capsys.readouterr().out).values()} == {"skipped"}
