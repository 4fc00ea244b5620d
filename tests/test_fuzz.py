"""Generated malformed inputs through ``ingest``, configs, ``embed --images``, ``recommend --image`` and the explorer's
upload: never a traceback, exit 0 or 2 with one ``error:`` line, nothing half-written, never a 500. A small
derandomized sample per command (reproducible in CI); ``bench/fuzz.py`` runs the same strategies at ≥ 1,000 cases.
Then a bounded sample of the option fuzz (every option of every command, hostile values, foreign folders), of
the id-format fuzz, which ``bench/fuzz.py`` runs whole, and of the live fuzz (``add``, ``log`` and ``remove`` against a
text-id and an integer-id run: nothing half-added)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from fuzz_ids import IdCase, id_cases, run_id_case
from fuzz_live import LiveBench, LiveCase, add_cases, log_cases, remove_cases, run_live_case
from fuzz_options import Bench, OptionCase, option_cases, run_option_case, sample
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
    expect(outcome)


def expect(outcome: Outcome) -> None:
    """The case kept every promise (outside hypothesis: the option and id samples are parametrized)."""
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


# ------------------------------------------------------------------------------------------------ options and ids
OPTION_SAMPLE = sample(option_cases(), 45)  # spread over every command, the same cases on every run
ISSUE_IDS = {"int", "30 digits", "above int64", "float", "true", "exponent"}  # the issue's case 2, in JSON Lines


def _id_sample() -> list[IdCase]:
    cases = id_cases()
    picked = [c for c in cases if c.fmt == "jsonl" and c.column == "item_id" and c.kind.name in ISSUE_IDS]
    picked = [c for c in picked if not c.typed or c.kind.name == "int"][:6]
    rng = random.Random(31)
    for fmt in ("csv", "tsv", "parquet"):
        picked += rng.sample([c for c in cases if c.fmt == fmt], 3)
    return picked


@pytest.fixture(scope="module")
def option_bench(embedded_run: Path, platform: Path) -> Bench:
    """The trained tiny run and its platform: each case copies the run; neither is written."""
    return Bench.of(embedded_run, platform)


@pytest.mark.parametrize("case", OPTION_SAMPLE, ids=lambda c: f"{c.command} {c.summary}"[:80])
def test_hostile_option_values_fail_in_one_line_and_touch_nothing(
    case: OptionCase, work: Path, option_bench: Bench
) -> None:
    """Exit 0, 2 (one ``error:`` line) or 130 (the sample's Ctrl-C at 10 s); foreign files and links unchanged."""
    expect(run_option_case(case, work, option_bench, timeout=10))


@pytest.mark.parametrize("case", _id_sample(), ids=lambda c: c.case.summary[:80])
def test_ids_are_kept_literally_or_refused_in_one_line(case: IdCase, work: Path) -> None:
    expect(run_id_case(case, work))


# ------------------------------------------------------------------------------------------------ the live catalogue
@pytest.fixture(scope="module")
def live_bench(embedded_run: Path, platform: Path, tmp_path_factory: pytest.TempPathFactory) -> LiveBench:
    """A copy of the trained tiny run and an integer-id run of its platform, each with a live store."""
    return LiveBench.prepare(embedded_run, platform, tmp_path_factory.mktemp("live-fuzz"))


@pytest.mark.slow
@settings(FUZZ, max_examples=12)
@given(case=add_cases())
def test_live_add_refuses_a_bad_table_whole(case: LiveCase, work: Path, live_bench: LiveBench) -> None:
    check(run_live_case(case, work, live_bench))


@pytest.mark.slow
@settings(FUZZ, max_examples=15)
@given(case=log_cases())
def test_live_log_refuses_bad_events_whole(case: LiveCase, work: Path, live_bench: LiveBench) -> None:
    check(run_live_case(case, work, live_bench))


@pytest.mark.slow
@settings(FUZZ, max_examples=8)
@given(case=remove_cases())
def test_live_remove_refuses_bad_ids_whole(case: LiveCase, work: Path, live_bench: LiveBench) -> None:
    check(run_live_case(case, work, live_bench))
