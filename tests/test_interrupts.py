"""Ctrl-C during a stage: one line saying what was kept, exit 130, never a traceback; nothing half-written.

Real SIGINTs to a real process: ingest is interrupted while DuckDB reads a large log (DuckDB turns the signal into
its own ``Query interrupted`` error), train at a chosen step by its fault-injection hook."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from socialfeat.config import load_config
from socialfeat.factorize.stage import factorize
from socialfeat.targets.stage import targets
from socialfeat.train import KILL_ENV, SIGNAL_ENV

TINY = [
    "--backbone", "socialfeat_tiny", "--weights", "random", "--image-size", "32", "--workers", "0",
    "--batch-size", "32", "--set", "train.threads=1",
]  # fmt: skip


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "socialfeat", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log DuckDB takes a second or two to read: time for a signal to land mid-query."""
    log = tmp_path_factory.mktemp("log") / "big.csv"
    duckdb.sql(
        "COPY (SELECT 'u' || (i % 50000) AS user_id, 'i' || (i % 997) AS item_id, 'view' AS event "
        f"FROM range(6000000) t(i)) TO '{log}' (HEADER)"
    )
    return log


def ingest_mid_query(log: Path, out: Path, sig: signal.Signals) -> tuple[int | None, str]:
    """Start ingest, send ``sig`` once its query runs (its temporary folder exists), return (exit code, stderr)."""
    proc = start("ingest", "--interactions", str(log), "--out", str(out))
    deadline = time.monotonic() + 60
    while not list(out.parent.glob(f".{out.name}.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_a_killed_ingest_leaves_temporaries_the_next_ingest_removes(big_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "run" / "dataset"
    code, _ = ingest_mid_query(big_log, out, signal.SIGKILL)
    if code == 0:
        pytest.skip("ingest finished before the kill arrived (a fast machine)")
    assert code == -signal.SIGKILL and list(out.parent.glob(".dataset.tmp-*"))  # SIGKILL: nothing can clean up
    small = tmp_path / "small.csv"
    small.write_text("user_id,item_id\nu1,i1\nu2,i1\n")
    subprocess.run([sys.executable, "-m", "socialfeat", "ingest", "--interactions", str(small), "--out", str(out),
                    "--set", "filter.min_user_interactions=1", "--set", "filter.min_item_interactions=1"],
                   check=True, capture_output=True)  # fmt: skip
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset"]


def test_ctrl_c_during_ingest_keeps_nothing(big_log: Path, tmp_path: Path) -> None:
    code, err = ingest_mid_query(big_log, tmp_path / "run" / "dataset", signal.SIGINT)
    if code == 0:
        pytest.skip("ingest finished before the interrupt arrived (a fast machine)")
    assert code == 130, err
    assert err.strip().splitlines() == ["interrupted: nothing was written; earlier outputs are as they were"]
    assert not (tmp_path / "run").exists()  # the folder it created for the dataset is gone too


@pytest.fixture(scope="module")
def warm_run(demo_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("interrupt") / "run"
    shutil.copytree(demo_dataset / "dataset", run / "dataset")
    factorize(load_config(None, ["factorize.factors=8", "factorize.evaluate=false", "split.cold_fraction=0.2"]), run)
    targets(load_config(None, ["targets.clusters=4", "targets.targets=[factors]"]), run)
    return run


@pytest.mark.parametrize(
    ("every", "kept"),
    [
        ("2", "interrupted: the checkpoint at epoch 1, step 2 was kept in {run}/.train; continue with: "
              "socialfeat train {run} --resume -c {run}/.train/checkpoint/config.yaml"),
        ("0", "interrupted: no checkpoint was written yet; {run}/model is as it was"),
    ],
)  # fmt: skip
def test_ctrl_c_during_train_says_what_was_kept(warm_run: Path, tmp_path: Path, every: str, kept: str) -> None:
    run = Path(shutil.copytree(warm_run, tmp_path / "run"))
    args = [*TINY, "--epochs", "3", "--targets", "factors", "--checkpoint-every", every]
    proc = start("train", str(run), *args, env={KILL_ENV: "3", SIGNAL_ENV: "INT"})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == kept.format(run=run)
    assert "Traceback" not in err and not (run / "model").exists()
