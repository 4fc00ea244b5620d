"""Ctrl-C during a stage: one line saying what was kept, exit 130, never a traceback; nothing half-written.

Real SIGINTs to a real process, sent at a point the test waits for, never after a fixed delay. Ingest is interrupted
once it starts reading a large log (DuckDB turns the signal into its own ``Query interrupted`` error); train at a
chosen step by its fault-injection hook."""

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
from environment import need

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


# The CLI in a child that touches a marker file as ingest starts its DuckDB read of the log (the phase the
# spinner calls "reading interactions"): the test signals once the marker exists, not after a guessed delay.
MARKED_INGEST = """
import sys
from pathlib import Path

import socialfeat.data.ingest as ingest
from socialfeat.cli import main

marker, aggregate = Path(sys.argv[1]), ingest._aggregate


def marked(*args, **kwargs):
    marker.touch()
    return aggregate(*args, **kwargs)


ingest._aggregate = marked
main(sys.argv[2:])
"""


def ingest_mid_query(log: Path, out: Path, sig: signal.Signals) -> tuple[int | None, str]:
    """Start ingest, send ``sig`` once it reads the log (its marker exists), return (exit code, stderr).

    The read of 6 million rows takes seconds and the signal follows the marker within a poll: an ingest that
    finished first is an environment fault (a far faster machine), failed under ``SOCIALFEAT_REQUIRE_ALL``."""
    marker = out.parent.parent / "reading.marker"  # beside the run folder: ingest must not see it
    argv = ["ingest", "--interactions", str(log), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", MARKED_INGEST, str(marker), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert marker.exists(), f"ingest never started reading the log: {proc.poll()=}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    need(proc.returncode != 0, "ingest finished before the signal arrived, though it was sent as reading began")
    return proc.returncode, err


def test_a_killed_ingest_leaves_temporaries_the_next_ingest_removes(big_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "run" / "dataset"
    code, _ = ingest_mid_query(big_log, out, signal.SIGKILL)
    assert code == -signal.SIGKILL and list(out.parent.glob(".dataset.tmp-*"))  # SIGKILL: nothing can clean up
    small = tmp_path / "small.csv"
    small.write_text("user_id,item_id\nu1,i1\nu2,i1\n")
    subprocess.run([sys.executable, "-m", "socialfeat", "ingest", "--interactions", str(small), "--out", str(out),
                    "--set", "filter.min_user_interactions=1", "--set", "filter.min_item_interactions=1"],
                   check=True, capture_output=True)  # fmt: skip
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset"]


def test_ctrl_c_during_ingest_keeps_nothing(big_log: Path, tmp_path: Path) -> None:
    code, err = ingest_mid_query(big_log, tmp_path / "run" / "dataset", signal.SIGINT)
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
