"""The --out rule through the command line: every command that writes to a path the user gives refuses a path
socialfeat did not write (the input, a run root, a user's folder or file) with one line, exit 2, and leaves every
file there byte-identical; it replaces only an earlier output of its own kind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_helpers import fails, ok


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def user_folder(platform: Path, tmp_path: Path) -> Path:
    """The issue's reproduction: a user's folder holding the logs and the images."""
    d = tmp_path / "d"
    d.mkdir()
    for name in ("interactions.csv", "items.csv"):
        shutil.copy(platform / name, d / name)
    shutil.copytree(platform / "images", d / "images")
    return d


def test_ingest_never_replaces_the_inputs_or_a_foreign_folder(
    user_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = user_folder
    before = snapshot(d)
    args = ["ingest", "--interactions", str(d / "interactions.csv"), "--items", str(d / "items.csv")]
    assert "holds the input" in fails([*args, "--out", str(d)], capsys)
    assert "is a file; expected a folder for the dataset" in fails([*args, "--out", str(d / "items.csv")], capsys)
    assert "non-empty folder socialfeat did not write (i00000.png" in fails([*args, "--out", str(d / "images")], capsys)
    assert snapshot(d) == before and sorted(p.name for p in d.iterdir()) == ["images", "interactions.csv", "items.csv"]
    # a new folder works, and so does writing over that earlier dataset
    run = tmp_path / "run"
    ok([*args, "--out", str(run / "dataset")])
    ok([*args, "--out", str(run / "dataset")])
    # the run root where its dataset was meant: refused with the path meant
    line = fails([*args, "--out", str(run)], capsys)
    assert f"is a run folder, not a dataset; it was left untouched; did you mean {run}/dataset?" in line
    assert (run / "dataset" / "interactions.parquet").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "run"]  # no temporaries left anywhere


def test_simulate_and_demo_and_run_refuse_a_foreign_folder(
    user_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(user_folder)
    assert "non-empty folder socialfeat did not write" in fails(
        ["simulate", "--out", str(user_folder), "--users", "20", "--items", "30"], capsys
    )
    assert "non-empty folder socialfeat did not write" in fails(["demo", "--small", "--out", str(user_folder)], capsys)
    config = tmp_path / "c.yaml"
    config.write_text(f"ingest:\n  interactions: {user_folder / 'interactions.csv'}\n")
    assert "--run: " in fails(["run", str(config), "--run", str(user_folder)], capsys)
    assert snapshot(user_folder) == before


def test_embed_export_and_report_refuse_files_they_did_not_write(
    embedded_run: Path, user_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    table = tmp_path / "t.csv"
    table.write_text("image\n" + "\n".join(str(p) for p in sorted((user_folder / "images").glob("*.png"))[:3]) + "\n")
    foreign = tmp_path / "theirs.parquet"
    foreign.write_bytes(b"PAR1 someone else's data")
    (tmp_path / "theirs.onnx").write_bytes(b"someone's model")
    (tmp_path / "page.html").write_text("<html>my notes</html>")
    (tmp_path / "notes.csv").write_text("a,b\n")
    before = snapshot(tmp_path / "d") | {n: (tmp_path / n).read_bytes() for n in ("theirs.parquet", "theirs.onnx")}
    embed = ["embed", str(run), "--images", str(table), "--image-root", "/"]
    assert "is not a socialfeat feature file" in fails([*embed, "--out", str(foreign)], capsys)
    assert "expected a .parquet or .pq file name" in fails([*embed, "--out", str(table)], capsys)
    assert "is not a socialfeat ONNX export" in fails(
        ["export", str(run), "--out", str(tmp_path / "theirs.onnx")], capsys
    )
    assert "expected a .html or .htm file name" in fails(
        ["report", str(run), "--out", str(tmp_path / "notes.csv")], capsys
    )
    assert "is not a socialfeat report" in fails(["report", str(run), "--out", str(tmp_path / "page.html")], capsys)
    after = snapshot(tmp_path / "d") | {n: (tmp_path / n).read_bytes() for n in ("theirs.parquet", "theirs.onnx")}
    assert after == before and (tmp_path / "notes.csv").read_text() == "a,b\n"
    # each replaces its own earlier output
    mine = tmp_path / "mine.parquet"
    ok([*embed, "--out", str(mine)])
    ok([*embed, "--out", str(mine)])
    ok(["report", str(run), "--out", str(tmp_path / "r.html")])
    ok(["report", str(run), "--out", str(tmp_path / "r.html")])
