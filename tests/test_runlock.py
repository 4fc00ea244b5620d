"""One writer per run: a second process that writes a run another one is writing is refused with one line naming
the PID that holds it, exit 2, and nothing is changed; read-only commands work meanwhile; the lock dies with its
process; within one process the lock is re-entrant (``run`` calls the stages)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok

from socialfeat import runlock
from socialfeat.errors import UserError

HOLD = (
    "import sys\n"
    "from socialfeat.runlock import locked\n"
    "with locked(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.readline()  # held until the test writes a line (or kills this process)\n"
)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _env() -> dict[str, str]:
    src = str(Path(runlock.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "COLUMNS": "300"}


@pytest.fixture
def holder() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Start another process that holds a run's lock; it is ended after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(run: Path) -> subprocess.Popen[str]:
        env = {k: v for k, v in _env().items() if k != "RANK"}
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def run(embedded_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(embedded_run, tmp_path / "run"))


def test_a_second_writer_is_refused_naming_the_pid_and_readers_still_work(
    run: Path,
    platform: Path,
    tmp_path: Path,
    holder: Callable[[Path], subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"ingest:\n  interactions: {platform / 'interactions.csv'}\n")
    proc = holder(run)
    before = snapshot(run)
    for argv in (
        ["factorize", str(run)],
        ["targets", str(run)],
        ["train", str(run), "--epochs", "1"],
        ["embed", str(run), "--source", "random"],
        ["index", str(run)],
        ["evaluate", str(run)],
        ["report", str(run)],
        ["export", str(run)],
        ["run", str(config), "--run", str(run)],
    ):
        line = fails(argv, capsys)
        assert line.startswith(f"error: {run}: in use by another socialfeat process, PID {proc.pid} ("), (
            argv,
            line,
        )
        assert "nothing was changed" in line and "wait for it to finish" in line
    item = pq.read_table(run / "dataset" / "items.parquet", columns=["item_id"]).column(0)[0].as_py()
    user = pq.read_table(run / "dataset" / "users.parquet", columns=["user_id"]).column(0)[0].as_py()
    assert snapshot(run) == before
    ok(["similar", str(run), str(item)])  # read-only commands take no lock (an index they build is atomic)
    ok(["recommend", str(run), "--user", str(user)])
    proc.kill()  # killed, not released: the kernel drops its flock with it
    proc.wait()
    with runlock.locked(run):
        assert json.loads((run / runlock.LOCK).read_text())["pid"] == os.getpid()
    assert not (run / runlock.LOCK).exists()  # released: nothing is left in the run


def test_a_second_cli_process_is_refused_while_this_one_writes(run: Path) -> None:
    """The other way round, as two shells would: this process holds the run, `socialfeat factorize` in another
    process exits 2 with the one line naming this PID."""
    env = {k: v for k, v in _env().items() if k != "RANK"}
    with runlock.locked(run):
        done = subprocess.run(
            [sys.executable, "-m", "socialfeat", "factorize", str(run)], capture_output=True, text=True, env=env
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {run}: in use by another socialfeat process, PID {os.getpid()} ("
    ), lines


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    seen: list[int] = []

    @runlock.writes_run()
    def stage(config: object, run: Path) -> None:
        seen.append(json.loads((run / runlock.LOCK).read_text())["pid"])

    @runlock.writes_run(lambda _a: None)
    def pipeline(run: Path) -> None:
        runlock.take(run)
        stage(None, run)
        stage(None, run=run)

    pipeline(run)
    assert seen == [os.getpid(), os.getpid()]
    assert not (run / runlock.LOCK).exists() and not runlock._held


def test_a_failed_stage_lets_go_of_the_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()

    @runlock.writes_run()
    def stage(run: Path) -> None:
        raise UserError("x", "failed")

    with pytest.raises(UserError):
        stage(run)
    assert not runlock._held and list(run.iterdir()) == []
    stage_ok = runlock.writes_run()(lambda run: None)
    stage_ok(run)


def test_only_rank_zero_takes_the_lock_and_a_missing_run_takes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun's ranks are one writer: the others take no lock (they would refuse rank 0's)."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("RANK", "1")
    with runlock.locked(run):
        assert not (run / runlock.LOCK).exists()
    monkeypatch.setenv("RANK", "0")
    with runlock.locked(tmp_path / "missing"):
        assert not (tmp_path / "missing").exists()


def test_ingest_into_a_run_being_written_is_refused(
    run: Path, platform: Path, holder: Callable[[Path], subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    proc = holder(run)
    before = snapshot(run)
    args = ["ingest", "--interactions", str(platform / "interactions.csv"), "--items", str(platform / "items.csv")]
    line = fails([*args, "--out", str(run / "dataset")], capsys)
    assert f"PID {proc.pid}" in line
    assert snapshot(run) == before
    proc.send_signal(signal.SIGTERM)
