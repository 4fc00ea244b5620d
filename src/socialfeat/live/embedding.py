"""New items' images through the run's models, batched: feature vectors under each source and predicted factors.

The encoders are the ones ``similar --image`` and the explorer use (:func:`socialfeat.export.encoder_for`): ONNX
Runtime on the run's export on CPU, so an added item lands exactly where ``embed`` put the batch items. The factors
come from the run's content model when it has a current one (image, title, text, tags together), else from the
learned model's factors head: the rule ``recommend --image`` follows.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from socialfeat.config import Config
from socialfeat.data.images import ImageError, decode_image
from socialfeat.data.tags import split_tags
from socialfeat.errors import UserError
from socialfeat.export import Inference, encoder_for
from socialfeat.features import SOURCES, content_older_than, encode_batch
from socialfeat.models.heads import head_key

IMAGE_SOURCES = ("learned", "imagenet")  # as content.sources names them

if TYPE_CHECKING:
    from socialfeat.live.tables import NewItem

FACTORS = "head_factors"


def run_sources(config: Config, run: Path) -> list[str]:
    """The sources new items are embedded under: ``live.sources``, else every source with features."""
    base = run / "features"
    found = [s for s in SOURCES if (base / f"{s}.parquet").is_file() or any(base.glob(f"{s}.part-*-of-*.parquet"))]
    wanted = config.live.sources if config.live.sources is not None else found
    missing = [s for s in wanted if s not in found]
    if missing:
        raise UserError("live.sources", f"this run has no features for {', '.join(missing)} (it has {found})")
    if "learned" not in wanted:
        raise UserError("live.sources", "must include learned: it predicts a new item's audience")
    return list(wanted)


class Embedder:
    """The run's encoders, opened once (the explorer keeps one; ``add`` makes one per call)."""

    def __init__(self, config: Config, run: Path, encoders: dict[str, Inference] | None = None) -> None:
        self.config, self.run = config, run
        self.sources = run_sources(config, run)
        self.encoders = encoders if encoders is not None else {}
        for source in self.sources:
            if source not in self.encoders:
                self.encoders[source] = encoder_for(config, run, source, threads=0)
        self._content: Any = None
        self._content_checked = False
        self._content_lock = threading.Lock()

    def embed(self, images: list[bytes], where: str, rows: list[int]) -> dict[tuple[str, str], np.ndarray]:
        """Each source's outputs in batches: {(source, column): (n, d) float32}, columns named as in the feature
        files. A thread decodes the next batch while the encoders run this one: PIL and ONNX Runtime both release
        the GIL, so decoding overlaps the forward pass instead of adding to it. A bad image stops the call at its
        batch, before anything is stored (``add`` stores all or none)."""
        if not images:
            return {}
        sizes = sorted({self.encoders[s].image_size for s in self.sources})
        step, max_pixels = self.config.live.batch_size, self.config.train.max_pixels

        def pixels(start: int) -> dict[int, np.ndarray]:
            part = range(start, min(start + step, len(images)))
            return {
                size: np.stack([decode(images[i], size, max_pixels, where, rows[i]) for i in part]) for size in sizes
            }

        out: dict[tuple[str, str], list[np.ndarray]] = {}
        with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
            pending = pool.submit(pixels, 0)
            for start in range(0, len(images), step):
                batch = pending.result()
                if start + step < len(images):
                    pending = pool.submit(pixels, start + step)
                for source in self.sources:
                    found = self.encoders[source]
                    for key, value in encode_batch(found.encoder, batch[found.image_size]).items():
                        column = "features" if key == "features" else f"head_{head_key(key)}"
                        out.setdefault((source, column), []).append(np.asarray(value, dtype=np.float32))
        return {key: np.concatenate(parts) for key, parts in out.items()}

    def content_model(self) -> Any:
        """The run's content model when it is current with the factors and features, else None. Loaded once under
        a lock: a server embeds uploads on several threads, and a second caller must not see "checked, none" while
        the first is still loading."""
        with self._content_lock:
            if not self._content_checked:
                if (self.run / "content" / "model.json").is_file():
                    from socialfeat.content import ContentModel

                    model = ContentModel(self.run)
                    if content_older_than(self.run, list(model.maps)) is None:
                        self._content = model
                self._content_checked = True
            return self._content

    def factors(
        self, plan: list[tuple[NewItem, bytes, str]], outputs: dict[tuple[str, str], np.ndarray]
    ) -> list[tuple[np.ndarray, str]]:
        """Each item's predicted factors and what predicted them (``content`` or ``image``)."""
        model = self.content_model()
        out = []
        for n, (item, _, _) in enumerate(plan):
            if model is not None:
                source = model.image_source
                features = outputs[(source, "features")][n] if source and (source, "features") in outputs else None
                tags = split_tags(item.tags) if item.tags else None
                described = [f for f in ("title", "text", "tags") if getattr(item, f) and f in _fields(model)]
                blocks, _ = model.blocks_for(
                    features,
                    item.title if "title" in described else None,
                    item.text if "text" in described else None,
                    tags if "tags" in described else None,
                )
                for block in model.weights:  # every image source the model fuses, as the content stage scores
                    if block in IMAGE_SOURCES and block not in blocks and (block, "features") in outputs:
                        blocks[block] = outputs[(block, "features")][n]
                out.append((np.asarray(model.predict(blocks), np.float32), "content"))
                continue
            if ("learned", FACTORS) not in outputs:
                raise UserError(
                    str(self.run / "model"), "the trained model has no 'factors' head, and the run no content model"
                )
            out.append((outputs[("learned", FACTORS)][n], "image"))
        return out


def _fields(model: Any) -> list[str]:
    """The item fields the content model can use (a field it has no source for is left out, not refused: an item
    table carries whatever columns the platform has)."""
    return list(model.fields)


def decode(data: bytes, size: int, max_pixels: int, where: str, row: int) -> np.ndarray:
    """One new item's image decoded as ``embed`` decodes (upright, alpha on white, centre crop); a bad one is a
    one-line UserError naming its row."""
    try:
        return decode_image(io.BytesIO(data), size, max_pixels)
    except ImageError as e:
        raise UserError(where, f"row {row}: cannot use this image ({e})") from None
