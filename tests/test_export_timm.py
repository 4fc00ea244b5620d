"""``export --format timm``: the learned backbone leaves as a folder that plain timm loads, strictly, and its pooled
features are what ``embed`` wrote for the same items; a backbone timm cannot build is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok

from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.export_timm import TIMM_MEAN, TIMM_STD, export_timm, timm_export_path

TOLERANCE = 1e-5  # relative: max |timm − embed| / max |embed|, over the items compared
ITEMS = 48
BACKBONE = "test_efficientnet"  # one of timm's own test models: a real timm architecture, trained in seconds

# Plain timm in a fresh interpreter, socialfeat never imported: what a user of the exported folder runs.
# It loads the folder, preprocesses the item images with timm's own transform, and saves the pooled features.
PLAIN_TIMM = """
import sys, numpy as np, timm, torch
from PIL import Image
folder, out, *paths = sys.argv[1:]
model = timm.create_model("local-dir:" + folder, pretrained=True, num_classes=0).eval()
cfg = timm.data.resolve_data_config({}, model=model)
transform = timm.data.create_transform(**cfg)
batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
with torch.no_grad():
    np.save(out, model(batch).numpy())
print(cfg)
"""


@pytest.fixture(scope="module")
def timm_run(warm_run: Path) -> Path:
    """The small platform trained for one epoch on a timm backbone, and embedded: what a user exports."""
    from socialfeat.embed import embed
    from socialfeat.train import train

    cfg = load_config(
        None,
        [
            f"train.backbone={BACKBONE}",
            "train.weights=random",
            "train.image_size=32",
            "train.epochs=1",
            "train.batch_size=32",
            "train.finetune=all",
            "train.threads=1",
            "train.targets=[factors,factor-clusters]",
        ],
    )
    train(cfg, warm_run)
    embed(cfg, warm_run, "learned")
    return warm_run


def _images(run: Path, n: int) -> tuple[list, list[Path]]:
    """The first ``n`` items of the run: their ids and image files."""
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    table = pq.read_table(run / "dataset" / "items.parquet", columns=["item_id", "image"]).slice(0, n)
    return table.column("item_id").to_pylist(), [root / p for p in table.column("image").to_pylist()]


def _embedded(run: Path, ids: list) -> tuple[np.ndarray, str]:
    """The rows ``embed`` wrote for ``ids`` (features/learned.parquet), and the runtime that made them."""
    table = pq.read_table(run / "features" / "learned.parquet", columns=["item_id", "features"])
    rows = {i: r for r, i in enumerate(table.column("item_id").to_pylist())}
    col = table.column("features").combine_chunks()
    matrix = col.flatten().to_numpy().reshape(len(table), col.type.list_size)
    runtime = json.loads((run / "features" / "learned.json").read_text())["runtime"]
    return matrix[[rows[i] for i in ids]], runtime


def test_plain_timm_loads_the_export_and_matches_embed(timm_run: Path, tmp_path: Path) -> None:
    """Like with like: the run embeds with ``embed.block_stats=0`` (the default), so ``features`` is the pure pooled
    backbone output, which is what timm's ``num_classes=0`` model returns. The embed rows come from the runtime
    ``embed`` chose (ONNX Runtime when installed); timm sees the original image files through its own transform,
    built from ``config.json`` alone."""
    import timm
    from safetensors.torch import load_file

    out = tmp_path / "hub-folder"
    result = export_timm(load_config(), timm_run, "learned", out)
    assert result.path == out and {p.name for p in out.iterdir()} == {
        "config.json",
        "model.safetensors",
        ".socialfeat.json",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == BACKBONE and config["num_classes"] == 0
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == TIMM_MEAN and cfg["std"] == TIMM_STD
    block = config["socialfeat"]
    assert block["source"] == "learned" and block["train"]["backbone"] == BACKBONE and block["block_stats"] == 0
    assert {"dataset", "factors", "targets", "model"} <= set(block["stages"])
    assert all(len(s["manifest_sha256"]) == 64 for s in block["stages"].values())
    assert block["max_relative_error"] <= 1e-4 and block["fingerprints"]["model.safetensors"]["sha256"]
    # timm's own key names: exactly the state dict of timm's model with no classifier, nothing missing or extra
    fresh = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    assert set(load_file(out / "model.safetensors")) == set(fresh.state_dict())
    assert config["num_features"] == fresh.num_features

    ids, paths = _images(timm_run, ITEMS)
    features = tmp_path / "timm.npy"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no socialfeat on the path: timm alone
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_TIMM, str(out), str(features), *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(features)
    reference, runtime = _embedded(timm_run, ids)
    assert got.shape == reference.shape == (ITEMS, config["num_features"])
    worst = float(np.max(np.abs(reference - got)) / np.max(np.abs(reference)))
    print(f"timm vs embed ({runtime}): max relative difference {worst:.2e} over {ITEMS} items")
    assert worst <= TOLERANCE, (worst, runtime)


def test_the_cli_writes_the_folder_replaces_its_own_and_refuses_a_foreign_one(
    timm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(["export", str(timm_run), "--format", "timm"])
    printed = capsys.readouterr().out
    default = timm_export_path(timm_run, "learned")
    assert f"wrote {default}" in printed and 'timm.create_model("local-dir:' in printed
    (default / "stale.txt").write_text("from before")
    ok(["export", str(timm_run), "--format", "timm"])  # an earlier timm export is replaced, as a whole
    assert sorted(p.name for p in default.iterdir()) == [".socialfeat.json", "config.json", "model.safetensors"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    line = fails(["export", str(timm_run), "--format", "timm", "--out", str(theirs)], capsys)
    assert "--out" in line and "left untouched" in line
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]


def test_a_backbone_timm_cannot_build_is_refused_in_one_line(
    embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny-timm"
    line = fails(["export", str(embedded_run), "--format", "timm", "--out", str(out)], capsys)
    assert line.startswith("error: --format timm: backbone socialfeat_tiny is not a timm model; supported: ")
    assert "tf_efficientnet_lite0" in line and not out.exists()
    with pytest.raises(UserError, match="not a timm model"):
        export_timm(load_config(), embedded_run, "learned", out)
    assert not out.exists()


def test_bad_format_and_onnx_only_flags_are_refused(embedded_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("keras", "TIMM", ""):
        line = fails(["export", str(embedded_run), "--format", bad], capsys)
        assert line == f"error: --format: expected onnx or timm, got '{bad}'"
    line = fails(["export", str(embedded_run), "--format", "timm", "--opset", "18"], capsys)
    assert line == "error: --opset: applies to --format onnx only"
