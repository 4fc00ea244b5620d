"""SIGKILL during adds and events loses no acknowledged write and leaves nothing half-added (a short version of
bench/live.py's crash test; the harness is tests/live/crash.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import crash
import pytest

OVERRIDES = ["live.sources=[learned]"]


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_write(embedded_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    acks = tmp_path / "acks"
    _, finished = crash.run_round(run, acks, 0, 300, 3000, OVERRIDES, None)
    assert finished
    first = crash.check(run, acks, OVERRIDES)
    assert first.ok, first
    assert (first.acked_items, first.acked_events) == (300, 3000)
    killed, before = 0, first
    for round_, share in ((1, 0.2), (2, 0.5), (3, 0.8)):  # killed after this share of the round's writes
        ran, finished = crash.run_round(run, acks, round_, 300, 3000, OVERRIDES, share)
        killed += not finished
        got = crash.check(run, acks, OVERRIDES)
        assert got.ok, (round_, ran, got)
        assert got.store_items >= before.store_items and got.store_events >= before.store_events
        before = got
    assert killed == 3, "a round finished before its kill"


def test_read_acks_ignores_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "acks"
    path.write_text("i a b\ne e1 e2\ni c")
    assert crash.read_acks(path) == (["a", "b"], ["e1", "e2"])
