"""A damaged or missing file in a run is one line naming it and the command that rewrites it — and that command,
run as printed, repairs the run. Each case copies the session's embedded run before damaging it: a truncated
Parquet, safetensors or faiss file, garbage of the same size, garbage JSON, a garbage ONNX export, a deleted
stage folder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok
from environment import need_module

from socialfeat.artifacts import (
    damaged,
    fingerprints,
    ingest_command,
    locate,
    missing,
    read_json,
    read_safetensors,
    read_table,
    rerun_command,
)
from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.index import index_path


# ---------------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def run(embedded_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's embedded run (times kept), safe to damage."""
    dest = tmp_path / "run"
    shutil.copytree(embedded_run, dest, ignore=shutil.ignore_patterns("export"))
    return dest


def _keep_time(path: Path, write: bytes) -> None:
    """Overwrite ``path`` keeping its modification time: damage on disk, not a newer output (so no freshness check
    mistakes it for a rebuilt input)."""
    st = path.stat()
    path.write_bytes(write)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def forget_fingerprints(sidecar: Path) -> None:
    """The sidecar as a version before fingerprints wrote it."""
    meta = json.loads(sidecar.read_text())
    meta.pop("fingerprints")
    _keep_time(sidecar, json.dumps(meta).encode())


def truncate(path: Path, keep: int = 100) -> None:
    _keep_time(path, path.read_bytes()[:keep])


def garble(path: Path) -> None:
    """Garbage of the same size (no header, no footer), deterministically."""
    size = path.stat().st_size
    noise = hashlib.shake_256(path.name.encode()).digest(size)
    _keep_time(path, noise)


def image_of(run: Path) -> Path:
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    return root / pq.read_table(run / "dataset" / "items.parquet", columns=["image"]).column("image")[0].as_py()


def first_item(run: Path) -> str:
    return str(pq.read_table(run / "features" / "learned.parquet", columns=["item_id"]).column("item_id")[0])


def one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Exit 2, one line on stderr, no traceback; the line is returned."""
    line = fails(argv, capsys)
    assert "Traceback" not in line and "\n" not in line
    return line


def hint(line: str, verb: str = "rerun") -> list[str]:
    """The command a message names, as argv (after ``socialfeat``)."""
    command = line.split(f"; {verb}: ", 1)[1]
    argv = shlex.split(command)
    assert argv[0] == "socialfeat", command
    return argv[1:]


# ---------------------------------------------------------------------------------------------------- which command
def test_every_stage_folder_names_the_command_that_rewrites_it(tmp_path: Path) -> None:
    r = tmp_path / "r"
    (r / "model").mkdir(parents=True)
    (r / "model" / "config.yaml").write_text("train:\n  backbone: socialfeat_tiny\n")
    (r / "factors").mkdir()
    (r / "factors" / "config.yaml").write_text("not: [valid")  # a damaged config is not suggested
    m = f"-c {r}/model/config.yaml"  # the whole config the run's model was trained with: its backbone, its seed
    assert rerun_command(r, "factors/item_factors.parquet") == f"socialfeat factorize {r}"
    assert rerun_command(r, "targets/summary.json") == f"socialfeat targets {r}"
    assert rerun_command(r, "model/weights.safetensors") == f"socialfeat train {r} {m}"
    assert rerun_command(r, ".train/checkpoint/state.pt") == f"socialfeat train {r} {m}"
    assert rerun_command(r, "meta-class/model.json") == f"socialfeat train {r} --meta-class {m}"
    assert rerun_command(r, "features/learned.parquet") == f"socialfeat embed {r} --source learned {m}"
    assert rerun_command(r, "features/meta-class.json") == f"socialfeat embed {r} --source meta-class {m}"
    assert (
        rerun_command(r, "features/random.part-00001-of-00002.parquet") == f"socialfeat embed {r} --source random {m}"
    )
    assert rerun_command(r, "features/learned.faiss") == f"socialfeat index {r} --source learned {m}"
    assert (
        rerun_command(r, "features/learned.head_factors.faiss.json")
        == f"socialfeat index {r} --source learned --column head_factors {m}"
    )
    assert rerun_command(r, "content/model.safetensors") == f"socialfeat content {r}"
    assert rerun_command(r, "eval/metrics.json") == f"socialfeat evaluate {r} {m}"
    assert rerun_command(r, "eval/transfer-pets.json") == f"socialfeat transfer {r} --name pets {m} --labels LABELS"
    assert rerun_command(r, "export/imagenet.onnx") == f"socialfeat export {r} --source imagenet {m}"
    assert rerun_command(r, "cache/images-32/images.npy") is None  # rebuilt by whoever reads it
    assert rerun_command(r, "report.html") is None
    (r / "config.yaml").write_text("train:\n  backbone: socialfeat_tiny\n")  # what `run` records comes first
    assert rerun_command(r, "features/random.parquet") == f"socialfeat embed {r} --source random -c {r}/config.yaml"
    assert rerun_command(r, "content/model.safetensors") == f"socialfeat content {r} -c {r}/config.yaml"


def test_ingest_is_named_with_the_config_that_names_its_inputs(tmp_path: Path) -> None:
    r = tmp_path / "my run"
    (r / "dataset").mkdir(parents=True)
    placeholder = f"socialfeat ingest --interactions INTERACTIONS --items ITEMS --out '{r}/dataset'"
    assert ingest_command(r) == placeholder  # nothing recorded: placeholders that fail harmlessly
    (r / "config.yaml").write_text("ingest:\n  interactions: logs.csv\n")
    assert ingest_command(r) == f"socialfeat ingest -c '{r}/config.yaml' --out '{r}/dataset'"
    (r / "dataset" / "config.yaml").write_text("ingest:\n  interactions: other.csv\n")
    assert ingest_command(r) == f"socialfeat ingest -c '{r}/dataset/config.yaml' --out '{r}/dataset'"


def test_a_run_file_is_located_by_its_stage_folder(tmp_path: Path) -> None:
    assert locate(tmp_path / "x" / "features" / "a.parquet") == (tmp_path / "x", Path("features/a.parquet"))
    assert locate(tmp_path / "x" / ".train" / "checkpoint" / "state.pt")[1].as_posix() == ".train/checkpoint/state.pt"
    with pytest.raises(ValueError):
        locate(tmp_path / "photos" / "table.parquet")
    assert str(damaged(tmp_path / "photos" / "t.parquet", "empty file")).endswith("is damaged (empty file)")


# ---------------------------------------------------------------------------------------------------- readers
def test_readers_name_the_file_and_the_rerun(run: Path) -> None:
    path = run / "factors" / "item_factors.parquet"
    truncate(path)
    with pytest.raises(UserError) as e:
        read_table(path)
    assert e.value.where == str(path)
    rerun = f"rerun: socialfeat factorize {run} -c {run}/factors/config.yaml"
    assert e.value.message.startswith("is damaged (100 bytes where metrics.json recorded ")  # its fingerprint
    assert e.value.message.endswith(f"); {rerun}")
    forget_fingerprints(run / "factors" / "metrics.json")  # factors from before fingerprints: the parser tells
    with pytest.raises(UserError) as e:
        read_table(path)
    assert e.value.message == f"is damaged (not a Parquet file); {rerun}"
    path.write_bytes(b"")
    with pytest.raises(UserError, match=r"is damaged \(empty file\)"):
        read_table(path)
    with pytest.raises(UserError, match=r"is damaged \(no column 'nope'\)"):
        read_table(run / "factors" / "user_factors.parquet", columns=["user_id", "nope"])
    (run / "targets" / "summary.json").write_text('{"items": 3,')
    with pytest.raises(
        UserError, match=r"summary.json: is damaged \(not valid JSON: .* line 1 .*rerun: socialfeat targets"
    ):
        read_json(run / "targets" / "summary.json")
    (run / "targets" / "summary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match=r"not UTF-8 text"):
        read_json(run / "targets" / "summary.json")
    truncate(run / "model" / "weights.safetensors", 5)
    with pytest.raises(
        UserError, match=r"weights.safetensors: is damaged \(5 bytes where model.json recorded [\d,]+\)"
    ):
        read_safetensors(run / "model" / "weights.safetensors")
    forget_fingerprints(run / "model" / "model.json")  # a model trained before fingerprints: read as before
    with pytest.raises(UserError, match=r"weights.safetensors: is damaged \(not a safetensors file"):
        read_safetensors(run / "model" / "weights.safetensors")


def test_a_missing_stage_folder_is_named_with_the_command_that_makes_it(run: Path) -> None:
    shutil.rmtree(run / "factors")
    e = missing(run / "factors" / "item_split.parquet")
    assert (e.where, e.message) == (str(run / "factors"), f"not found; make it with: socialfeat factorize {run}")
    (run / "features" / "learned.json").unlink()
    e = missing(run / "features" / "learned.json")
    assert e.where == str(run / "features" / "learned.json")
    assert e.message == f"not found; make it with: socialfeat embed {run} --source learned -c {run}/model/config.yaml"


# ---------------------------------------------------------------------------------------------------- the cases
def test_targets_without_dataset_names_ingest(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(run / "dataset")
    line = one_line(["targets", str(run)], capsys)
    assert line == (
        f"error: {run}/dataset: not found; make it with: "
        f"socialfeat ingest --interactions INTERACTIONS --items ITEMS --out {run}/dataset"
    )


def test_a_damaged_dataset_names_ingest_with_its_recorded_config_which_repairs_it(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = run / "dataset" / "items.parquet"
    before = pq.read_table(items)
    truncate(items)
    line = one_line(["targets", str(run)], capsys)
    assert line.startswith(f"error: {items}: is damaged (100 bytes where stats.json recorded ")
    assert line.endswith(f"); rerun: socialfeat ingest -c {run}/dataset/config.yaml --out {run}/dataset")
    ok(hint(line))
    assert pq.read_table(items).equals(before)


def test_similar_with_a_truncated_feature_file_names_embed(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    item = first_item(run)
    path = run / "features" / "learned.parquet"
    truncate(path)
    line = one_line(["similar", str(run), item], capsys)
    assert line.startswith(f"error: {path}: is damaged (100 bytes where learned.json recorded ")
    assert line.endswith(f"); rerun: socialfeat embed {run} --source learned -c {run}/model/config.yaml")
    ok(hint(line))
    ok(["similar", str(run), item])


def test_similar_image_with_truncated_weights_names_train(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run / "model" / "weights.safetensors"
    truncate(path)
    line = one_line(["similar", str(run), "--image", str(image_of(run))], capsys)
    assert line.startswith(f"error: {path}: is damaged (100 bytes where model.json recorded ")
    assert line.endswith(f"; rerun: socialfeat train {run} -c {run}/model/config.yaml")


def test_weights_of_another_model_are_damaged_too(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file, save_file

    path = run / "model" / "weights.safetensors"
    state = load_file(str(path))
    state.pop(next(iter(state)))
    st = path.stat()
    save_file(state, str(path))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # damage, not a retrained model
    line = one_line(["similar", str(run), "--image", str(image_of(run))], capsys)
    assert line.startswith(f"error: {path}: is damaged (") and "where model.json recorded" in line  # its fingerprint
    assert line.endswith(f"rerun: socialfeat train {run} -c {run}/model/config.yaml")
    forget_fingerprints(run / "model" / "model.json")  # a model from before fingerprints: loading still checks it
    line = one_line(["similar", str(run), "--image", str(image_of(run))], capsys)
    assert line.startswith(f"error: {path}: is damaged (does not fit model.json: ")


def test_similar_with_a_garbage_index_names_index(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    item = first_item(run)
    ok(["index", str(run)])
    path = index_path(run, "learned")
    garble(path)
    line = one_line(["similar", str(run), item], capsys)
    assert line == (
        f"error: {path}: is damaged (its sha256 is not the one learned.faiss.json recorded); "
        f"rerun: socialfeat index {run} --source learned -c {run}/model/config.yaml"
    )
    ok(hint(line))
    ok(["similar", str(run), item])


def test_a_garbage_index_sidecar_is_rebuilt(run: Path) -> None:
    item = first_item(run)
    ok(["index", str(run)])
    path = index_path(run, "learned")
    garble(path.with_name(path.name + ".json"))
    ok(["similar", str(run), item])  # the sidecar is the index's own cache record: unreadable means rebuild
    assert json.loads(path.with_name(path.name + ".json").read_text())["items"] > 0


def test_garbage_json_beside_the_features_and_the_model(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(image_of(run))
    summary = run / "features" / "learned.json"
    saved = summary.read_bytes()
    _keep_time(summary, b"{not json")
    line = one_line(["similar", str(run), "--image", image], capsys)
    assert line == (
        f"error: {summary}: is damaged (not valid JSON: Expecting property name enclosed in double quotes at line 1 "
        f"column 2); rerun: socialfeat embed {run} --source learned -c {run}/model/config.yaml"
    )
    _keep_time(summary, saved)
    meta = run / "model" / "model.json"
    _keep_time(meta, b"[1, 2]")
    line = one_line(["similar", str(run), "--image", image], capsys)
    assert line.startswith(f"error: {meta}: is damaged (not a model description: ")
    assert line.endswith(f"rerun: socialfeat train {run} -c {run}/model/config.yaml")


def test_similar_image_without_a_model_names_train(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(run / "model")
    line = one_line(["similar", str(run), "--image", str(image_of(run)), "--set", "serve.runtime=torch"], capsys)
    assert f"{run}/model: not found; make it with: socialfeat train {run}" in line


def test_the_report_names_a_damaged_file_and_its_rerun(run: Path, caplog: pytest.LogCaptureFixture) -> None:
    from socialfeat.report import report

    truncate(run / "features" / "learned.parquet")
    _keep_time(run / "factors" / "metrics.json", b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="socialfeat"):
        html = report(load_config(), run).read_text()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    features = f"{run}/features/learned.parquet: is damaged (100 bytes where learned.json recorded"
    assert any("'Nearest neighbours' skipped" in w and features in w for w in warnings), warnings
    assert any(f"{run}/factors/metrics.json: is damaged" in w for w in warnings), warnings
    assert "features/learned.parquet: is damaged (100 bytes where" in html  # the section says so too


def test_a_damaged_image_cache_is_rebuilt(run: Path, caplog: pytest.LogCaptureFixture) -> None:
    from socialfeat.data.batches import run_image_cache

    cache = next((run / "cache").glob("images-*"))
    size = int(cache.name.removeprefix("images-"))
    truncate(cache / "images.npy", 64)
    with caplog.at_level(logging.WARNING, logger="socialfeat"):
        rebuilt = run_image_cache(run, size)
    assert rebuilt.array().shape[0] == len(rebuilt.item_ids) > 0
    assert any("is damaged" in r.getMessage() and str(cache) in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------------- ONNX
@pytest.fixture
def onnx_ready() -> None:
    for name in ("onnx", "onnxruntime", "onnxscript"):
        need_module(name, "the export extra is not installed")


def test_a_garbage_onnx_export_is_named_with_export(
    run: Path, capsys: pytest.CaptureFixture[str], onnx_ready: None
) -> None:
    """An export whose sidecar vouches for it (same weights, same sha256) but that ONNX Runtime cannot load."""
    from socialfeat.export import FORMAT, export_path, fingerprint, prepared_model, sidecar_path

    model, size, _ = prepared_model(load_config(), run, "learned")
    path = export_path(run, "learned")
    path.parent.mkdir()
    path.write_bytes(b"\x08\x07garbage that is not a protobuf" * 20)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = {"format": FORMAT, "fingerprint": fingerprint(model, size), "onnx_sha256": sha, "image_size": size}
    sidecar_path(path).write_text(json.dumps({**meta, **fingerprints(path.parent, path.name)}))
    argv = ["similar", str(run), "--image", str(image_of(run)), "--set", "serve.runtime=onnx"]
    line = one_line(argv, capsys)
    assert line.startswith(f"error: {path}: is damaged (")
    assert line.endswith(f"; rerun: socialfeat export {run} --source learned -c {run}/model/config.yaml")


def test_an_onnx_file_its_sidecar_does_not_describe_is_called_damaged(run: Path, onnx_ready: None) -> None:
    from socialfeat.export import FORMAT, export_path, export_state, fingerprint, prepared_model, sidecar_path

    model, size, _ = prepared_model(load_config(), run, "learned")
    path = export_path(run, "learned")
    path.parent.mkdir()
    path.write_bytes(b"garbage")
    meta = {"format": FORMAT, "fingerprint": fingerprint(model, size), "onnx_sha256": "0" * 64}
    sidecar_path(path).write_text(json.dumps(meta))
    assert export_state(path, model, size) == (None, "is stale (written before exports were fingerprinted)")
    meta["fingerprints"] = {"learned.onnx": {"bytes": 7, "sha256": "0" * 64}}
    sidecar_path(path).write_text(json.dumps(meta))
    assert export_state(path, model, size) == (None, "is damaged (its sha256 is not the one learned.json recorded)")
    sidecar_path(path).write_text("[]")
    assert export_state(path, model, size)[1] == "is damaged (its sidecar learned.json is not a JSON object)"
    sidecar_path(path).write_text(json.dumps({**meta, "fingerprint": "other"}))
    assert export_state(path, model, size)[1] == "is stale (the model changed)"


def test_a_run_that_is_not_there_starts_with_ingest(tmp_path: Path) -> None:
    e = missing(tmp_path / "nope" / "dataset" / "items.parquet")
    assert (e.where, e.message) == (
        str(tmp_path / "nope"),
        f"run folder not found; start it with: socialfeat ingest --interactions INTERACTIONS --items ITEMS "
        f"--out {tmp_path}/nope/dataset",
    )


def test_the_explorer_does_not_start_on_a_damaged_feature_file(run: Path) -> None:
    from socialfeat.serve.explorer import Explorer

    path = run / "features" / "imagenet.parquet"
    truncate(path)
    with pytest.raises(UserError) as e:
        Explorer(load_config(None, ["serve.runtime=torch"]), run)
    assert e.value.where == str(path)
    assert e.value.message.startswith("is damaged (100 bytes where imagenet.json recorded ")
    assert e.value.message.endswith(f"; rerun: socialfeat embed {run} --source imagenet -c {run}/model/config.yaml")


def test_a_content_model_whose_files_do_not_belong_together_is_damaged(run: Path) -> None:
    from safetensors.numpy import save_file

    from socialfeat.content import ContentModel

    folder = run / "content"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"blocks": {"learned": {}}, "weights": {"learned": 1.0}}))
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match=r"model.safetensors: is damaged \(.*\); rerun: socialfeat content "):
        ContentModel(run)
    import numpy as np

    save_file({"other.weight": np.zeros(2, np.float32)}, str(folder / "model.safetensors"))
    with pytest.raises(UserError, match=r"model.safetensors: is damaged \(does not fit model.json \(KeyError"):
        ContentModel(run)
