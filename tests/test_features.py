"""Feature sources: ``embed.block_stats`` widens the embedding for every reader alike, and a new image is
embedded with the statistics its run's features were made with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from socialfeat.config import load_config
from socialfeat.embed import embed
from socialfeat.features import read_features
from socialfeat.index import similar


def test_block_stats_widen_the_features_and_a_new_image_lands_in_the_same_space(
    embedded_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    _, pooled = read_features(run, "learned")
    embed(load_config(None, ["embed.block_stats=2"]), run, "learned")
    _, richer = read_features(run, "learned")
    # the tiny net's last two blocks have 48 and 64 channels: a mean and a std for each
    assert richer.shape == (pooled.shape[0], pooled.shape[1] + 2 * (48 + 64))
    assert richer[:, : pooled.shape[1]] == pytest.approx(pooled, abs=1e-5)
    recorded = json.loads((run / "features" / "learned.json").read_text())["provenance"]["config"]
    assert recorded["embed"]["block_stats"] == 2
    items = pq.read_table(run / "dataset" / "items.parquet", columns=["item_id", "image"]).to_pylist()
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    item = items[5]
    # a plain config: the width (and the statistics) come from what embed recorded
    rows = similar(load_config(), run, image=root / item["image"], source="learned", k=2)
    assert rows[0]["item_id"] == item["item_id"] and rows[0]["score"] == pytest.approx(1.0, abs=1e-4)
