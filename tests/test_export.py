"""``export`` and the ONNX runtime: the exported graph computes what the PyTorch model computes, on real images and
for every head; a stale export is detected and rebuilt, never used; a failure leaves nothing behind."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from cli_helpers import fails, ok
from environment import need_module

from socialfeat.artifacts import fingerprints
from socialfeat.config import load_config
from socialfeat.data.images import load_image
from socialfeat.export import OnnxEncoder, encoder_for, export, export_path, load_export, prepared_model
from socialfeat.features import encode_batch, read_features
from socialfeat.index import image_outputs

need_module("onnxruntime", "the export extra is not installed")

TOLERANCE = 1e-4  # relative: max |onnx − torch| / max |torch|, per output


@pytest.fixture(scope="module")
def run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(embedded_run, dest, ignore=shutil.ignore_patterns("export"))
    return dest


def real_images(run: Path, n: int, size: int) -> np.ndarray:
    """``n`` of the run's own images, decoded as every reader decodes them."""
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    items = pq.read_table(run / "dataset" / "items.parquet", columns=["image"]).column("image").to_pylist()
    return np.stack([load_image(root / p, size) for p in items[:n]])


def relative(reference: np.ndarray, got: np.ndarray) -> float:
    return float(np.max(np.abs(reference - got)) / np.max(np.abs(reference)))


def test_onnx_equals_pytorch_on_real_images_for_every_head(run: Path) -> None:
    cfg = load_config()
    result = export(cfg, run, "learned")
    assert result.path == export_path(run, "learned") and result.path.is_file()
    meta = json.loads(result.path.with_suffix(".json").read_text())
    model, size, _ = prepared_model(cfg, run, "learned")
    assert meta["input"] == {"name": "images", "dtype": "uint8", "layout": "NHWC", "shape": ["batch", size, size, 3]}
    assert set(meta["heads"]) == set(model.targets) and len(model.targets) == 2
    assert meta["outputs"]["features"] == model.num_features and "crop" in meta and meta["fingerprint"]
    encoder = OnnxEncoder(result.path, meta, model.targets)
    for batch in (1, 7):  # the batch size is dynamic
        images = real_images(run, batch, size)
        reference, got = encode_batch(model, images), encoder(images)
        assert set(got) == {"features", *model.targets}
        for name, value in reference.items():
            assert got[name].shape == value.shape
            assert relative(value, got[name]) < TOLERANCE, name


def test_a_plain_onnxruntime_session_reads_the_export(run: Path) -> None:
    """What the README shows a user: five lines of onnxruntime, nothing of socialfeat."""
    import onnxruntime as ort

    path = export(load_config(), run, "learned").path
    meta = json.loads(path.with_suffix(".json").read_text())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = real_images(run, 3, meta["image_size"])
    features, *heads = session.run(None, {"images": images})
    assert features.shape == (3, meta["outputs"]["features"]) and len(heads) == len(meta["heads"])


def test_a_stale_export_is_detected_rebuilt_and_never_used(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    cfg = load_config(None, ["serve.runtime=onnx"])
    first = encoder_for(cfg, mine, "learned")
    assert first.runtime == "onnx"
    stamp = export_path(mine, "learned").stat().st_mtime_ns
    assert encoder_for(cfg, mine, "learned").encoder.meta["fingerprint"] == first.encoder.meta["fingerprint"]
    assert export_path(mine, "learned").stat().st_mtime_ns == stamp  # a fresh export is reused, not redone
    # the weights change after the export: retrain in place
    from safetensors.torch import load_file, save_file

    weights = mine / "model" / "weights.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if k.startswith("heads."))
    state[key] = state[key] + 0.5
    save_file(state, str(weights))
    meta = weights.with_name("model.json")  # as train writes it: the new weights' fingerprint beside them
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **fingerprints(weights.parent, weights.name)}))
    model, size, _ = prepared_model(cfg, mine, "learned")
    assert load_export(export_path(mine, "learned"), model, size) is None  # stale: refused
    with caplog.at_level(logging.WARNING, logger="socialfeat"):
        again = encoder_for(cfg, mine, "learned")
    assert any("stale" in r.getMessage() for r in caplog.records)
    assert again.encoder.meta["fingerprint"] != first.encoder.meta["fingerprint"]
    images = real_images(mine, 2, size)
    reference, got = encode_batch(model, images), again.encoder(images)
    assert all(relative(reference[k], got[k]) < TOLERANCE for k in reference)  # the new weights, not the old


def test_a_swapped_onnx_file_is_not_trusted(run: Path, tmp_path: Path) -> None:
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    path = export(load_config(), mine, "learned").path
    model, size, _ = prepared_model(load_config(), mine, "learned")
    assert load_export(path, model, size) is not None
    path.write_bytes(path.read_bytes() + b"\0")  # the graph no longer the one the sidecar describes
    assert load_export(path, model, size) is None


def test_similar_by_image_gives_the_same_answer_on_both_runtimes(run: Path) -> None:
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    image = root / pq.read_table(run / "dataset" / "items.parquet", columns=["image"]).column("image")[3].as_py()
    onnx = image_outputs(load_config(None, ["serve.runtime=onnx"]), run, image, "learned")
    eager = image_outputs(load_config(None, ["serve.runtime=torch"]), run, image, "learned")
    assert set(onnx) == set(eager) and {"features", "head_factors"} <= set(onnx)
    for name in eager:
        assert relative(eager[name], onnx[name]) < TOLERANCE, name


def test_embed_images_on_onnx_gives_the_torch_vectors(run: Path, tmp_path: Path) -> None:
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    table = tmp_path / "photos.csv"
    images = pq.read_table(run / "dataset" / "items.parquet", columns=["image"]).column("image").to_pylist()[:40]
    table.write_text("image\n" + "\n".join(images) + "\n")
    vectors = {}
    for runtime in ("onnx", "torch"):
        out = tmp_path / f"{runtime}.parquet"
        ok(["embed", str(run), "--images", str(table), "--image-root", str(root), "--out", str(out),
            "--set", f"serve.runtime={runtime}"])  # fmt: skip
        assert json.loads(out.with_suffix(".json").read_text())["runtime"] == runtime
        t = pq.read_table(out)
        vectors[runtime] = {c: np.stack(t.column(c).to_numpy(zero_copy_only=False)) for c in t.column_names if
                            c == "features" or c.startswith("head_")}  # fmt: skip
    assert set(vectors["onnx"]) == set(vectors["torch"]) and len(vectors["onnx"]) == 3
    for name, value in vectors["torch"].items():
        assert relative(value, vectors["onnx"][name]) < TOLERANCE, name
    _, items = read_features(run, "learned")
    assert relative(items[:40], vectors["onnx"]["features"]) < TOLERANCE  # and what embed wrote for the run


def test_the_cli_writes_the_export_and_refuses_bad_flags(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    ok(["export", str(run), "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "uint8 [batch," in printed and "head_factors" in printed
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert "--out: expected a .onnx file name" in fails(["export", str(run), "--out", str(tmp_path / "m.pt")], capsys)
    assert "--opset: " in fails(["export", str(run), "--opset", "13"], capsys)
    assert "nope: run folder not found" in fails(["export", str(tmp_path / "nope")], capsys)


def test_a_backbone_that_fails_to_export_is_named_and_leaves_nothing(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("Unsupported operator: aten::weird\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", broken)
    out = tmp_path / "x.onnx"
    line = fails(["export", str(run), "--out", str(out)], capsys)
    assert "backbone socialfeat_tiny: cannot be exported to ONNX" in line and "aten::weird" in line
    assert not out.exists() and not out.with_suffix(".json").exists()
    # auto falls back to PyTorch, saying why; onnx refuses
    mine = tmp_path / "run"
    shutil.copytree(run, mine, ignore=shutil.ignore_patterns("export"))
    assert encoder_for(load_config(), mine, "learned").runtime == "torch"
    from socialfeat.errors import UserError

    with pytest.raises(UserError, match="cannot be exported"):
        encoder_for(load_config(None, ["serve.runtime=onnx"]), mine, "learned")


def test_block_statistics_export_too(run: Path, tmp_path: Path) -> None:
    from socialfeat.embed import embed

    mine = tmp_path / "run"
    shutil.copytree(run, mine, ignore=shutil.ignore_patterns("export"))
    embed(load_config(None, ["embed.block_stats=2"]), mine, "learned")
    result = export(load_config(), mine, "learned")  # the statistics come from what embed recorded
    model, size, _ = prepared_model(load_config(), mine, "learned")
    assert result.meta["block_stats"] == 2 and result.meta["outputs"]["features"] == model.num_features + 224
    images = real_images(mine, 4, size)
    reference = encode_batch(model, images)
    got = OnnxEncoder(result.path, result.meta, model.targets)(images)
    assert all(relative(reference[k], got[k]) < TOLERANCE for k in reference)
    _, items = read_features(mine, "learned")
    assert relative(items[:4], got["features"]) < TOLERANCE


def test_opset_is_bounded_by_what_this_installation_writes_and_runs(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    import socialfeat.export as export_module

    low, high = export_module.opset_range()
    assert low == 18 and high >= 18
    for opset in (str(high + 1), "99", str(10**30)):
        line = fails(["export", str(run), "--opset", opset], capsys)
        assert line.startswith(f"error: --opset: expected an opset from 18 to {high} "), line
    out = tmp_path / "top.onnx"
    ok(["export", str(run), "--out", str(out), "--opset", str(high)])  # the top of the range is written as asked
    assert json.loads(out.with_suffix(".json").read_text())["opset"] == high
    assert {o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")} == {high}
    # an opset the exporter cannot reach: it falls back to 18 silently; the sidecar must never claim the other
    monkeypatch.setattr(export_module, "opset_range", lambda: (18, 200))
    bad = tmp_path / "bad.onnx"
    line = fails(["export", str(run), "--out", str(bad), "--opset", "150"], capsys)
    assert "--opset: torch's exporter could not convert backbone socialfeat_tiny to opset 150" in line, line
    assert not bad.exists() and not bad.with_suffix(".json").exists()
