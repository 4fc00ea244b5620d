"""Batches of cached images for training and embedding: the run's image cache, a deterministic per-sample
augmentation, and a resumable (optionally distributed) batch order.

Determinism is by construction rather than by saved worker state: a sample's crop and flip depend only on
(seed, epoch, sample index), and the order of an epoch only on (seed, epoch) — so a resumed run, a run with
more DataLoader workers, or a DDP run with the same global batch sees exactly the same pixels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler

from socialfeat.artifacts import missing, no_images_hint, read_json, read_schema, read_table
from socialfeat.data.images import SOLO, ImageCache, ImageRoot, Team, build_cache, cache_key, dataset_root, together
from socialfeat.errors import UserError

log = logging.getLogger(__name__)

MIN_CROP = 0.75  # smallest crop side, as a share of the image side


def dataset_images(run: Path) -> tuple[list[tuple[object, str]], ImageRoot]:
    """Every item of the run's dataset with its image path, and the image root ingest resolved (whether it allowed
    absolute paths, and the live store's image folder when it absorbed one)."""
    dataset = run / "dataset"
    if not (dataset / "items.parquet").is_file():
        raise missing(dataset / "items.parquet", run)
    stats = read_json(dataset / "stats.json", run=run)
    resolver = dataset_root(dataset, stats)
    root = resolver.root
    if not root.is_dir():
        raise UserError(str(dataset / "stats.json"), f"image root '{root}' recorded by ingest does not exist")
    if "image" not in read_schema(dataset / "items.parquet", run=run).names and not stats.get("inputs", {}).get(
        "items"
    ):
        raise UserError(str(dataset), "has no images: it was ingested without --items; " + no_images_hint(run))
    items = read_table(dataset / "items.parquet", columns=["item_id", "image"], run=run)
    pairs = list(zip(items.column("item_id").to_pylist(), items.column("image").to_pylist(), strict=True))
    return pairs, resolver


def run_image_cache(
    run: Path,
    size: int,
    strict: bool = False,
    max_pixels: int = 100_000_000,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    team: Team = SOLO,
) -> ImageCache:
    """The run's image cache at ``size`` (``run/cache/images-<size>``), built once and rebuilt only when the
    images, their files or the settings changed. With a ``team`` (the ranks that share the run folder's file
    system) its first member checks the cache, and all of them build it together when it has to be built."""
    items, resolver = dataset_images(run)
    root, allow_absolute, live = resolver.root, resolver.allow_absolute, resolver.live
    live_dir = live.root if live is not None else None
    out = run / "cache" / f"images-{size}"
    found: list[ImageCache] = []

    def current() -> bool:
        if team.rank == 0:
            found.extend(_current_cache(out, items, root, size, strict, max_pixels, allow_absolute, live_dir))
        return bool(found)

    if together(team, current)[0]:
        return found[0] if found else ImageCache.open(out)
    return build_cache(
        items,
        root,
        out,
        size=size,
        strict=strict,
        workers=workers,
        progress=progress,
        max_pixels=max_pixels,
        allow_absolute=allow_absolute,
        team=team,
        live=live_dir,
    )


def _current_cache(
    out: Path,
    items: list[tuple[object, str]],
    root: Path,
    size: int,
    strict: bool,
    max_pixels: int,
    allow_absolute: bool,
    live: Path | None = None,
) -> list[ImageCache]:
    """The cache at ``out`` when it was built from exactly these files and settings, else nothing."""
    meta = out / "meta.json"
    if not meta.is_file():
        return []
    key = cache_key(items, root, size, max_pixels, allow_absolute, live)
    try:
        if json.loads(meta.read_text()).get("cache_key") != key:
            return []
        cache = ImageCache.open(out)
    except (OSError, ValueError, UserError) as e:  # a damaged cache is rebuilt, not reported
        if isinstance(e, UserError) and e.where != str(out):
            raise
        log.warning("image cache %s is damaged (%s); building it again", out, e)
        return []
    if strict and sum(cache.problem_counts.values()):
        first = cache.problems[0] if cache.problems else None
        where = str(root / first.path) if first else str(out)
        raise UserError(where, f"{first.reason if first else 'bad image'}; strict forbids skipping images")
    return [cache]


def augment(image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """A random square crop (75–100% of the side, anywhere) resized back, and a horizontal flip half the time."""
    size = image.shape[0]
    side = int(round(size * rng.uniform(MIN_CROP, 1.0)))
    top, left = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    flip = bool(rng.random() < 0.5)
    x = torch.from_numpy(np.ascontiguousarray(image[top : top + side, left : left + side]))
    if side != size:
        x = (
            F.interpolate(
                x.permute(2, 0, 1)[None].float(),
                size=(size, size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
            .permute(1, 2, 0)
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    return x.flip(1) if flip else x


class CachedImages(Dataset):
    """Rows of an image cache plus their targets, fetched a whole batch at a time (one memmap gather).

    Indexed by ``(epoch, [sample indices])`` from :class:`EpochBatches`; returns a dict of tensors with
    ``images`` (uint8 NHWC), ``index`` and one entry per target.
    """

    def __init__(
        self, cache: Path, rows: np.ndarray, targets: dict[str, np.ndarray], augment: bool = False, seed: int = 0
    ) -> None:
        self.cache, self.rows, self.targets = Path(cache), np.asarray(rows), targets
        self.augment, self.seed = augment, seed
        self._array: np.ndarray | None = None  # opened lazily in each worker: a memmap must not be pickled

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, list[int]]) -> dict[str, torch.Tensor]:
        epoch, indices = key
        if self._array is None:
            self._array = np.load(self.cache / "images.npy", mmap_mode="r")
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.rows[idx]
        order = np.argsort(rows, kind="stable")  # sorted gather reads the file sequentially
        images = np.empty((len(rows), *self._array.shape[1:]), dtype=np.uint8)
        images[order] = self._array[rows[order]]
        if self.augment:
            batch = torch.stack(
                [
                    augment(img, np.random.default_rng((self.seed, epoch, int(i))))
                    for img, i in zip(images, idx, strict=True)
                ]
            )
        else:
            batch = torch.from_numpy(images)
        out = {"images": batch, "index": torch.from_numpy(idx)}
        for name, values in self.targets.items():
            out[name] = torch.from_numpy(np.ascontiguousarray(values[idx]))
        return out


class EpochBatches:
    """Batches of one rank for every epoch from ``start``: DistributedSampler's shuffled, rank-strided order
    (one replica = a plain shuffle), cut into per-rank batches; ``skip`` drops the first batches of the first
    epoch so a resumed run continues exactly where the checkpoint was taken. ``per_epoch`` > 0 keeps the first
    ``per_epoch`` of each epoch's shuffle: a fresh seeded sample every epoch, so an epoch costs the same at any
    catalogue size."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        per_epoch: int = 0,
    ) -> None:
        if per_epoch and not shuffle:
            raise ValueError("a sample per epoch needs shuffle: unshuffled it would be the same items every time")
        self.n, self.batch_size, self.rank, self.world, self.seed, self.shuffle = (
            n,
            batch_size,
            rank,
            world,
            seed,
            shuffle,
        )
        self.per_epoch = per_epoch

    def sampler(self, epoch: int) -> DistributedSampler:
        s = DistributedSampler(
            range(self.n),
            num_replicas=self.world,
            rank=self.rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=False,
        )
        s.set_epoch(epoch)
        return s

    def per_rank(self) -> int:
        """Items one rank sees per epoch: its share of all of them, or of the sample."""
        share = -(-self.n // self.world)
        if self.per_epoch:
            share = min(share, -(-self.per_epoch // self.world))
        return share

    def steps_per_epoch(self) -> int:
        return -(-self.per_rank() // self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[int, list[int]]]:
        indices = list(self.sampler(epoch))[: self.per_rank()]
        starts = range(0, len(indices), self.batch_size)
        for start in islice(starts, skip, None):
            yield epoch, indices[start : start + self.batch_size]
