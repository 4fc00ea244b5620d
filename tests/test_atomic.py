"""Atomic outputs and the --out rule: nothing half-written survives a failure, the previous output stays intact,
and nothing socialfeat did not write is ever replaced."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from socialfeat.atomic import (
    MARKER,
    _temp_prefix,
    atomic_dir,
    atomic_file,
    claim_dir,
    claim_file,
    output_kind,
    sweep_temporaries,
    write_json,
)
from socialfeat.errors import UserError


def test_success_replaces_previous_output(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target, "thing") as tmp:
        (tmp / "old.txt").write_text("old")
    with atomic_dir(target, "thing") as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # still intact while the new one is being written
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "new.txt"]
    assert json.loads((target / MARKER).read_text())["kind"] == "thing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_keeps_previous_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target, "thing") as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target, "thing") as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert (target / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_removes_parents_it_created(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "a" / "b" / "out", "thing"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_write_json_is_atomic_and_readable(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_foreign_folder_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("precious")
    (mine / "sub" / "x.csv").write_text("a,b\n")
    before = _snapshot(mine)
    with pytest.raises(UserError, match="non-empty folder socialfeat did not write .notes.txt, sub/.") as e:
        with atomic_dir(mine, "dataset"):
            raise AssertionError("never reached: the claim comes first")
    assert "left untouched" in str(e.value)
    assert _snapshot(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_an_output_of_another_kind_is_not_replaced(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "p", "platform") as tmp:
        (tmp / "x").write_text("x")
    with pytest.raises(UserError, match="holds a socialfeat platform"):
        claim_dir(tmp_path / "p", "dataset")


def test_a_run_root_given_for_its_stage_folder_gets_the_path_meant(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with atomic_dir(run / "dataset", "dataset") as tmp:
        (tmp / "x").write_text("x")
    assert output_kind(run) == "run"
    with pytest.raises(
        UserError, match=rf"is a run folder, not a dataset; it was left untouched; did you mean {run}/dataset\?"
    ):
        claim_dir(run, "dataset", flag="--out")


def test_files_in_the_way_and_inputs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file; expected a folder"):
        claim_dir(tmp_path / "f", "dataset")
    with pytest.raises(UserError, match="cannot hold it: .*f is a file"):
        claim_dir(tmp_path / "f" / "sub", "dataset")
    log = tmp_path / "in" / "log.csv"
    log.parent.mkdir()
    log.write_text("u,i\n")
    with pytest.raises(UserError, match="holds the input"):
        claim_dir(tmp_path / "in", "dataset", inputs=[log])
    with pytest.raises(UserError, match="is the input"):
        claim_file(log, "report", suffixes=(".csv",), ours=lambda _p: True, inputs=[log])


def test_empty_and_new_folders_are_claimed(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    claim_dir(tmp_path / "empty", "dataset")
    claim_dir(tmp_path / "new" / "deeper", "dataset")


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("platform", ("interactions.csv", "items.csv", "README.md")),
        ("collection", ("labels.csv", "images/")),
        ("image cache", ("meta.json", "index.parquet")),
        ("checkpoint", ("position.json",)),
        ("dataset", (".pipeline/", "interactions.parquet")),
    ],
)
def test_file_names_never_make_a_folder_ours(kind: str, names: tuple[str, ...], tmp_path: Path) -> None:
    """The names older versions recognised are the data contract's too: without the marker, a user's folder."""
    mine = tmp_path / "mine"
    for name in names:
        if name.endswith("/"):
            (mine / name).mkdir(parents=True)
            (mine / name / "x").write_text("x")
        else:
            mine.mkdir(exist_ok=True)
            (mine / name).write_text("mine")
    before = _snapshot(mine)
    assert output_kind(mine) is None
    with pytest.raises(UserError, match="non-empty folder socialfeat did not write"):
        with atomic_dir(mine, kind):
            raise AssertionError("never reached")
    assert _snapshot(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_an_output_from_before_the_marker_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old = tmp_path / "old"  # a dataset written by a version without markers: its provenance manifest says so
    old.mkdir()
    manifest = {"stage": "ingest", "versions": {"socialfeat": "0.3.0"}, "config": {}}
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / "interactions.parquet").write_bytes(b"PAR1")
    before = _snapshot(old)
    for kind in ("dataset", "factors"):
        with pytest.raises(UserError) as e:
            claim_dir(old, kind, flag="--out")
        assert str(e.value) == (
            f"--out: {old} holds the ingest output of a socialfeat older than its marker (.socialfeat.json); it was "
            "left untouched: socialfeat replaces only marked outputs; move or delete that folder by hand, then rerun"
        )
    assert _snapshot(old) == before


def test_claim_file_checks_suffix_ownership_and_sidecars(tmp_path: Path) -> None:
    def ours(path: Path) -> bool:
        return path.read_text().startswith("ours")

    target = tmp_path / "r.html"
    claim_file(target, "report", suffixes=(".html",), ours=ours)  # new
    with pytest.raises(UserError, match=r"expected a \.html file name"):
        claim_file(tmp_path / "r.csv", "report", suffixes=(".html",), ours=ours)
    target.write_text("someone's page")
    with pytest.raises(UserError, match="exists and is not a socialfeat report; it was left untouched"):
        claim_file(target, "report", suffixes=(".html",), ours=ours)
    target.write_text("ours")
    claim_file(target, "report", suffixes=(".html",), ours=ours)
    (tmp_path / "r.json").write_text("theirs")
    with pytest.raises(UserError, match="r.json exists"):
        claim_file(target, "report", suffixes=(".html",), ours=ours, sidecars=(tmp_path / "r.json",))
    (tmp_path / "d.html").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        claim_file(tmp_path / "d.html", "report", suffixes=(".html",), ours=ours)


def test_temporaries_of_a_killed_process_are_swept_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    code = (
        "import os, sys\n"
        "from socialfeat.atomic import atomic_dir, atomic_file\n"
        "cm = atomic_dir(sys.argv[1], 'dataset'); tmp = cm.__enter__(); open(tmp / 'half', 'w').write('x')\n"
        "f = atomic_file(sys.argv[1] + '.json'); f.__enter__().write('half')\n"
        "os._exit(9)  # killed: no cleanup runs\n"
    )
    subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.startswith((".dataset.tmp-", ".dataset.json.tmp-")) for n in left), left
    # a temporary of a process that still runs (this one) is left alone, and so is a new untagged one
    alive = tmp_path / f"{_temp_prefix('dataset')}busy"
    alive.mkdir()
    busy = tmp_path / f".dataset.tmp-{os.urandom(4).hex()}"
    busy.mkdir()  # untagged (an older version's) and new: kept until it is a day old
    with atomic_dir(target, "dataset") as tmp:
        (tmp / "x").write_text("x")
    write_json(tmp_path / "dataset.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, busy.name, "dataset", "dataset.json"])
    os.utime(busy, (0, 0))
    assert sweep_temporaries(target) == [busy]


def test_atomic_file_keeps_the_previous_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("before")
    with pytest.raises(RuntimeError), atomic_file(path) as fh:
        fh.write("half")
        raise RuntimeError
    assert path.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_a_failed_rename_keeps_nothing_and_restores_the_previous_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step's rename refused (what an immutable folder or a file system gone read-only does): the error
    is the one line, the previous output is back in place, and no temporary sibling is left."""
    target = tmp_path / "out"
    with atomic_dir(target, "thing") as tmp:
        (tmp / "old.txt").write_text("old")
    real = os.replace

    def refuse_into_place(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == target and ".out.tmp-" in str(src):  # the new output's rename; moving back works
            raise PermissionError(1, "Operation not permitted", str(src), None, str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_into_place)
    for previous in (True, False):
        if not previous:
            monkeypatch.undo()
            shutil.rmtree(target)
            monkeypatch.setattr(os, "replace", refuse_into_place)
        with pytest.raises(UserError) as e, atomic_dir(target, "thing") as tmp:
            (tmp / "new.txt").write_text("new")
        assert str(e.value).startswith(f"{target}: operation not permitted; nothing half-written was kept")
        assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if previous else [])
        if previous:
            assert (target / "old.txt").read_text() == "old" and not (target / "new.txt").exists()


def test_a_symlink_to_a_folder_is_written_through(tmp_path: Path) -> None:
    """The link stays a link and the folder it points at gets the output (empty, or an earlier one of the kind)."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    for text in ("first", "second"):
        with atomic_dir(link, "thing") as tmp:
            (tmp / "x.txt").write_text(text)
        assert link.is_symlink() and os.readlink(link) == str(real)
        assert (real / "x.txt").read_text() == text and (real / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    write_json(tmp_path / "file-link", {})  # a file's link too: a new file is made where it pointed
    (tmp_path / "f.json").write_text("{}")
    (tmp_path / "f-link.json").symlink_to(tmp_path / "f.json")
    write_json(tmp_path / "f-link.json", {"a": 1})
    assert (tmp_path / "f-link.json").is_symlink() and json.loads((tmp_path / "f.json").read_text()) == {"a": 1}


def test_a_symlink_to_a_foreign_folder_or_to_nothing_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(UserError, match="non-empty folder socialfeat did not write .notes.txt."):
        with atomic_dir(tmp_path / "link", "thing"):
            raise AssertionError("never reached")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"dangling: is a symbolic link to .*nowhere, which does not exist"):
        with atomic_dir(tmp_path / "dangling", "thing"):
            raise AssertionError("never reached")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "link", "mine"]
    assert (mine / "notes.txt").read_text() == "precious" and (tmp_path / "link").is_symlink()
