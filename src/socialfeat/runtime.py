"""Runtime helpers every stage that runs a network shares: where this process sits (device, rank, world size
under ``torchrun``), the run's image cache built once across ranks, and the batch loader over it. Training,
embedding and transfer import these from here; none of them imports another stage for them.

Under torchrun no rank waits on another past a deadline it cannot see: every collective is bounded by
``train.dist_timeout_minutes``, the image cache is decoded by all the ranks that share its file system (each its
share of the rows, into the one file), and a failure on any rank, or a node without the run folder, stops every
rank at once with the same one line instead of leaving the others in a collective until the timeout.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from socialfeat.config import Config, TrainConfig
from socialfeat.data.batches import CachedImages, run_image_cache
from socialfeat.data.image_tables import ImageTable, cache_dir
from socialfeat.data.images import SOLO, ImageCache, Team, build_cache, together
from socialfeat.errors import UserError

SLOW_ENV = "SOCIALFEAT_TEST_SLOW_RANK"  # fault injection for the timeout test: "RANK:SECONDS" delays that rank's cache
TOKEN = ".socialfeat-node-check-"  # rank 0 writes one into the run folder; a rank that sees it shares the folder
CLUSTER_HINT = (
    "a cluster run needs the run folder on a shared file system at the same path on every node, or a copy of it on "
    "each node: see docs/scaling.md"
)


@dataclass
class Dist:
    """Where this process sits: rank, world size, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    local_world: int = 1  # ranks on this node
    node: str = "0"  # torchrun's node rank (GROUP_RANK), else the host name
    timeout: datetime.timedelta | None = None  # every collective's bound (train.dist_timeout_minutes)
    groups: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)  # gloo groups, by ranks

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """The configured device (``train.device``: auto, cpu or cuda); asking for CUDA without one is a user error."""
    cuda = device != "cpu" and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise UserError("train.device", "cuda requested but torch sees no CUDA GPU")
    return torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")


def setup_distributed(device: str = "auto", timeout_minutes: float | None = None, run: Path | None = None) -> Dist:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group if there is one.

    ``timeout_minutes`` (``train.dist_timeout_minutes``) bounds every collective: a rank that waits longer fails
    the job. torch's own default (10 min for NCCL) is shorter than a long cache build or selection at scale.
    With ``run``, every rank must see the run folder (shared, or a copy on each node), else all stop at once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev)
    timeout = None if timeout_minutes is None else datetime.timedelta(minutes=timeout_minutes)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    node = os.environ.get("GROUP_RANK") or socket.gethostname()
    d = Dist(rank, world, local, dev, local_world, node, timeout)
    if run is not None and world > 1:
        run_team(d, Path(run))
    return d


def default_workers(workers: int | None, d: Dist) -> int:
    """``train.workers`` / ``embed.workers``: the configured count, else none on CPU (decoding in workers steals the
    model's cores) and up to 8 per GPU (a GPU wants workers feeding it)."""
    if workers is not None:
        return workers
    return min(8, max(1, (os.cpu_count() or 1) // max(1, d.local_world))) if d.device.type == "cuda" else 0


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


@dataclass
class RankTeam:
    """Some ranks of the job as an image-cache :class:`Team`: a gloo group over them (CPU objects, whatever the
    job's backend), bounded by the job's timeout."""

    ranks: tuple[int, ...]
    group: Any
    rank: int
    nodes: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.ranks)

    def gather(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value, group=self.group)
        return out

    def label(self, member: int) -> str:
        return f"rank {self.ranks[member]} (node {self.nodes[member]})"


def team_of(d: Dist, ranks: list[int], nodes: list[str]) -> RankTeam:
    """A team of ``ranks``; every rank of the job must call this for every team, in the same order (torch's rule)."""
    key = tuple(ranks)
    if key not in d.groups:
        d.groups[key] = dist.new_group(list(key), timeout=d.timeout, backend="gloo")
    return RankTeam(key, d.groups[key], key.index(d.rank) if d.rank in key else -1, tuple(nodes))


def world_team(d: Dist) -> Team:
    """Every rank of the job (or this process alone)."""
    return SOLO if d.world == 1 else _world(d)


def _world(d: Dist) -> RankTeam:
    if "world" not in d.groups:
        ranks = list(range(d.world))
        nodes = team_of(d, ranks, [str(r) for r in ranks]).gather(d.node)
        d.groups["world"] = team_of(d, ranks, [str(n) for n in nodes])
    return d.groups["world"]


def run_team(d: Dist, run: Path) -> Team:
    """The ranks that share ``run``'s file system with this one: they build and read one image cache together.

    Rank 0 writes a token file into its run folder; every rank that sees it shares the folder (a shared file
    system), and each node that does not has its own copy and its own team. A rank without the run folder at all
    stops every rank at once, in one line saying what a cluster run needs."""
    if d.world == 1:
        return SOLO
    world = _world(d)

    def plant() -> str:
        name = TOKEN + secrets.token_hex(8)
        if d.main:
            if not run.is_dir():
                raise UserError(str(run), f"not found on node {d.node} (rank {d.rank}); {CLUSTER_HINT}")
            (run / name).write_text(f"{socket.gethostname()} {os.getpid()}\n")
        return name

    name = together(world, plant)[0]
    try:
        seen = world.gather(((run / name).is_file(), (run / "dataset" / "items.parquet").is_file(), str(run)))
    finally:
        if d.main:
            (run / name).unlink(missing_ok=True)
    for rank, (_, has_dataset, where) in enumerate(seen):
        if not has_dataset:
            path = Path(where) / "dataset" / "items.parquet"
            raise UserError(str(path), f"not found on node {world.nodes[rank]} (rank {rank}); {CLUSTER_HINT}")
    teams: dict[str, list[int]] = {}
    for rank, (shared, _, _) in enumerate(seen):  # rank 0's folder first, then each node with a copy of its own
        teams.setdefault("shared" if shared else f"node {world.nodes[rank]}", []).append(rank)
    mine: RankTeam = world
    for ranks in teams.values():
        team = team_of(d, ranks, [world.nodes[r] for r in ranks]) if len(ranks) < d.world else world
        if d.rank in ranks:
            mine = team
    return mine


def _cache_workers(d: Dist) -> int:
    """Decoding processes per rank: this node's cores shared among its ranks (0: all cores, one process alone)."""
    return 0 if d.world == 1 else max(1, (os.cpu_count() or 1) // max(1, d.local_world))


def _planted_delay(d: Dist) -> None:
    """The timeout test's slow rank (``SOCIALFEAT_TEST_SLOW_RANK=RANK:SECONDS``): as if its share took that long."""
    planted = os.environ.get(SLOW_ENV, "")
    if planted:
        rank, seconds = planted.split(":")
        if int(rank) == d.rank:
            time.sleep(float(seconds))


def _every_node(d: Dist, run: Path, build: Callable[[Team], ImageCache]) -> ImageCache:
    """``build`` the cache with this rank's team, then agree across the job: every rank raises when any failed, and
    the copies of a run folder that is not shared must hold the same usable images in the same order."""
    if d.world == 1:
        return build(SOLO)
    team = run_team(d, run)
    held: list[ImageCache] = []

    def step() -> tuple[int, str]:
        _planted_delay(d)
        held.append(build(team))
        ids = repr(held[0].item_ids).encode()
        return len(held[0].item_ids), hashlib.sha256(ids).hexdigest()

    prints = together(world_team(d), step)
    for rank, (count, digest) in enumerate(prints):
        if digest != prints[0][1]:
            raise UserError(
                str(run),
                f"the copies of the run folder differ: rank {rank} has {count:,} usable images, rank 0 "
                f"{prints[0][0]:,} (or others); copy the same run folder, with its images, to every node",
            )
    return held[0]


def shared_image_cache(
    d: Dist, run: Path, cfg: TrainConfig, size: int, progress: Callable[[int, int], None] | None = None
) -> ImageCache:
    """The run's image cache, built once per file system: the ranks that share the run folder decode it together
    (each its share of the rows, into the one file), a node with its own copy builds its own; rank 0 reports."""
    workers, report = _cache_workers(d), progress if d.main else None
    return _every_node(
        d,
        run,
        lambda team: run_image_cache(run, size, cfg.strict_images, cfg.max_pixels, workers, report, team),
    )


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
    settings are unchanged; under torchrun the ranks that share the run folder build it together."""
    max_pixels = config.train.max_pixels
    out, key = cache_dir(run, table, size, max_pixels)
    d = d or Dist()

    def get(team: Team) -> ImageCache:
        found: list[ImageCache] = []

        def current() -> bool:
            meta = out / "meta.json"
            if team.rank == 0 and meta.is_file():
                try:
                    if json.loads(meta.read_text()).get("cache_key") == key:
                        found.append(ImageCache.open(out))
                except (OSError, ValueError, UserError):
                    pass
            return bool(found)

        if together(team, current)[0]:
            return found[0] if found else ImageCache.open(out)
        return build_cache(
            table.items(),
            table.root,
            out,
            size,
            workers=_cache_workers(d),
            progress=progress if d.main else None,
            max_pixels=max_pixels,
            allow_absolute=table.allow_absolute,
            team=team,
        )

    return _every_node(d, run, get)
