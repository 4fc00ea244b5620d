"""``embed --images``: any table of images through a run's model — bad images counted and listed, rows in table
order, and the same vector as ``features/learned.parquet`` for an image that is also a run item."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import fails, ok

from socialfeat.features import read_features


@pytest.fixture
def run(embedded_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(embedded_run, tmp_path / "run"))


def test_embed_a_table_of_images(run: Path, platform: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ids = ["i00003", "i00010", "i00042", "i00100"]
    rows = [
        f"{platform}/images/i00003.png,a",
        f"{tmp_path}/gone.png,b",
        f"{platform}/images/i00010.png,c",
        f"{tmp_path}/broken.png,d",
        f"{platform}/images/i00042.png,e",
        ",f",
        f"{platform}/images/i00100.png,g",
    ]
    table = tmp_path / "mine.csv"
    table.write_text("path,tag\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out" / "mine.parquet"
    argv = ["embed", str(run), "--images", str(table), "--image-column", "path", "--image-root", "/", "--out", str(out)]
    ok(argv)
    text = capsys.readouterr().out
    t = pq.read_table(out)
    assert t.column_names == ["image", "tag", "features", "head_factors", "head_factor_clusters"]
    assert t.column("tag").to_pylist() == ["a", "c", "e", "g"]  # the usable rows, in table order
    assert t.column("image").to_pylist() == [rows[k].split(",")[0] for k in (0, 2, 4, 6)]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    p = sidecar["problems"]
    assert p["total"] == 3 and p["rows"] == [1, 3, 5] and p["counts"] == {"missing": 2, "not an image": 1}
    assert [e["reason"] for e in p["examples"]] == ["missing", "not an image", "missing"]
    assert sidecar["embedded"] == 4 and sidecar["rows"] == 7 and sidecar["image_size"] == 32
    assert "wrote" in text and "4 of 7 images" in text
    assert "skipped 3 images (2 missing, 1 not an image)" in text and f"{tmp_path}/gone.png" in text
    # the same preprocessing as the run's own items: the same vectors
    item_ids, learned = read_features(run, "learned")
    mine = np.array(t.column("features").to_pylist(), dtype=np.float32)
    ref = learned[[item_ids.index(i) for i in ids]]
    assert np.allclose(mine, ref, atol=1e-5)
    heads = np.array(t.column("head_factors").to_pylist(), dtype=np.float32)
    _, ref_heads = read_features(run, "learned", "head_factors")
    assert np.allclose(heads, ref_heads[[item_ids.index(i) for i in ids]], atol=1e-5)
    # a second call reuses the image cache
    caches = sorted((run / "cache").glob("external-32-*"))
    assert len(caches) == 1
    stamp = (caches[0] / "images.npy").stat().st_mtime_ns
    ok(argv)
    assert (caches[0] / "images.npy").stat().st_mtime_ns == stamp


def test_embed_images_user_errors(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "t.csv"
    table.write_text("file\nx.png\n")
    assert "error: --out: --images and --out go together" in fails(["embed", str(run), "--images", str(table)], capsys)
    line = fails(["embed", str(run), "--out", str(tmp_path / "o.parquet")], capsys)
    assert line.startswith("error: --images:")
    line = fails(["embed", str(run), "--images", str(table), "--out", str(tmp_path / "o.parquet")], capsys)
    assert str(table) in line and "no image column 'image' (found: file)" in line
    line = fails(
        ["embed", str(run), "--images", str(table), "--image-column", "file", "--out", str(tmp_path / "o.parquet")],
        capsys,
    )
    assert "none of the 1 images could be used (1 missing)" in line
    line = fails(["embed", str(run), "--images", str(table), "--out", str(tmp_path / "o.csv")], capsys)
    assert line.startswith("error: --out: expected a .parquet or .pq file name")


def test_an_unreadable_table_fails_in_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the fuzz run: Arrow's error for a Parquet table with a duplicate column goes on to list the schema on
    lines of its own, which made a four-line "error:"."""
    import pyarrow as pa

    table = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a.png"]), pa.array(["b.png"])], names=["image", "image"]), table)
    line = fails(["embed", str(run), "--images", str(table), "--out", str(tmp_path / "o.parquet")], capsys)
    assert str(table) in line and "not a readable parquet table" in line
    assert not (tmp_path / "o.parquet").exists()


def test_a_latin1_table_names_its_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a decoder's buffer offset ("position 216"): the line a user can find in an editor."""
    table = tmp_path / "t.csv"
    table.write_bytes(b"image,label\n" + b"a.png,x\n" * 20 + b"b.png,caf\xe9\n")
    line = fails(["embed", str(run), "--images", str(table), "--out", str(tmp_path / "o.parquet")], capsys)
    assert line == f"error: {table}: line 22: byte 0xe9 is not UTF-8; save the table as UTF-8"
