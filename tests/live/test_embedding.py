"""New items' images in batches: the decode of the next batch overlaps this one's forward pass, with the same
vectors as one batch and nothing stored when a later batch holds a bad image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.live import Live, LiveStore, Upload
from socialfeat.live.embedding import Embedder
from socialfeat.live.tables import NewItem


@pytest.fixture
def run(embedded_run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(embedded_run, dest)
    return dest


def _images(run: Path, n: int) -> list[bytes]:
    root = Path(json.loads((run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    return [p.read_bytes() for p in sorted((root / "images").glob("*.png"))[:n]]


def test_small_batches_give_the_vectors_of_one_batch(run: Path) -> None:
    images = _images(run, 7)
    rows = list(range(1, 8))
    small = Embedder(load_config(None, ["live.batch_size=2"]), run).embed(images, "t", rows)
    one = Embedder(load_config(None, ["live.batch_size=64"]), run).embed(images, "t", rows)
    assert set(small) == set(one) and ("learned", "features") in one
    for key, value in one.items():
        assert small[key].shape == value.shape == (7, value.shape[1])
        assert np.abs(small[key] - value).max() <= 1e-5 * max(np.abs(value).max(), 1.0)


def test_a_bad_image_in_a_later_batch_adds_nothing(run: Path) -> None:
    config = load_config(None, ["live.batch_size=2", "live.sources=[learned]"])
    images = [*_images(run, 4), b"\xff\xd8\xff\xe0 not really a jpeg"]
    uploads = [Upload(NewItem(f"new-{n}", "upload", row=n), data) for n, data in enumerate(images, start=1)]
    with pytest.raises(UserError, match=r"row 5: cannot use this image"):
        Live(config, run).add(uploads, where="t")
    assert LiveStore(run).counts()["items"] == 0
    assert not list((run / "live" / "images").glob("*"))


def test_threads_asking_for_the_content_model_at_once_all_get_it(
    content_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server embeds uploads on several threads outside its lock. Before the load was locked, a second thread
    saw "checked, no model" while the first still loaded it, and its upload failed with a 400 ("no 'factors'
    head, and the run no content model"): the latency bench at 423K hit it once in 2,000 adds."""
    import threading
    import time

    import socialfeat.content as content_pkg

    real = content_pkg.ContentModel

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(0.3)  # a load long enough for the other threads to arrive meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(content_pkg, "ContentModel", slow)
    embedder = Embedder(load_config(None, ["live.sources=[learned]"]), content_run, {})
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(embedder.content_model())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(m is not None for m in got) and len({id(m) for m in got}) == 1
