"""Every Parquet file of a run is checked against the fingerprint its stage recorded, at every open: the dataset's
against ``dataset/stats.json``, the factors' against ``factors/metrics.json``, the targets' against
``targets/summary.json``, each rank part of a feature source against ``features/<source>.json``. Bytes changed in
the middle of a file, at the same size and modification time, are refused by the next command that reads it, in
one line naming the command (with the run's ``-c``) that rewrites it. A sidecar written before fingerprints is
read as before."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok
from run_edits import keep_time

from socialfeat.artifacts import FINGERPRINTS, fingerprints, read_table, recorded_fingerprint
from socialfeat.errors import UserError
from socialfeat.features import read_features
from socialfeat.freshness import check_current

TINY = [
    "--backbone", "socialfeat_tiny", "--weights", "random", "--image-size", "32", "--workers", "0",
    "--batch-size", "32", "--epochs", "1", "--set", "train.threads=1",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def warm(warm_run: Path, tmp_path: Path) -> Path:
    """A private copy of a run holding dataset/, factors/ and targets/ (times kept), safe to damage."""
    return Path(shutil.copytree(warm_run, tmp_path / "run"))


@pytest.fixture
def run(embedded_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's embedded run (times kept), safe to damage."""
    return Path(shutil.copytree(embedded_run, tmp_path / "run", ignore=shutil.ignore_patterns("export")))


def damage(path: Path) -> bytes:
    """Flip 4 KB (at most a quarter of the file) in its middle: same size, same modification time, so neither a
    parser's footer check nor a freshness check can see it; only the fingerprint can. Returns the bytes before."""
    before = path.read_bytes()
    size = len(before)
    count = min(4096, size // 4)

    def flip() -> None:
        with path.open("r+b") as fh:
            fh.seek(size // 2)
            chunk = fh.read(count)
            fh.seek(size // 2)
            fh.write(bytes(b ^ 0xFF for b in chunk))

    keep_time(path, flip)
    assert path.stat().st_size == size
    return before


def restore(path: Path, before: bytes) -> None:
    keep_time(path, lambda: path.write_bytes(before))


def refused(argv: list[str], path: Path, sidecar: str, rerun: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``argv`` exits 2 with the one line calling ``path`` damaged against ``sidecar``, and naming ``rerun``."""
    line = fails(argv, capsys)
    assert line == f"error: {path}: is damaged (its sha256 is not the one {sidecar} recorded); rerun: {rerun}"
    return line


def hint(line: str) -> list[str]:
    """The command a message names, as argv (after ``socialfeat``)."""
    argv = shlex.split(line.split("; rerun: ", 1)[1])
    assert argv[0] == "socialfeat"
    return argv[1:]


def ingest_again(run: Path) -> str:
    return f"socialfeat ingest -c {run}/dataset/config.yaml --out {run}/dataset"


def factorize_again(run: Path) -> str:
    return f"socialfeat factorize {run} -c {run}/factors/config.yaml"


# ---------------------------------------------------------------------------------------------------- writers
def test_every_parquet_file_of_the_stage_folders_is_fingerprinted(run: Path) -> None:
    for folder, sidecar in (("dataset", "stats.json"), ("factors", "metrics.json"), ("targets", "summary.json")):
        files = sorted((run / folder).glob("*.parquet"))
        assert files, folder
        recorded = json.loads((run / folder / sidecar).read_text())[FINGERPRINTS]
        assert sorted(recorded) == [f.name for f in files]
        for f in files:
            assert recorded_fingerprint(f) == (run / folder / sidecar, recorded[f.name])
            assert recorded[f.name]["bytes"] == f.stat().st_size


# ---------------------------------------------------------------------------------------------------- dataset/
@pytest.mark.parametrize("name", ["interactions.parquet", "users.parquet", "items.parquet"])
def test_factorize_refuses_a_damaged_dataset_file(warm: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = warm / "dataset" / name
    damage(path)
    refused(["factorize", str(warm)], path, "stats.json", ingest_again(warm), capsys)


def test_the_printed_ingest_repairs_a_damaged_dataset(warm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = warm / "dataset" / "interactions.parquet"
    before = pq.read_table(path)
    damage(path)
    line = refused(["factorize", str(warm)], path, "stats.json", ingest_again(warm), capsys)
    ok(hint(line))
    assert pq.read_table(path).equals(before)
    ok(["factorize", str(warm), "-c", f"{warm}/factors/config.yaml"])


def test_targets_refuses_damaged_items_and_comments(warm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("items.parquet", "comments.parquet"):
        path = warm / "dataset" / name
        before = damage(path)
        refused(["targets", str(warm)], path, "stats.json", ingest_again(warm), capsys)
        restore(path, before)


def test_recommend_and_similar_refuse_a_damaged_dataset(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run / "dataset" / "interactions.parquet"
    before = damage(path)
    refused(["recommend", str(run), "--user", "u0005"], path, "stats.json", ingest_again(run), capsys)
    restore(path, before)
    item = str(pq.read_table(run / "features" / "learned.parquet", columns=["item_id"]).column(0)[0])
    ok(["similar", str(run), item])
    path = run / "dataset" / "items.parquet"
    damage(path)
    refused(["similar", str(run), item], path, "stats.json", ingest_again(run), capsys)
    refused(["recommend", str(run), "--user", "u0005"], path, "stats.json", ingest_again(run), capsys)


def test_a_damaged_and_newer_dataset_is_called_damaged_not_re_ingested(
    warm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The freshness check looks at a newer input's bytes first (check_intact): damage, not a re-ingest."""
    path = warm / "dataset" / "interactions.parquet"
    damage(path)
    later = time.time_ns()  # newer than factors/: a re-ingest, by the stamps
    os.utime(path, ns=(later, later))
    refused(["targets", str(warm)], path, "stats.json", ingest_again(warm), capsys)
    with pytest.raises(UserError, match="is damaged"):
        check_current(warm, ["factors"])


# ---------------------------------------------------------------------------------------------------- factors/
def test_targets_refuses_damaged_item_factors_and_factorize_repairs_them(
    warm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = warm / "factors" / "item_factors.parquet"
    damage(path)
    line = refused(["targets", str(warm)], path, "metrics.json", factorize_again(warm), capsys)
    ok(hint(line))
    ok(["targets", str(warm), "-c", f"{warm}/targets/config.yaml"])


def test_recommend_refuses_damaged_factors(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("user_factors.parquet", "item_factors.parquet"):
        path = run / "factors" / name
        before = damage(path)
        refused(["recommend", str(run), "--user", "u0005"], path, "metrics.json", factorize_again(run), capsys)
        restore(path, before)
    ok(["recommend", str(run), "--user", "u0005"])


def test_every_factors_file_is_checked_by_its_reader(warm: Path) -> None:
    for name in ("item_split.parquet", "cold_interactions.parquet"):
        path = warm / "factors" / name
        damage(path)
        with pytest.raises(UserError, match=r"is damaged \(its sha256 is not the one metrics.json recorded\)"):
            read_table(path)


# ---------------------------------------------------------------------------------------------------- targets/
def test_train_refuses_damaged_targets(warm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = warm / "targets" / "factors.parquet"
    damage(path)
    rerun = f"socialfeat targets {warm} -c {warm}/targets/config.yaml"
    refused(["train", str(warm), *TINY], path, "summary.json", rerun, capsys)
    assert not (warm / "model").exists()


# ---------------------------------------------------------------------------------------------------- legacy
def test_a_sidecar_written_before_fingerprints_is_still_read(warm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder, sidecar in (("dataset", "stats.json"), ("factors", "metrics.json")):
        side = warm / folder / sidecar
        meta = json.loads(side.read_text())
        del meta[FINGERPRINTS]
        keep_time(side, lambda side=side, meta=meta: side.write_text(json.dumps(meta)))
    path = warm / "dataset" / "interactions.parquet"
    assert recorded_fingerprint(path) is None
    assert read_table(path).num_rows > 0
    ok(["targets", str(warm), "-c", f"{warm}/targets/config.yaml"])


# ---------------------------------------------------------------------------------------------------- rank parts
def _split_into_parts(run: Path, source: str) -> list[Path]:
    """The source's single file as two rank parts, with the sidecar embed writes under torchrun: every part's
    fingerprint, recorded by rank 0."""
    single = run / "features" / f"{source}.parquet"
    table = pq.read_table(single)
    half = len(table) // 2
    parts = [run / "features" / f"{source}.part-{r:05d}-of-00002.parquet" for r in range(2)]
    pq.write_table(table.slice(0, half), parts[0])
    pq.write_table(table.slice(half), parts[1])
    single.unlink()
    side = run / "features" / f"{source}.json"
    meta = json.loads(side.read_text())
    keep_time(
        side, lambda: side.write_text(json.dumps({**meta, **fingerprints(side.parent, *(p.name for p in parts))}))
    )
    for p in parts:  # as old as the single file was: the index and the evaluation stay current
        os.utime(p, ns=(side.stat().st_mtime_ns, side.stat().st_mtime_ns))
    return parts


def test_a_damaged_rank_part_is_refused(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = _split_into_parts(run, "random")
    item = str(pq.read_table(parts[1], columns=["item_id"]).column(0)[0])
    ok(["similar", str(run), item, "--source", "random"])
    damage(parts[1])
    rerun = f"socialfeat embed {run} --source random -c {run}/model/config.yaml"
    refused(["similar", str(run), item, "--source", "random"], parts[1], "random.json", rerun, capsys)
    with pytest.raises(UserError, match=r"part-00001-of-00002.parquet: is damaged"):
        read_features(run, "random")


@pytest.mark.slow
@pytest.mark.distributed
def test_embed_under_torchrun_records_every_rank_part(demo_dataset: Path, tmp_path: Path) -> None:
    """Each rank hashes its own part; rank 0 records them all in features/<source>.json."""
    run = tmp_path / "run"
    shutil.copytree(demo_dataset / "dataset", run / "dataset")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    settings = ["--set", "train.backbone=socialfeat_tiny", "--set", "train.image_size=32", "--set", "train.threads=1"]
    embed = ["-m", "socialfeat", "embed", str(run), "--source", "random", "--device", "cpu", "--workers", "0"]
    done = subprocess.run([*launch, *embed, *settings], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = sorted((run / "features").glob("random.part-*-of-00002.parquet"))
    recorded = json.loads((run / "features" / "random.json").read_text())[FINGERPRINTS]
    assert sorted(recorded) == [p.name for p in parts] and len(parts) == 2
    assert len(read_features(run, "random")[0]) == sum(pq.read_metadata(p).num_rows for p in parts)
    damage(parts[1])
    with pytest.raises(UserError, match=r"part-00001-of-00002.parquet: is damaged \(its sha256 is not the one"):
        read_features(run, "random")


def test_a_file_hashed_when_written_is_not_hashed_again_after_its_folder_is_renamed(
    warm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run`` reads in one process what it wrote: the hash taken in the stage's temporary folder still counts
    once that folder is renamed into place (same device, inode, size and times), so a file is hashed once."""
    import socialfeat.artifacts as artifacts
    from socialfeat.config import load_config
    from socialfeat.targets.stage import targets

    targets(load_config(None, ["targets.clusters=6"]), warm)
    hashed: list[str] = []
    digest = artifacts.hashlib.file_digest
    monkeypatch.setattr(artifacts.hashlib, "file_digest", lambda fh, name: hashed.append(fh.name) or digest(fh, name))
    read_table(warm / "targets" / "factors.parquet")
    assert hashed == []
    damage(warm / "targets" / "factors.parquet")  # a write moves the ctime: hashed again, and refused
    with pytest.raises(UserError, match="is damaged"):
        read_table(warm / "targets" / "factors.parquet")
    assert len(hashed) == 1
