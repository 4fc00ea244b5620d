"""Where socialfeat may write, through the command line (issue 31): a user's folder that holds the data contract's
file names is not an output, a failed final rename keeps nothing, a feature file for other images never lands in a
run's own folders, a symlinked --out is written through, and a simulate error is exactly one line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from cli_helpers import fails, ok
from filesystems import immutable

from socialfeat.atomic import MARKER
from socialfeat.cli import main


def tree(folder: Path) -> dict[str, str]:
    """Every file's sha256 and every folder, by relative path: byte-identical means equal."""
    found = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        found[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
    return found


def test_simulate_into_a_users_project_exits_2_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's reproduction, as typed: the project holds interactions.csv, items.csv and README.md — the names
    an older version took for a simulated platform."""
    monkeypatch.chdir(tmp_path)
    proj = tmp_path / "proj"
    (proj / "photos").mkdir(parents=True)
    (proj / "interactions.csv").write_text("user_id,item_id\nalice,p1\n")
    (proj / "items.csv").write_text("item_id,image\np1,photos/p1.jpg\n")
    (proj / "README.md").write_text("# my project\n")
    (proj / "notes.txt").write_text("irreplaceable\n")
    (proj / "photos" / "p1.jpg").write_text("x\n")
    before = tree(proj)
    line = fails(["simulate", "--out", "proj", "--users", "20", "--items", "20", "--image-size", "32"], capsys)
    assert line == (
        "error: --out: proj is a non-empty folder socialfeat did not write (README.md, interactions.csv, items.csv, "
        "notes.txt, …); it was left untouched: the output goes into a new or empty folder, or replaces an earlier "
        "platform"
    )
    assert tree(proj) == before and sorted(p.name for p in tmp_path.iterdir()) == ["proj"]
    # a platform simulate wrote carries the marker, and is replaced by the next simulate
    ok(["simulate", "--out", "sim", "--users", "20", "--items", "20", "--image-size", "32"])
    assert (tmp_path / "sim" / MARKER).is_file()
    ok(["simulate", "--out", "sim", "--users", "20", "--items", "20", "--image-size", "32", "--seed", "1"])


def test_a_simulate_error_is_exactly_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stopped progress bar printed a blank line first when stderr was not a terminal."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("a")
    for argv in (
        ["simulate", "--out", str(tmp_path / "new"), "--seed", "-1"],
        ["simulate", "--out", str(tmp_path / "mine"), "--users", "20", "--items", "20"],
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --") and err.count("\n") == 1, repr(err)


def test_an_immutable_empty_out_keeps_no_temporaries(
    platform: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue case 9: the dataset is written whole, then its rename onto the immutable folder fails; the line says
    nothing half-written was kept, and nothing is: no .imm.tmp-* and no .imm.old-*."""
    monkeypatch.chdir(tmp_path)
    args = ["ingest", "--interactions", str(platform / "interactions.csv"), "--items", str(platform / "items.csv")]
    with immutable(tmp_path / "imm"):
        line = fails([*args, "--out", "imm"], capsys)
        assert line == (
            "error: imm: operation not permitted; nothing half-written was kept: check the folder's permissions or "
            "attributes (chattr) or choose another path"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["imm"] and list((tmp_path / "imm").iterdir()) == []


def test_embed_images_never_writes_into_a_runs_own_folders(
    embedded_run: Path, platform: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue case 10: --out RUN/features/learned.parquet replaced the run's item features with a held-out table."""
    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    other = Path(shutil.copytree(embedded_run, tmp_path / "other"))
    table = tmp_path / "t.csv"
    table.write_text("image\n" + "\n".join(str(p) for p in sorted((platform / "images").glob("*.png"))[:3]) + "\n")
    before = tree(run) | {f"other/{k}": v for k, v in tree(other).items()}
    embed = ["embed", str(run), "--images", str(table), "--image-root", "/"]
    for out in (
        run / "features" / "learned.parquet",
        run / "features" / "heldout.parquet",
        run / "model" / "x.parquet",
        run / "cache" / "new" / "x.pq",
        other / "features" / "learned.parquet",  # another run's folders, found by its marker
    ):
        line = fails([*embed, "--out", str(out)], capsys)
        root = other if out.is_relative_to(other) else run
        folder = out.relative_to(root).parts[0]
        assert line == (
            f"error: --out: {out} is inside the run folder {root}/{folder}, which the run's stages write; nothing "
            f"was changed: write the features of other images outside the run's folders, e.g. {tmp_path / out.name}"
        )
    assert tree(run) | {f"other/{k}": v for k, v in tree(other).items()} == before
    ok(["similar", str(run), "i00000"])  # the run's own features are as they were


def test_a_symlinked_out_is_written_through(platform: Path, tmp_path: Path) -> None:
    """Issue case 17: the link was replaced by a real folder and its target stayed empty."""
    target = tmp_path / "disk" / "dataset"
    target.mkdir(parents=True)
    link = tmp_path / "dataset"
    link.symlink_to(target)
    args = ["ingest", "--interactions", str(platform / "interactions.csv"), "--items", str(platform / "items.csv")]
    for _ in range(2):  # into the empty folder, then over that earlier dataset
        ok([*args, "--out", str(link)])
        assert link.is_symlink() and link.readlink() == target
        assert (target / "interactions.parquet").is_file() and (target / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "disk"]
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["dataset"]
