"""Generated malformed inputs through ``ingest``, configs, ``embed --images``, ``recommend --image`` and the explorer's
upload: never a traceback, exit 0 or 2 with one ``error:`` line, nothing half-written, never a 500. A small
derandomized sample per command (reproducible in CI); ``bench/fuzz.py`` runs the same strategies at ≥ 1,000 cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fuzzing import (
    Case,
    Outcome,
    config_cases,
    embed_cases,
    ingest_cases,
    judge_exit,
    judge_outputs,
    recommend_cases,
    run_cli,
    run_upload,
    upload_cases,
)
from hypothesis import HealthCheck, event, given, settings

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible, a failure replays
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def fuzz_run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the trained tiny run: ``embed --images`` writes image caches (and an export) into it."""
    return Path(shutil.copytree(embedded_run, tmp_path_factory.mktemp("fuzz-run") / "run"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check(outcome: Outcome) -> None:
    """The case kept every promise; ``--hypothesis-show-statistics`` shows how the sample split between outcomes."""
    event(f"exit {outcome.code}")
    explain = f"{outcome.case.summary}\n  argv: {outcome.case.argv}\n  " + "\n  ".join(outcome.problems)
    assert outcome.ok, explain


@settings(FUZZ, max_examples=25)
@given(case=ingest_cases())
def test_ingest_survives_malformed_tables(case: Case, work: Path) -> None:
    check(run_cli(case, work))


@settings(FUZZ, max_examples=25)
@given(case=config_cases())
def test_configs_and_set_values_fail_in_one_line(case: Case, work: Path) -> None:
    check(run_cli(case, work))


@settings(FUZZ, max_examples=20)
@given(case=embed_cases())
def test_embed_images_survives_malformed_images_and_tables(case: Case, work: Path, fuzz_run: Path) -> None:
    check(run_cli(case, work, fuzz_run))


@settings(FUZZ, max_examples=20)
@given(case=recommend_cases())
def test_recommend_image_survives_malformed_images(case: Case, work: Path, fuzz_run: Path) -> None:
    check(run_cli(case, work, fuzz_run))


@settings(FUZZ, max_examples=30)
@given(case=upload_cases())
def test_upload_answers_4xx_never_500(case: Case, client) -> None:  # noqa: ANN001
    check(run_upload(case, client))


# ------------------------------------------------------------------------------------------------ the checker itself
def test_checker_catches_tracebacks_extra_lines_and_leftovers(tmp_path: Path) -> None:
    assert judge_exit(0, "") == [] and judge_exit(2, "warning: 3 rows dropped\nerror: x: y\n") == []
    assert judge_exit(1, "Traceback (most recent call last):\n  boom\n")  # a traceback and exit 1
    assert judge_exit(2, "error: x: first line\nsecond line\n")  # the message spans two lines
    assert judge_exit(2, "error: a\nerror: b\n")  # two errors
    assert judge_exit(0, "error: x\n")
    assert judge_exit(2, "error: x: " + "y" * 3000)  # a reason buried under an echoed value
    assert judge_exit(2, "error: x: \x00user_id missing")  # an echoed control character: invisible on a terminal
    case = Case("ingest", "t", out="run/dataset")
    (tmp_path / "run" / "dataset").mkdir(parents=True)  # a folder without stats.json: half-written
    (tmp_path / ".dataset.tmp-123").mkdir()
    problems = judge_outputs(case, tmp_path, {}, 0, None)
    assert any("incomplete" in p for p in problems) and any("leftovers" in p for p in problems)
    assert judge_outputs(case, tmp_path, {"gone.csv": "x"}, 2, None)[0].startswith("inputs changed")
