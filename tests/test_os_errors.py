"""Faults of the file system a user can fix — permission denied, read-only file system, no space left, file too
large — are one line naming the output path and the reason, exit 2, with nothing half-written left behind.

Real faults, not mocks: running as root defeats mode bits, so an immutable folder (``chattr +i``) refuses writes; a
small tmpfs fills up or is remounted read-only; ``RLIMIT_FSIZE`` makes a write fail with EFBIG. Where the machine does
not allow a fault, the test skips with the reason; ``SOCIALFEAT_REQUIRE_ALL=1`` (CI) makes that a failure."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import fails
from filesystems import immutable, tmpfs


def ingest_args(platform: Path, out: Path) -> list[str]:
    return ["ingest", "--interactions", str(platform / "interactions.csv"), "--items", str(platform / "items.csv"),
            "--out", str(out)]  # fmt: skip


def test_an_immutable_folder_is_one_line_for_ingest_embed_and_export(
    platform: Path, embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    table = tmp_path / "t.csv"
    table.write_text("image\n" + "\n".join(str(p) for p in sorted((platform / "images").glob("*.png"))[:3]) + "\n")
    with immutable(tmp_path / "locked") as locked:
        for argv in (
            ingest_args(platform, locked / "dataset"),
            ["embed", str(run), "--images", str(table), "--image-root", "/", "--out", str(locked / "x.parquet")],
            ["export", str(run), "--out", str(locked / "m.onnx")],
            ["report", str(run), "--out", str(locked / "r.html")],
        ):
            line = fails(argv, capsys)
            assert f"error: {locked}/" in line and "operation not permitted; nothing half-written was kept" in line
        assert list(locked.iterdir()) == []


def test_a_full_disk_and_a_read_only_file_system(
    platform: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "small", "16k") as small:
        line = fails(ingest_args(platform, small / "dataset"), capsys)
        assert line.startswith(f"error: {small}/dataset: no space left on device; nothing half-written was kept")
        assert list(small.iterdir()) == []
        subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True)
        line = fails(ingest_args(platform, small / "dataset"), capsys)
        assert line.startswith(f"error: {small}/dataset: read-only file system")


def test_a_file_too_large_for_the_limit(platform: Path, tmp_path: Path) -> None:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, 8 * 1024))

    out = tmp_path / "big" / "dataset"
    done = subprocess.run(
        [sys.executable, "-m", "socialfeat", *ingest_args(platform, out)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines == [f"error: {out}: file too large; nothing half-written was kept: the file system or a limit "
                     "(ulimit -f) refuses a file this large; choose another path or raise it"]  # fmt: skip
    assert not (tmp_path / "big").exists()
