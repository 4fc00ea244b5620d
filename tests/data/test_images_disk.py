"""The image cache and the disk: a cache that will not fit is one line before anything is decoded, with nothing
left behind; the file is allocated whole (a full disk is ENOSPC up front, never SIGBUS in a decoder); skipped
images are compacted in place, so a rebuild never holds more than the new cache plus the one it replaces."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from filesystems import tmpfs
from PIL import Image

from socialfeat.data import images
from socialfeat.data.images import ImageCache, build_cache, cache_bytes, human_bytes, load_image
from socialfeat.errors import UserError


def _pictures(root: Path, n: int, missing: tuple[int, ...] = ()) -> list[tuple[object, str]]:
    """n small PNGs, each one colour (so a row shows which image it holds); ``missing`` are listed but absent."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i not in missing:
            Image.new("RGB", (12, 9), (i % 256, i // 256 * 40, 7)).save(root / f"{i}.png")
    return [(i, f"{i}.png") for i in range(n)]


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "load_image", lambda *a, **k: pytest.fail("decoded an image"))


def test_a_cache_that_will_not_fit_is_one_line_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = _pictures(tmp_path / "img", 7)
    free = 1_234_000_000

    def disk_usage(path: object) -> shutil._ntuple_diskusage:
        assert Path(str(path)) == tmp_path  # the nearest folder that exists: the cache's own is not made yet
        return shutil._ntuple_diskusage(10**12, 10**12 - free, free)

    monkeypatch.setattr(images.shutil, "disk_usage", disk_usage)
    _no_decoding(monkeypatch)
    out = tmp_path / "runs" / "cache" / "images-10000"  # 7 × 10000² × 3 bytes: 2.1 GB
    with pytest.raises(UserError) as e:
        build_cache(items, tmp_path / "img", out, size=10_000, workers=1)
    assert str(e.value) == (
        f"{out.parent}: cache needs 2.1 GB for 7 images at 10000 px, 1.2 GB free; lower train.image_size or free space"
    )
    assert not (tmp_path / "runs").exists()


def test_the_size_a_cache_needs() -> None:
    """What the README's scaling section quotes: size² × 3 bytes an image, plus its index."""
    assert human_bytes(cache_bytes(423_000, 224)) == "63.7 GB"
    assert human_bytes(cache_bytes(2_000_000, 224)) == "301.2 GB"
    assert human_bytes(cache_bytes(100_000, 96)) == "2.8 GB"


def test_a_real_small_disk_refuses_up_front_and_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = _pictures(tmp_path / "img", 10)
    with tmpfs(tmp_path / "small", "1m") as small:
        _no_decoding(monkeypatch)
        with pytest.raises(UserError, match=r"cache needs 2\.2 MB for 10 images at 256 px, 1\.0 MB free"):
            build_cache(items, tmp_path / "img", small / "cache" / "c", size=256, workers=1)
        assert os.listdir(small) == []
        # should the space go between the check and the allocation: one ENOSPC line, still before any decoding
        monkeypatch.setattr(images, "check_space", lambda *a: None)
        with pytest.raises(UserError) as e:
            build_cache(items, tmp_path / "img", small / "cache" / "c", size=256, workers=1)
        assert e.value.where == str(small / "cache" / "c") and e.value.message.startswith("no space left on device")
        assert os.listdir(small) == []


def test_the_file_is_allocated_whole_not_sparse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (50, 64, 64, 3)
    offset = images._allocate(tmp_path / "a.npy", shape)
    st = os.stat(tmp_path / "a.npy")
    assert st.st_size == offset + int(np.prod(shape)) and st.st_blocks * 512 >= st.st_size
    assert np.load(tmp_path / "a.npy", mmap_mode="r").shape == shape
    # a file system that cannot reserve blocks: a sparse file of the same size, and the build works as before
    refused = OSError(errno.EOPNOTSUPP, "Operation not supported")
    monkeypatch.setattr(images.os, "posix_fallocate", lambda *a: (_ for _ in ()).throw(refused))
    offset = images._allocate(tmp_path / "b.npy", shape)
    assert os.stat(tmp_path / "b.npy").st_size == offset + int(np.prod(shape))
    items = _pictures(tmp_path / "img", 5)
    cache = build_cache(items, tmp_path / "img", tmp_path / "cache", size=16, workers=1)
    assert cache.item_ids == [0, 1, 2, 3, 4]


def test_skipped_images_are_compacted_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows move down within the one file, which is then cut short: no second copy is ever written."""
    items = _pictures(tmp_path / "img", 1100, missing=(0, 5, 1050, 1099))  # rows move in chunks of 1024
    made: list[int] = []
    real = images._allocate

    def allocate(npy: Path, shape: tuple[int, ...]) -> int:
        offset = real(npy, shape)
        made.append(os.stat(npy).st_ino)
        return offset

    monkeypatch.setattr(images, "_allocate", allocate)
    cache = build_cache(items, tmp_path / "img", tmp_path / "cache", size=8, workers=1)
    arr = cache.array()
    assert os.stat(tmp_path / "cache" / "images.npy").st_ino == made[0]  # the same file, cut short
    assert arr.shape == (1096, 8, 8, 3) and cache.problem_counts == {"missing": 4}
    assert os.stat(tmp_path / "cache" / "images.npy").st_size == 128 + arr.nbytes
    for row in (0, 3, 4, 1046, 1047, 1095):
        item = cache.item_ids[row]
        np.testing.assert_array_equal(arr[row], load_image(tmp_path / "img" / f"{item}.png", 8))
    assert ImageCache.open(tmp_path / "cache").item_ids == cache.item_ids


def test_a_rebuild_holds_at_most_the_new_cache_and_the_old_one(tmp_path: Path) -> None:
    """On a file system with room for the old cache and the new one, but not for a third copy (which the old
    compaction wrote beside the decoded rows), a rebuild with skipped images succeeds and replaces the old cache."""
    size, row = 256, 256 * 256 * 3
    items = _pictures(tmp_path / "img", 20)
    old_bytes = 18 * row
    room = old_bytes + cache_bytes(20, size) + (64 << 10)  # the old cache, the new one's need, the small files
    assert room < old_bytes + 20 * row + 18 * row  # no room for old + decoded + a compacted copy
    with tmpfs(tmp_path / "disk", f"{room // 1024}k") as disk:
        out = disk / "cache"
        old = build_cache(items[:18], tmp_path / "img", out, size=size, workers=1)
        assert len(old.item_ids) == 18
        (tmp_path / "img" / "3.png").unlink()
        (tmp_path / "img" / "7.png").write_bytes(b"not a picture")
        new = build_cache(items, tmp_path / "img", out, size=size, workers=1)
        assert len(new.item_ids) == 18 and new.problem_counts == {"missing": 1, "not an image": 1}
        assert sorted(os.listdir(disk)) == ["cache"]
        assert ImageCache.open(out).item_ids == [i for i in range(20) if i not in (3, 7)]
