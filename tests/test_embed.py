"""``embed`` of a run's items through ONNX Runtime on CPU (``embed.runtime``): the same vectors as PyTorch for every
source, the export made once and remade when the model changes, PyTorch where ONNX Runtime is missing (auto) or
where it does not apply (GPU, torchrun)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from cli_helpers import fails
from environment import need_module

from socialfeat import export as export_module
from socialfeat.artifacts import fingerprints
from socialfeat.config import load_config
from socialfeat.embed import _runtime, embed
from socialfeat.export import export_path
from socialfeat.features import source_model
from socialfeat.runtime import Dist, default_workers

TOLERANCE = 1e-4  # relative: max |onnx − torch| / max |torch|, per column
TINY = [
    "train.backbone=socialfeat_tiny",
    "train.image_size=32",
    "train.threads=1",
]  # the random source is built from the backbone


def onnx_installed() -> None:
    need_module("onnxruntime", "the export extra is not installed")


@pytest.fixture(scope="module")
def run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with a meta-class model beside the learned one (the same network stands in for it: what matters
    here is a second trained source, not how it learned). Its exports (from conftest's embed) come along."""
    dest = tmp_path_factory.mktemp("embed") / "run"
    shutil.copytree(embedded_run, dest)
    shutil.copytree(dest / "model", dest / "meta-class")
    return dest


def columns(run: Path, source: str) -> dict[str, np.ndarray]:
    table = pq.read_table(run / "features" / f"{source}.parquet")
    out = {"item_id": np.asarray(table.column("item_id").to_pylist())}
    for name in table.column_names:
        if name == "features" or name.startswith("head_"):
            out[name] = np.stack(table.column(name).to_numpy(zero_copy_only=False))
    return out


def relative(reference: np.ndarray, got: np.ndarray) -> float:
    return float(np.max(np.abs(reference - got)) / max(float(np.max(np.abs(reference))), 1e-12))


def sidecar(run: Path, source: str) -> dict:
    return json.loads((run / "features" / f"{source}.json").read_text())


def embed_both(run: Path, source: str, *overrides: str) -> dict[str, dict[str, np.ndarray]]:
    """The source embedded by each runtime: {runtime: columns}."""
    got = {}
    for runtime in ("torch", "onnx"):
        embed(load_config(None, [*TINY, f"embed.runtime={runtime}", *overrides]), run, source)
        assert sidecar(run, source)["runtime"] == runtime
        got[runtime] = columns(run, source)
    return got


def assert_same_vectors(got: dict[str, dict[str, np.ndarray]], heads: int) -> None:
    torch_cols, onnx_cols = got["torch"], got["onnx"]
    assert set(torch_cols) == set(onnx_cols) and len(torch_cols) == 2 + heads
    assert (torch_cols["item_id"] == onnx_cols["item_id"]).all()
    for name, value in torch_cols.items():
        if name != "item_id":
            assert onnx_cols[name].shape == value.shape and onnx_cols[name].dtype == np.float32, name
            assert relative(value, onnx_cols[name]) < TOLERANCE, name


@pytest.mark.parametrize(("source", "heads"), [("learned", 2), ("meta-class", 2), ("imagenet", 0), ("random", 0)])
def test_onnx_gives_the_torch_vectors_for_every_source(run: Path, source: str, heads: int) -> None:
    onnx_installed()
    got = embed_both(run, source)
    assert_same_vectors(got, heads)
    meta = sidecar(run, source)
    assert meta["threads"] == 1 and meta["items"] == len(got["onnx"]["item_id"]) > 0  # train.threads when set
    assert export_path(run, source).is_file()  # made once, cached in RUN/export/


def test_block_statistics_run_on_onnx_too(run: Path, tmp_path: Path) -> None:
    onnx_installed()
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    got = embed_both(mine, "learned", "embed.block_stats=2")
    assert_same_vectors(got, 2)
    plain = columns(run, "learned")["features"]
    assert got["onnx"]["features"].shape[1] == plain.shape[1] + 224  # mean and std of the last two blocks
    assert json.loads(export_path(mine, "learned").with_suffix(".json").read_text())["block_stats"] == 2


def test_the_export_is_reused_and_remade_when_the_model_changes(run: Path, tmp_path: Path) -> None:
    onnx_installed()
    from safetensors.torch import load_file, save_file

    mine = tmp_path / "run"
    shutil.copytree(run, mine, ignore=shutil.ignore_patterns("export"))
    cfg = load_config(None, [*TINY, "embed.runtime=onnx"])
    embed(cfg, mine, "learned")
    path = export_path(mine, "learned")
    stamp = path.stat().st_mtime_ns
    embed(cfg, mine, "learned")
    assert path.stat().st_mtime_ns == stamp and sidecar(mine, "learned")["runtime"] == "onnx"  # reused
    weights = mine / "model" / "weights.safetensors"  # the model changes in place
    state = load_file(str(weights))
    key = next(k for k in state if k.startswith("heads."))
    state[key] = state[key] + 0.5
    save_file(state, str(weights))
    meta = weights.with_name("model.json")  # as train writes it: the new weights' fingerprint beside them
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **fingerprints(weights.parent, weights.name)}))
    got = embed_both(mine, "learned")  # torch first, then onnx: the stale export is remade, never used
    assert path.stat().st_mtime_ns != stamp
    assert_same_vectors(got, 2)


def test_auto_falls_back_to_torch_without_onnxruntime(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "run"
    shutil.copytree(run, mine, ignore=shutil.ignore_patterns("export"))
    why = "onnxruntime is not installed (pip install 'socialfeat[export]')"
    monkeypatch.setattr(export_module, "onnxruntime_available", lambda: why)
    embed(load_config(None, TINY), mine, "learned")  # auto
    assert sidecar(mine, "learned")["runtime"] == "torch" and sidecar(mine, "learned")["threads"] is None
    assert not export_path(mine, "learned").exists()
    line = fails(["embed", str(mine), "--set", "embed.runtime=onnx", "--set", "train.threads=1"], capsys)
    assert line == f"error: embed.runtime: onnx: {why}"


def test_gpu_and_torchrun_keep_pytorch(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a GPU runs the model or torchrun splits the items, ``embed.runtime`` does not apply."""
    monkeypatch.setattr(export_module, "_export", lambda *a, **k: pytest.fail("no export outside one CPU process"))
    cfg = load_config(None, [*TINY, "embed.runtime=onnx"])
    model, desc = source_model(run, cfg, "learned")
    for d in (Dist(rank=1, world=2), Dist(device=torch.device("cuda"))):
        found = _runtime(model, 32, desc, cfg, run, "learned", d)
        assert found.runtime == "torch" and found.encoder is model


def test_embed_workers_default_by_device() -> None:
    """``embed.workers`` unset: none on CPU (they would take the model's cores), some per GPU (at most 8)."""
    assert default_workers(None, Dist()) == 0
    gpu = default_workers(None, Dist(device=torch.device("cuda")))
    assert 1 <= gpu <= 8
    assert default_workers(3, Dist()) == 3 and default_workers(0, Dist(device=torch.device("cuda"))) == 0
    assert load_config().embed.workers is None
