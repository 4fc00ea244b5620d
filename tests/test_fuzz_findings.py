"""What the option fuzzer of issue 31 found after the fixes were merged, each pinned as a test: one line, exit 2,
nothing made, nothing lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import duckdb
import pytest
from cli_helpers import fails

from socialfeat.errors import interrupts_held


@pytest.mark.parametrize("argv", [["demo", "--small", "--out", "{link}"], ["run", "{cfg}", "--run", "{link}"]])
def test_a_dangling_symlink_as_the_run_folder_is_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was FileExistsError from mkdir on the link (fuzz F3): the link stays, nothing is made where it points."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"name: p\ningest:\n  interactions: {tmp_path / 'log.csv'}\n")
    line = fails([a.format(link=link, cfg=cfg) for a in argv], capsys)
    assert "is a symbolic link to" in line and "which does not exist; nothing was changed" in line
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_embed_out_without_a_file_name_is_one_line(
    embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was a with_suffix ValueError (fuzz F6)."""
    table = tmp_path / "images.csv"
    table.write_text("image\nx.png\n")
    line = fails(["embed", str(embedded_run), "--images", str(table), "--out", ""], capsys)
    assert line.startswith("error: --out: expected a file name ending in .parquet for the feature file, got ")


def test_a_parquet_log_damaged_past_its_start_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Parquet log whose first pages decode but a later one does not failed deep in ingest with DuckDB's
    'TProtocolException: Invalid data' (fuzz, 2 of 400 ingest cases); it names the file, and no dataset is left."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from socialfeat.data import ingest as ingest_module

    log = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"]}), log)

    def damaged(*_args: object, **_kwargs: object) -> None:
        raise duckdb.Error("TProtocolException: Invalid data")

    monkeypatch.setattr(ingest_module, "_run", damaged)
    line = fails(["ingest", "--interactions", str(log), "--out", str(tmp_path / "out")], capsys)
    assert line == f"error: {log}: cannot be read past its start, it looks damaged: TProtocolException: Invalid data"
    assert not (tmp_path / "out").exists() and not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_a_ctrl_c_while_forking_is_held_then_delivered() -> None:
    """A Ctrl-C inside fork's after-fork callbacks was printed as 'Exception ignored' and lost (fuzz: 5 demo cases
    needed a second Ctrl-C); held, it arrives as soon as the fork is done."""
    import threading

    done = threading.Event()
    other = threading.Thread(target=done.wait)  # another thread the kernel may hand the signal to, as in a real run
    other.start()
    arrived = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # bytecodes enough for Python to run a pending handler
                    pass
                arrived.append("not yet")  # still running: the signal waits
    finally:
        done.set()
        other.join()
    assert arrived == ["not yet"]
