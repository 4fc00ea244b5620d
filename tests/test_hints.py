"""Issue 31: every artifact is verified at open, and every printed hint works as printed — from another folder,
with the run's own settings. Each case copies the session's embedded run (a tiny 64-d backbone) before damaging it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok

from socialfeat.index import index_path
from socialfeat.train import KILL_ENV, SIGNAL_ENV


@pytest.fixture
def run(embedded_run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(embedded_run, dest, ignore=shutil.ignore_patterns("export"))
    return dest


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Another current folder: a hint must not depend on where it was printed."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def hint(line: str, verb: str = "rerun") -> list[str]:
    argv = shlex.split(line.split(f"; {verb}: ", 1)[1])
    assert argv[0] == "socialfeat"
    return argv[1:]


def first_item(run: Path) -> str:
    return str(pq.read_table(run / "features" / "learned.parquet", columns=["item_id"]).column("item_id")[0])


def keep_time(path: Path, data: bytes) -> None:
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_case_4_an_index_overwritten_in_the_middle_is_refused_and_the_hint_repairs_it(
    run: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    item = first_item(run)
    ok(["index", str(run)])
    path = index_path(run, "learned")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 - 20_480
    data[middle : middle + 40_960] = os.urandom(40_960)  # same size, same mtime: only the fingerprint sees it
    keep_time(path, bytes(data))
    line = fails(["similar", str(run), item], capsys)
    assert line == (
        f"error: {path}: is damaged (its sha256 is not the one learned.faiss.json recorded); "
        f"rerun: socialfeat index {run} --source learned -c {run}/model/config.yaml"
    )
    ok(hint(line))
    ok(["similar", str(run), item])


def test_case_12_a_damaged_random_source_is_rebuilt_with_the_runs_backbone(
    run: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run / "features" / "random.parquet"
    width = pq.read_schema(path).field("features").type.list_size
    keep_time(path, path.read_bytes()[:100])
    line = fails(["similar", str(run), first_item(run), "--source", "random"], capsys)
    assert line.startswith(f"error: {path}: is damaged (100 bytes where random.json recorded ")
    assert "-c " in line.split("; rerun: ")[1]  # the run's settings, not the defaults (Lite0, 1,280-d)
    ok(hint(line))
    assert pq.read_schema(path).field("features").type.list_size == width == 64


def test_case_13_a_dataset_without_items_says_so_and_how_to_add_them(
    platform: Path, tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    loose = ["--set", "filter.min_user_interactions=1", "--set", "filter.min_item_interactions=1"]
    ok(["ingest", "--interactions", str(platform / "interactions.csv"), "--out", str(run / "dataset"), *loose])
    ok(["factorize", str(run), "--set", "factorize.factors=4", "--set", "factorize.evaluate=false"])
    ok(["targets", str(run), "--set", "targets.targets=[factors]"])
    line = fails(["train", str(run), "--backbone", "socialfeat_tiny", "--weights", "random"], capsys)
    assert line.startswith(f"error: {run}/dataset: has no images: it was ingested without --items; ")
    assert "is damaged" not in line
    argv = shlex.split(line.split(": socialfeat ", 1)[1])
    assert argv[argv.index("--items") + 1] == "ITEMS" and argv[-1] == str(run / "dataset")


def test_a_damaged_input_is_called_damaged_not_retrained(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The weak message: a truncated model (so newer than the features made from it) was 'retrained since'."""
    path = run / "model" / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:100])  # a new mtime, as a real truncation has
    line = fails(["similar", str(run), first_item(run)], capsys)
    assert line.startswith(f"error: {path}: is damaged (100 bytes where model.json recorded ")
    assert "since" not in line and line.endswith(f"; rerun: socialfeat train {run} -c {run}/model/config.yaml")


def test_case_6_the_ctrl_c_hint_of_train_resumes_as_printed(
    embedded_run: Path, tmp_path: Path, elsewhere: Path
) -> None:
    run = tmp_path / "r"
    for folder in ("dataset", "factors", "targets"):
        shutil.copytree(embedded_run / folder, run / folder)
    tiny = ["--backbone", "socialfeat_tiny", "--weights", "random", "--image-size", "32", "--workers", "0",
            "--batch-size", "32", "--epochs", "2", "--targets", "factors", "--set", "train.threads=1",
            "--checkpoint-every", "2"]  # fmt: skip
    env = {**os.environ, KILL_ENV: "3", SIGNAL_ENV: "INT"}
    proc = subprocess.run(
        [sys.executable, "-m", "socialfeat", "train", str(run), *tiny], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 130, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    argv = shlex.split(line.split("; continue with: ", 1)[1])
    assert argv[:4] == ["socialfeat", "train", str(run), "--resume"] and "-c" in argv
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True)  # verbatim, from elsewhere
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "model" / "model.json").read_text())["backbone"] == "socialfeat_tiny"
