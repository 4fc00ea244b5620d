"""Image paths stay under their root: a ``..`` climb, an absolute path or a symlink out of the root is refused —
counted, named, and never opened — in ingest, in the image cache and in ``embed --images``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from socialfeat.config import load_config
from socialfeat.data.image_tables import load_image_table
from socialfeat.data.images import OUTSIDE, ImageRoot, build_cache, confined_path
from socialfeat.data.ingest import ingest
from socialfeat.errors import UserError
from socialfeat.runtime import table_cache

NO_FILTER = ["filter.min_user_interactions=1", "filter.min_item_interactions=1", "filter.drop_top_users=0"]
LOG = "user_id,item_id\nu1,ok\nu1,up\nu1,abs\nu1,link\nu2,ok\nu2,up\nu2,abs\nu2,link\n"


def png(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """root/ holds one good image and a symlink to a real image outside it; secret.png sits beside root/."""
    root = tmp_path / "root"
    png(root / "ok.png")
    secret = png(tmp_path / "secret.png", 7)
    (root / "link.png").symlink_to(secret)
    png(root / "sub" / "inner.png")
    return {"root": root, "secret": secret}


def test_the_four_cases(layout: dict[str, Path]) -> None:
    root, secret = layout["root"], layout["secret"]
    assert confined_path(root, "ok.png") == (root / "ok.png").resolve()  # fine
    assert confined_path(root, "sub/../ok.png") == (root / "ok.png").resolve()  # a climb that stays inside
    assert confined_path(root, "../secret.png") is None  # ..
    assert confined_path(root, "sub/../../secret.png") is None
    assert confined_path(root, str(secret)) is None  # absolute, outside the root
    assert confined_path(root, str(root / "ok.png")) == (root / "ok.png").resolve()  # absolute, under the root
    assert confined_path(root, "link.png") is None  # a symlink out of the root
    assert confined_path(root, str(secret), allow_absolute=True) == secret  # absolute, when asked for
    assert confined_path(root, "..") is None and confined_path(root, "sub/..") == root.resolve()


def test_a_symlinked_folder_out_of_the_root_is_refused_too(layout: dict[str, Path], tmp_path: Path) -> None:
    png(tmp_path / "elsewhere" / "x.png")
    (layout["root"] / "door").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    shared = ImageRoot(layout["root"])
    assert shared.resolve("door/x.png") is None
    assert shared.resolve("sub/inner.png") == (layout["root"] / "sub" / "inner.png").resolve()
    assert shared.resolve("door/x.png") is None  # the folder's resolution is cached, the answer is the same


def items_csv(tmp_path: Path, secret: Path) -> Path:
    path = tmp_path / "items.csv"
    path.write_text(f"item_id,image\nok,ok.png\nup,../secret.png\nabs,{secret}\nlink,link.png\n")
    return path


def run_ingest(tmp_path: Path, layout: dict[str, Path], *overrides: str) -> dict:
    log = tmp_path / "log.csv"
    log.write_text(LOG)
    flags = {
        "ingest.interactions": ("test", log),
        "ingest.items": ("test", items_csv(tmp_path, layout["secret"])),
        "ingest.image_root": ("test", layout["root"]),
    }
    cfg = load_config(None, [*NO_FILTER, *overrides], flags)
    return ingest(cfg, tmp_path / "ds").stats


def test_ingest_refuses_counts_and_names_paths_outside_the_root(
    tmp_path: Path, layout: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="socialfeat"):
        stats = run_ingest(tmp_path, layout)
    assert stats["dropped"]["items_image_outside_root"] == 3
    assert sorted(stats["images_outside_root"]["examples"]) == sorted(
        ["../secret.png", str(layout["secret"]), "link.png"]
    )
    assert stats["dropped"]["items_missing_image"] == 0
    lines = [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
    assert len(lines) == 1 and "3 of 4 image paths lead outside" in lines[0] and "../secret.png" in lines[0]
    assert "ingest.allow_absolute_images" in lines[0]


def test_strict_ingest_makes_an_escape_an_error(tmp_path: Path, layout: dict[str, Path]) -> None:
    with pytest.raises(UserError, match=r"items.csv: 3 of 4 image paths lead outside .*--strict forbids"):
        run_ingest(tmp_path, layout, "ingest.strict=true")
    assert not (tmp_path / "ds").exists()


def test_absolute_paths_only_when_asked_for(tmp_path: Path, layout: dict[str, Path]) -> None:
    stats = run_ingest(tmp_path, layout, "ingest.allow_absolute_images=true")
    assert sorted(stats["images_outside_root"]["examples"]) == ["../secret.png", "link.png"]  # relative escapes
    assert stats["missing_images"]["allow_absolute"] is True


class Spy:
    """Records every path the image loader is asked to open."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import socialfeat.data.images as images

        self.opened: list[Path] = []
        real = images.load_image

        def load(path: Path, *args: object, **kwargs: object) -> np.ndarray:
            self.opened.append(Path(path))
            return real(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(images, "load_image", load)


def test_the_cache_never_opens_a_path_outside_the_root(
    tmp_path: Path, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    items = [("ok", "ok.png"), ("up", "../secret.png"), ("abs", str(layout["secret"])), ("link", "link.png")]
    cache = build_cache(items, layout["root"], tmp_path / "cache", size=8, workers=1)
    assert cache.item_ids == ["ok"]
    assert cache.problem_counts == {OUTSIDE: 3}
    assert [p.path for p in cache.problems] == ["../secret.png", str(layout["secret"]), "link.png"]
    assert all(p.resolve() != layout["secret"].resolve() for p in spy.opened) and len(spy.opened) == 1
    with pytest.raises(UserError, match="outside the image root; --strict forbids"):
        build_cache(items, layout["root"], tmp_path / "strict", size=8, strict=True, workers=1)


def test_embed_images_tables_are_confined_too(
    tmp_path: Path, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    table_path = tmp_path / "photos.csv"
    table_path.write_text(f"image,label\nok.png,a\n../secret.png,b\n{layout['secret']},c\nlink.png,d\n")
    table = load_image_table(table_path, layout["root"])
    cache = table_cache(tmp_path / "run", table, 8, load_config(None))
    assert cache.item_ids == [0] and cache.problem_counts == {OUTSIDE: 3}
    assert len(spy.opened) == 1
    allowed = load_image_table(table_path, layout["root"], allow_absolute=True)
    cache = table_cache(tmp_path / "run", allowed, 8, load_config(None))
    assert cache.item_ids == [0, 2]  # the absolute path, now allowed; the escapes stay refused
    meta = json.loads((cache.path / "problems.json").read_text())
    assert meta["counts"] == {OUTSIDE: 2}
