"""Runtime helpers every stage that runs a network shares: where this process sits (device, rank, world size
under ``torchrun``), the run's image cache built once across ranks, and the batch loader over it. Training,
embedding and transfer import these from here; none of them imports another stage for them.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from socialfeat.config import Config, TrainConfig
from socialfeat.data.batches import CachedImages, run_image_cache
from socialfeat.data.image_tables import ImageTable, cache_dir
from socialfeat.data.images import ImageCache, build_cache
from socialfeat.errors import UserError


@dataclass
class Dist:
    """Where this process sits: rank, world size, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """The configured device (``train.device``: auto, cpu or cuda); asking for CUDA without one is a user error."""
    cuda = device != "cpu" and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise UserError("train.device", "cuda requested but torch sees no CUDA GPU")
    return torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")


def setup_distributed(device: str = "auto", timeout_minutes: float | None = None) -> Dist:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group if there is one.

    ``timeout_minutes`` (``train.dist_timeout_minutes``) bounds every collective: a rank that waits longer fails
    the job. torch's own default (10 min for NCCL) is shorter than a long cache build or selection at scale."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        timeout = None if timeout_minutes is None else datetime.timedelta(minutes=timeout_minutes)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return Dist(rank, world, local, dev)


def default_workers(workers: int | None, d: Dist) -> int:
    """``train.workers`` / ``embed.workers``: the configured count, else none on CPU (decoding in workers steals the
    model's cores) and up to 8 per GPU (a GPU wants workers feeding it)."""
    if workers is not None:
        return workers
    return min(8, max(1, (os.cpu_count() or 1) // d.world)) if d.device.type == "cuda" else 0


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def shared_image_cache(
    d: Dist, run: Path, cfg: TrainConfig, size: int, progress: Callable[[int, int], None] | None = None
) -> ImageCache:
    """The run's image cache, built once: rank 0 builds (or reuses) it, the other ranks wait and open it."""
    if d.main:
        cache = run_image_cache(run, size, cfg.strict_images, cfg.max_pixels, progress=progress)
    barrier(d)
    if not d.main:
        cache = run_image_cache(run, size, cfg.strict_images, cfg.max_pixels)
    return cache


def batch_loader(ds: CachedImages, keys: list, workers: int, seed: int, pin: bool) -> DataLoader:
    """Batches come whole from the dataset (batch_size=None); the loader's own generator keeps the global RNG
    untouched, so dropout draws do not depend on where an epoch was resumed."""
    return DataLoader(
        ds,
        sampler=keys,
        batch_size=None,
        num_workers=min(workers, len(keys)),
        pin_memory=pin,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )


def table_cache(
    run: Path,
    table: ImageTable,
    size: int,
    config: Config,
    d: Dist | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageCache:
    """The table's pre-resized image cache (ids = input row indices), built once and reused while the images and
    settings are unchanged; under torchrun rank 0 builds it while the others wait."""
    max_pixels = config.train.max_pixels
    out, key = cache_dir(run, table, size, max_pixels)

    def get(report: Callable[[int, int], None] | None) -> ImageCache:
        meta = out / "meta.json"
        if meta.is_file():
            try:
                if json.loads(meta.read_text()).get("cache_key") == key:
                    return ImageCache.open(out)
            except (OSError, ValueError, UserError):
                pass
        return build_cache(
            table.items(),
            table.root,
            out,
            size,
            progress=report,
            max_pixels=max_pixels,
            allow_absolute=table.allow_absolute,
        )

    d = d or Dist()
    cache = get(progress) if d.main else None
    barrier(d)
    return cache if cache is not None else get(None)
