"""The image cache: robust decoding of every kind of user image, an atomic build, and a cache that can be trusted."""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from environment import need
from PIL import Image, ImageFile

from socialfeat.data import images
from socialfeat.data.images import ImageCache, ImageError, build_cache, cache_key, load_image
from socialfeat.errors import UserError

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    arr = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 128)], 2)
    return Image.fromarray(arr.astype(np.uint8))


def _halves(w: int, h: int, left: tuple, right: tuple, mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, (w, h), right)
    im.paste(Image.new(mode, (w // 2, h), left), (0, 0))
    return im


def _noise(path: Path) -> bytes:
    arr = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return path.read_bytes()


@pytest.fixture
def good(tmp_path: Path) -> dict[str, Path]:
    """One file of every decodable kind."""
    d = tmp_path / "good"
    d.mkdir()
    files = {k: d / n for k, n in [("jpeg", "a.jpg"), ("png", "big.png"), ("gray", "g.png"), ("palette", "p.png")]}
    files |= {k: d / n for k, n in [("cmyk", "c.jpg"), ("rgba", "t.png"), ("exif", "r.jpg")]}
    _gradient(120, 80).save(files["jpeg"], quality=92)
    _gradient(1200, 900).save(files["png"])
    _gradient(90, 70).convert("L").save(files["gray"])
    _gradient(64, 96).convert("P", palette=Image.Palette.ADAPTIVE).save(files["palette"])
    _gradient(100, 100).convert("CMYK").save(files["cmyk"])
    _halves(80, 80, (0, 0, 0, 0), (*RED, 255), "RGBA").save(files["rgba"])  # left half fully transparent
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the left edge ends up on top
    _halves(80, 60, RED, BLUE).save(files["exif"], quality=95, exif=exif.tobytes())
    return files


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, Path]:
    """One file of every kind that must be refused, keyed by the expected reason."""
    d = tmp_path / "bad"
    d.mkdir()
    data = _noise(d / "whole.jpg")
    (d / "cut.jpg").write_bytes(data[: len(data) // 2])
    (d / "text.jpg").write_text("this is not a picture\n")
    (d / "empty.png").write_bytes(b"")
    broken = bytearray(_noise(d / "ok.png"))  # a valid header, then a scrambled pixel stream
    for k in range(200, len(broken) - 200, 50):
        broken[k] ^= 0xFF
    (d / "broken.png").write_bytes(bytes(broken))
    return {
        "truncated": d / "cut.jpg",
        "not an image": d / "text.jpg",
        "empty": d / "empty.png",
        "missing": d / "nowhere.jpg",
        "corrupt": d / "broken.png",
    }


@pytest.mark.parametrize("kind", ["jpeg", "png", "gray", "palette", "cmyk", "rgba", "exif"])
def test_load_image_every_good_kind(good: dict[str, Path], kind: str) -> None:
    out = load_image(good[kind], 48)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    assert out.std() > 0


def test_transparency_becomes_white(good: dict[str, Path]) -> None:
    out = load_image(good["rgba"], 40).astype(int)
    assert (out[:, :15] >= 250).all()  # the transparent left half
    assert np.abs(out[:, 25:] - RED).max() <= 3


def test_exif_orientation_is_applied(good: dict[str, Path]) -> None:
    out = load_image(good["exif"], 40).astype(int)
    top, bottom = out[:12].mean((0, 1)), out[-12:].mean((0, 1))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0], (top, bottom)


def test_shorter_side_resized_then_center_cropped(tmp_path: Path) -> None:
    im = Image.new("RGB", (300, 100), BLUE)
    im.paste(Image.new("RGB", (100, 100), RED), (100, 0))  # only the middle third is red
    im.save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 50).astype(int)
    assert np.abs(out[:, 2:-2] - RED).max() <= 2


@pytest.mark.parametrize("reason", ["truncated", "not an image", "empty", "missing", "corrupt"])
def test_load_image_refuses_bad_files(bad: dict[str, Path], reason: str) -> None:
    with pytest.raises(ImageError) as e:
        load_image(bad[reason], 32)
    assert e.value.reason == ("not an image" if reason == "empty" else reason)


def test_too_many_pixels_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _gradient(100, 100).save(tmp_path / "x.png")
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "x.png", 32, max_pixels=1000)
    assert e.value.reason == "too large"
    # a decompression bomb: tiny file, huge header; refused from the header without decoding a pixel
    Image.new("L", (4000, 4000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a bomb"))
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "bomb.png", 32, max_pixels=1_000_000)
    assert e.value.reason == "too large"


def test_pillow_bomb_error_is_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _gradient(100, 100).save(tmp_path / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL raises DecompressionBombError above twice this
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "x.png", 32)
    assert e.value.reason == "too large"
    # in our words and with our limit: PIL's own (178,956,970 by default) would contradict the one we state
    assert str(e.value) == "too large: 10,000 pixels is more than 100,000,000"


def test_names_no_file_system_accepts_are_image_errors(good: dict[str, Path], tmp_path: Path) -> None:
    """Found by the fuzz run (bench/fuzz.py): a name too long for the file system escaped as a raw OSError, and a NUL
    inside a folder name as a ValueError, out of ``recommend --image``, ``embed --images`` and the cache key."""
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / ("x" * 300 + ".png"), 32)
    assert e.value.reason == "unreadable" and "File name too long" in str(e.value)
    root = images.ImageRoot(tmp_path)
    for odd in ("d\0/x.png", "\0", "../../etc/passwd\0"):
        path = root.resolve(odd)
        assert path is not None
        with pytest.raises(ImageError) as e:
            load_image(path, 32)
        assert e.value.reason == "missing"
    (tmp_path / "ok.jpg").write_bytes(good["jpeg"].read_bytes())
    items = [(1, "ok.jpg"), (2, "x" * 300 + ".png"), (3, "d\0/x.png")]
    cache = build_cache(items, tmp_path, tmp_path / "cache", size=16)
    assert cache.item_ids == [1] and cache.problem_counts == {"unreadable": 1, "missing": 1}


def test_what_pillow_grumbles_about_stays_off_the_terminal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by the fuzz run: a cut TIFF made PIL warn ("Corrupt EXIF data", "Truncated File Read"), which Python
    prints as two lines of library internals over the command's own output. It goes to the debug log instead."""
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), RED).save(buf, format="TIFF")
    (tmp_path / "cut.tif").write_bytes(buf.getvalue()[:8])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, "socialfeat.data.images"):
        warnings.simplefilter("always")
        with pytest.raises(ImageError):
            load_image(tmp_path / "cut.tif", 32)
    assert caught == [] and "Corrupt EXIF data" in caplog.text


def test_a_file_the_os_refuses_is_unreadable_not_corrupt(
    good: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission denied (root ignores mode bits, so the refusal is simulated) is the file system's answer, not a
    sign that the image's bytes are damaged."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageError) as e:
        load_image(good["jpeg"], 32)
    assert e.value.reason == "unreadable" and "Permission denied" in str(e.value)


def _items(good: dict[str, Path], bad: dict[str, Path], root: Path) -> list[tuple[object, str]]:
    mixed = [good["jpeg"], bad["truncated"], good["gray"], bad["missing"], good["exif"], bad["not an image"]]
    mixed += [good["rgba"], bad["empty"]]
    return [(f"id{n}", os.path.relpath(p, root)) for n, p in enumerate(mixed)]


def test_build_cache_keeps_good_images_in_order(
    good: dict[str, Path], bad: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = _items(good, bad, tmp_path)
    calls: list[tuple[int, int]] = []
    with caplog.at_level(logging.WARNING):
        cache = build_cache(
            items, tmp_path, tmp_path / "cache", size=32, workers=1, progress=lambda *a: calls.append(a)
        )
    assert cache.item_ids == ["id0", "id2", "id4", "id6"] and cache.rows["id4"] == 2
    arr = cache.array()
    assert arr.shape == (4, 32, 32, 3) and arr.dtype == np.uint8 and not arr.flags.writeable
    for row, item_id in enumerate(cache.item_ids):
        np.testing.assert_array_equal(arr[row], load_image(tmp_path / dict(items)[item_id], 32))
    assert calls[-1] == (8, 8)
    expected = {"truncated": 1, "missing": 1, "not an image": 2}
    assert cache.problem_counts == expected
    assert [(p.item_id, p.reason) for p in cache.problems][:2] == [("id1", "truncated"), ("id3", "missing")]
    report = json.loads((tmp_path / "cache" / "problems.json").read_text())
    assert report["counts"] == expected and report["total"] == 4 and report["examples"][0]["path"] == items[1][1]
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["count"] == 4 and meta["size"] == 32 and meta["cache_key"] == cache_key(items, tmp_path, 32)
    assert "skipped 4 of 8 images" in caplog.text and "truncated" in caplog.text

    again = ImageCache.open(tmp_path / "cache")
    assert again.item_ids == cache.item_ids and again.rows == cache.rows and again.size == 32
    assert again.problem_counts == expected and len(again.problems) == 4
    np.testing.assert_array_equal(again.array(), arr)


def test_build_cache_with_worker_processes(tmp_path: Path) -> None:
    root = tmp_path / "img"
    root.mkdir()
    items: list[tuple[object, str]] = []
    for n in range(40):  # more than one chunk per worker; every 7th image missing
        if n % 7:
            Image.new("RGB", (20, 20), (n * 6, 255 - n * 6, 7)).save(root / f"{n}.png")
        items.append((n, f"{n}.png"))
    cache = build_cache(items, root, tmp_path / "cache", size=8, workers=2)
    want = [n for n in range(40) if n % 7]
    assert cache.item_ids == want and cache.problem_counts == {"missing": 6}
    np.testing.assert_array_equal(cache.array()[:, 4, 4, 0], [n * 6 for n in want])


def test_strict_names_the_first_bad_file(good: dict[str, Path], bad: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cut.jpg: truncated; --strict forbids skipping images"):
        build_cache(_items(good, bad, tmp_path), tmp_path, tmp_path / "cache", size=16, strict=True, workers=1)
    assert not (tmp_path / "cache").exists()


def test_no_good_image_names_the_root(bad: dict[str, Path], tmp_path: Path) -> None:
    items = [(k, os.path.relpath(p, tmp_path)) for k, p in bad.items()]
    with pytest.raises(UserError) as e:
        build_cache(items, tmp_path, tmp_path / "cache", size=16, workers=1)
    assert e.value.where == str(tmp_path) and "none of the 5 images" in e.value.message
    assert not (tmp_path / "cache").exists()


def test_failed_build_leaves_nothing_and_keeps_the_old_cache(
    good: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [(k, os.path.relpath(p, tmp_path)) for k, p in good.items()]
    out = tmp_path / "caches" / "c"
    real, calls = images.load_image, []

    def dies_midway(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the build were killed
        return real(*args, **kwargs)

    monkeypatch.setattr(images, "load_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_cache(items, tmp_path, out, size=16, workers=1)
    assert not (tmp_path / "caches").exists()  # neither the cache nor the temp folder nor the parent it created

    monkeypatch.setattr(images, "load_image", real)
    build_cache(items[:2], tmp_path, out, size=16, workers=1)
    monkeypatch.setattr(images, "_write_index", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        build_cache(items, tmp_path, out, size=16, workers=1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["c"]
    assert ImageCache.open(out).item_ids == [k for k, _ in items[:2]]


def test_open_refuses_missing_or_damaged_cache(good: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        ImageCache.open(tmp_path / "nothing")
    assert e.value.where == str(tmp_path / "nothing")
    items = [(k, os.path.relpath(p, tmp_path)) for k, p in good.items()]
    out = tmp_path / "cache"
    build_cache(items, tmp_path, out, size=16, workers=1)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "count": 3}))
    with pytest.raises(UserError, match="inconsistent"):
        ImageCache.open(out)
    (out / "meta.json").unlink()
    with pytest.raises(UserError, match="not a complete image cache"):
        ImageCache.open(out)
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "images.npy").write_bytes((out / "images.npy").read_bytes()[:200])
    with pytest.raises(UserError, match="not a complete image cache"):
        ImageCache.open(out)


def test_cache_key_tracks_files_and_size(good: dict[str, Path], tmp_path: Path) -> None:
    items = [(k, os.path.relpath(p, tmp_path)) for k, p in good.items()]
    key = cache_key(items, tmp_path, 64)
    assert cache_key(list(items), tmp_path, 64) == key
    assert cache_key(items, tmp_path, 32) != key
    st = good["jpeg"].stat()
    os.utime(good["jpeg"], ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    touched = cache_key(items, tmp_path, 64)
    assert touched != key
    good["gray"].write_bytes(good["gray"].read_bytes() + b"\0")
    assert cache_key(items, tmp_path, 64) != touched
    assert cache_key(items[1:], tmp_path, 64) != cache_key(items, tmp_path, 64)


def test_real_posters(movielens: Path, tmp_path: Path) -> None:
    need((movielens / "items.csv").exists(), f"no items.csv in the MovieLens sample at {movielens}")
    with open(movielens / "items.csv", newline="") as fh:
        items = [(row["item_id"], row["image"]) for row in itertools.islice(csv.DictReader(fh), 40)]
    cache = build_cache(items, movielens, tmp_path / "posters", size=64, workers=2)
    assert len(cache.item_ids) + sum(cache.problem_counts.values()) == 40 and len(cache.item_ids) >= 30
    arr = cache.array()
    assert arr.shape == (len(cache.item_ids), 64, 64, 3) and arr.std() > 10
    first = cache.item_ids[0]
    np.testing.assert_array_equal(arr[0], load_image(movielens / dict(items)[first], 64))
