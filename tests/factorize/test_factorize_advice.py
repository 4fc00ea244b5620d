"""factorize's advice (issue 31): memory checked before the factors are allocated, a regularization too large
named as such, a split file's columns, a sweep without evaluation, too few warm items — each one line naming the
setting the user gave — and metrics that cannot be computed written as null, never as a bare NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import fails
from conftest import copy_run

from socialfeat import resources
from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.factorize.stage import factor_memory, factorize

FAST = ["--factors", "4", "--iterations", "2"]


@pytest.fixture
def run(demo_dataset: Path, tmp_path: Path) -> Path:
    return copy_run(demo_dataset, tmp_path / "run")


def strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def split_file(run: Path, path: Path, warm: int) -> Path:
    """A split file with the first ``warm`` items warm (train) and the rest cold, valid and test by turns."""
    ids = pq.read_table(run / "dataset" / "items.parquet").column("item_id").to_pylist()
    rows = [f"{i},{'train' if n < warm else ('valid' if n % 2 else 'test')}" for n, i in enumerate(ids)]
    path.write_text("item_id,split\n" + "\n".join(rows) + "\n")
    return path


# ------------------------------------------------------------------------------------------- memory (case 16)
def test_factors_too_many_for_memory_is_one_line_before_any_allocation(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = fails(["factorize", str(run), "--factors", "1000000"], capsys)
    assert line.startswith("error: --factors: 1,000,000 factors for 300 users and 400 items"), line
    assert "GiB is available; lower factorize.factors (--factors)" in line
    line = fails(["factorize", str(run), "--set", "factorize.factors=1000000"], capsys)
    assert line.startswith("error: --set factorize.factors=1000000: ")
    line = fails(["factorize", str(run), "--sweep", "factors=8,1000000"], capsys)
    assert line.startswith("error: --sweep: 1,000,000 factors") and line.endswith("lower factorize.sweep")
    assert not (run / "factors").exists()


def test_the_memory_check_uses_what_the_machine_has(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    room = resources.available_memory()
    assert room is None or room > 0
    assert factor_memory(100_000, 300, 400) == 4 * (3 * 100_000 * 700 + 100_000**2)  # 38.0 GiB: what failed
    monkeypatch.setattr(resources, "available_memory", lambda: 1024**2)  # 1 MiB left
    with pytest.raises(UserError) as e:
        factorize(load_config(None, ["factorize.factors=200"]), run)
    assert e.value.where == "--set factorize.factors=200" and "but 1 MiB is available" in e.value.message


def test_a_feature_matrix_too_large_for_memory_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from socialfeat.measures.coldstart import check_feature_memory

    check_feature_memory("learned", 1000, 64)  # 0.5 MB: fits anywhere
    monkeypatch.setattr(resources, "available_memory", lambda: 1024**3)
    with pytest.raises(UserError) as e:
        check_feature_memory("imagenet", 423_000, 1280)
    assert e.value.where == "features/imagenet.parquet"
    assert e.value.message.startswith("423,000 items × 1,280 float32 features") and "leave this source out" in (
        e.value.message
    )


# ------------------------------------------------------------------------------------------- weak messages
def test_a_huge_regularization_says_it_is_too_large(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["factorize", str(run), *FAST, "--reg", "1e30", "--no-evaluate"], capsys)  # outside the range
    assert line.startswith("error: --regularization: expected a number from 0 to 1000000, got '1e30'"), line
    line = fails(["factorize", str(run), *FAST, "--reg", "1000000", "--no-evaluate"], capsys)  # inside: it collapses
    assert line.startswith("error: factorize.regularization: λ=") and "collapsed every factor to zero" in line, line
    assert "lower factorize.regularization (--reg" in line and "raise" not in line
    assert not (run / "factors").exists()


def test_a_split_file_without_its_columns_names_the_header_not_a_flag(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "split.csv"
    bad.write_text("id,split\nx,valid\n")
    line = fails(["factorize", str(run), "--cold-items", str(bad)], capsys)
    assert line.startswith(f"error: {bad}: no column 'item_id' (found: id, split)") and "rename its header" in line
    assert "map it with" not in line and "--cold-items NAME" not in line


def test_a_sweep_without_evaluation_names_where_each_was_given(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("factorize:\n  sweep: {factors: [4, 8]}\n  evaluate: false\n")
    line = fails(["factorize", str(run), "-c", str(cfg)], capsys)
    assert line == (f"error: {cfg}: factorize.sweep: the sweep needs the held-out evaluation, which {cfg}: "
                    "factorize.evaluate turns off; drop one of them")  # fmt: skip
    line = fails(["factorize", str(run), "--sweep", "factors=4", "--set", "factorize.evaluate=false"], capsys)
    assert line.startswith("error: --sweep: ") and "which --set factorize.evaluate=false turns off" in line


def test_too_few_warm_items_are_refused_or_noted(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["factorize", str(run), *FAST, "--cold-fraction", "0.999"], capsys)
    assert line == ("error: --cold-fraction: cold fraction 0.999 leaves 1 of 400 items warm (trained on); factorize "
                    "needs at least 2: make fewer items cold (split.cold_fraction)")  # fmt: skip
    # two warm items: factorize runs, says why its metrics are empty, and writes them as null
    split = split_file(run, tmp_path / "two.csv", warm=2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        from socialfeat.cli import main

        main(["factorize", str(run), *FAST, "--cold-items", str(split)])
    assert e.value.code == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"warning: {split} leaves only 2 of 400 items warm (trained on)" in err, err
    assert "make fewer items cold (split.cold_items)" in err
    metrics = strict_json((run / "factors" / "metrics.json").read_text())
    assert metrics["heldout"]["model"]["auc"] is None  # NaN before: no user has an unseen warm item to rank


def test_empty_content_sources_are_refused_not_replaced_by_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    for argv, where in (
        (["--sources", ","], "--sources"),
        (["--sources="], "--sources"),
        (["--set", "content.sources=[]"], "--set content.sources=[]"),
    ):
        line = fails(["content", str(run), *argv], capsys)
        assert line.startswith(f"error: {where}: no content source to fit: name at least one of learned"), line
    from socialfeat.content import content

    with pytest.raises(UserError) as e:  # the stage itself never takes [] for "the default"
        content(load_config(None, []), run)
    assert e.value.where == "content.sources"
