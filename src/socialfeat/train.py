"""``train``: one training loop for a laptop CPU, one GPU, or many GPUs and nodes under ``torchrun``.

The same code path everywhere (as in nanoGPT): rank and world size come from the environment, each rank
seeds with seed + rank and reads its DistributedSampler share of every global batch, and only rank 0
writes. On GPU: bf16 autocast and channels-last. Work in progress lives in ``run/.train/`` (atomic
checkpoints every epoch and every N steps, ``metrics.jsonl``); ``run/model/`` appears, complete, only
when training ends — so a later stage never trusts a half-trained model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from socialfeat.artifacts import damaged, fingerprints, read_json, read_safetensors, read_table, reading, resume_command
from socialfeat.atomic import atomic_dir, claim_dir, write_json, write_text
from socialfeat.config import Config, TrainConfig, dump_config, provenance
from socialfeat.data.batches import CachedImages, EpochBatches
from socialfeat.data.splits import uniform
from socialfeat.errors import Interrupted, UserError
from socialfeat.freshness import check_inputs
from socialfeat.jsonio import json_lines
from socialfeat.models.backbones import create_backbone
from socialfeat.models.heads import FeatureModel, apply_finetune, head_key
from socialfeat.models.losses import (
    listwise_kl_loss,
    masked_cross_entropy,
    mean_cosine,
    multilabel_loss,
    rank_temperature,
    regression_loss,
    top1,
    top1_tag,
    user_moment_root,
)
from socialfeat.models.store import save_weights, state_tensors
from socialfeat.preservation import StartingPoint, Teacher
from socialfeat.runlock import writes_run
from socialfeat.runtime import Dist, barrier, batch_loader, default_workers, setup_distributed, shared_image_cache
from socialfeat.selection import Selector, best_epoch, from_rank0, keep_best, make_selector, ridge_init
from socialfeat.tensor_io import write_safetensors, write_torch

log = logging.getLogger(__name__)

TARGET_FILES = {
    "factors": "factors.parquet",
    "factor-clusters": "factor_clusters.parquet",
    "engagement": "engagement.parquet",
    "tags": "tags.parquet",
}
MATRIX_TARGETS = ("factors", "tags")  # a vector per item; the others are one class label per item
KILL_ENV = "SOCIALFEAT_TEST_KILL_AT_STEP"  # fault injection for the resume test: SIGKILL after this step
SIGNAL_ENV = "SOCIALFEAT_TEST_SIGNAL"  # the signal it sends instead (INT: Ctrl-C)
RESUME_INSENSITIVE = {"workers", "threads", "device", "checkpoint_every", "epochs"}
Progress = Callable[[dict[str, Any]], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class TrainingData:
    """Warm items that have an image and targets: cache rows, target arrays, head sizes, train/valid split."""

    item_ids: list
    rows: np.ndarray
    targets: dict[str, np.ndarray]
    dims: dict[str, int]
    train: np.ndarray
    valid: np.ndarray
    without_image: int
    user_root: torch.Tensor | None = None  # the audience loss's square root of the users' factor moment


def training_data(run: Path, cfg: TrainConfig, cache_rows: dict, seed: int) -> TrainingData:
    """Join the selected targets on item id and keep the items whose image is in the cache."""
    tdir = run / "targets"
    arrays: dict[str, np.ndarray] = {}
    dims: dict[str, int] = {}
    ids: list | None = None
    summary = read_json(tdir / "summary.json", run=run) if (tdir / "summary.json").is_file() else {}
    for target in cfg.targets:
        path = tdir / TARGET_FILES[target]
        table = read_table(path, run=run)
        these = table.column("item_id").to_pylist()
        if ids is None:
            ids = these
        elif these != ids:
            raise UserError(str(tdir), f"{path.name} lists other items than the other targets; rerun targets")
        if target in MATRIX_TARGETS:
            col = table.column("target").combine_chunks()
            arrays[target] = col.flatten().to_numpy().reshape(len(table), col.type.list_size).astype(np.float32)
            dims[target] = col.type.list_size
        else:
            labels = table.column("cluster").to_numpy().astype(np.int64)
            arrays[target] = labels
            dims[target] = int(summary.get(target, {}).get("k", labels.max() + 1))
    assert ids is not None
    has = np.array([i in cache_rows for i in ids], dtype=bool)
    keep = np.flatnonzero(has)
    if len(keep) == 0:
        raise UserError(str(run), "no item with targets has a usable image")
    item_ids = [ids[i] for i in keep]
    arrays = {k: v[keep] for k, v in arrays.items()}
    rows = np.array([cache_rows[i] for i in item_ids], dtype=np.int64)
    held = uniform(np.arange(len(item_ids)), seed=seed + 17) < cfg.valid_fraction
    if held.all():
        held[0] = False
    root = audience_root(run, summary) if cfg.regression_loss == "audience" and "factors" in cfg.targets else None
    return TrainingData(
        item_ids, rows, arrays, dims, np.flatnonzero(~held), np.flatnonzero(held), int((~has).sum()), root
    )


def check_targets(run: Path, cfg: TrainConfig) -> None:
    """Every selected target has its file in targets/. The command suggested keeps the targets already written
    (the stage rewrites the folder whole)."""
    tdir = run / "targets"
    summary = read_json(tdir / "summary.json", run=run) if (tdir / "summary.json").is_file() else {}
    for target in cfg.targets:
        path = tdir / TARGET_FILES[target]
        if not path.is_file():
            wanted = ",".join(dict.fromkeys([*summary.get("targets", []), target]))
            raise UserError(str(run), f"no targets/{path.name}; run `socialfeat targets {run} --targets {wanted}`")


def audience_root(run: Path, summary: dict) -> torch.Tensor:
    """The users' factor moment root for the audience loss; the targets must be the factors themselves."""
    how = summary.get("factors", {}).get("normalize")
    if how != "none":
        raise UserError(
            "train.regression_loss",
            f"audience scores raw factors but targets/ holds {how}-scaled ones; set targets.normalize: none and rerun "
            "`socialfeat targets`",
        )
    return user_moment_root(user_factors(run))


def user_factors(run: Path) -> torch.Tensor:
    """The frozen ALS user factors (users × f), for the audience and ranking losses."""
    path = run / "factors" / "user_factors.parquet"
    if not path.is_file():
        raise UserError(str(run), f"no factors/{path.name}; run `socialfeat factorize {run}` first")
    col = read_table(path, columns=["factors"], run=run).column("factors").combine_chunks()
    users = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
    return torch.from_numpy(np.array(users, dtype=np.float32))


# ---------------------------------------------------------------------------------------------- loss
def step_losses(
    cfg: TrainConfig,
    heads: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    user_root: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One loss per target: regression onto factors, cross-entropy on pseudo-classes (masked rows skipped)."""
    out = {}
    for target, pred in heads.items():
        truth = batch[target]
        if target == "factors":
            out[target] = regression_loss(cfg.regression_loss, pred, truth, user_root)
        elif target == "tags":
            out[target] = multilabel_loss(pred, truth)
        else:
            out[target] = masked_cross_entropy(pred, truth)
    return out


@torch.no_grad()
def validate(model: FeatureModel, ds: CachedImages, cfg: TrainConfig, d: Dist) -> dict[str, float]:
    """Cosine to the true factors and top-1 on pseudo-classes, over the held-out warm items (rank 0)."""
    if len(ds) == 0:
        return {}
    model.eval()
    order = EpochBatches(len(ds), cfg.batch_size, shuffle=False)
    preds: dict[str, list[torch.Tensor]] = {t: [] for t in model.targets}
    truth: dict[str, list[torch.Tensor]] = {t: [] for t in model.targets}
    for batch in batch_loader(ds, list(order.epoch(0)), loader_workers(cfg, d), 0, False):
        with _autocast(d, cfg):
            _, heads = model(batch["images"].to(d.device, non_blocking=True))
        for t in model.targets:
            preds[t].append(heads[t].float().cpu())
            truth[t].append(batch[t])
    model.train()
    metrics = {}
    for t in model.targets:
        p, y = torch.cat(preds[t]), torch.cat(truth[t])
        if t == "factors":
            metrics["factors_cosine"] = mean_cosine(p, y)
        elif t == "tags":
            metrics["tags_top1"] = top1_tag(p, y)
        else:
            metrics[f"{head_key(t)}_top1"] = top1(p, y)
    return metrics


def loader_workers(cfg: TrainConfig, d: Dist) -> int:
    """Measured (bench/train.py): on CPU, worker processes steal cores from the model (0.84 vs 0.92 of model-only
    throughput on 2 cores), so decode in-process; a GPU wants workers feeding it."""
    return default_workers(cfg.workers, d)


def _autocast(d: Dist, cfg: TrainConfig) -> torch.autocast:
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=d.device.type == "cuda" and cfg.amp)


def lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero at the last step."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


# ---------------------------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    work: Path,
    model: FeatureModel,
    opt: torch.optim.Optimizer,
    sched: Any,
    position: dict[str, int],
    rng: list[dict[str, Any]],
    config: Config,
    best: dict[str, torch.Tensor] | None = None,
) -> None:
    """Weights (safetensors) + optimizer, scheduler, every rank's RNG states, the position and the best epoch's
    weights so far (when selecting), atomically."""
    try:
        with atomic_dir(work / "checkpoint", "checkpoint") as tmp:
            save_weights(tmp / "weights.safetensors", model)
            if best is not None:
                write_safetensors(tmp / "best.safetensors", best)
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng, **position}
            write_torch(tmp / "state.pt", state)
            write_json(
                tmp / "position.json", {**position, **fingerprints(tmp, "weights.safetensors", "best.safetensors")}
            )
            write_text(tmp / "config.yaml", dump_config(config))
    except UserError as e:  # a full disk or a size limit: the earlier checkpoint is intact, and says so
        raise UserError(e.where, f"{e.message}; {interrupted_note(work.parent, _name_of(work))}") from e


def load_checkpoint(work: Path, config: Config) -> dict[str, Any]:
    """The checkpoint's state, refusing one written with different training settings."""
    import yaml

    ckpt = work / "checkpoint"
    if not (ckpt / "state.pt").is_file():
        raise UserError(str(work.parent), "nothing to resume: no checkpoint in .train/; train without --resume")
    with reading(ckpt / "config.yaml", "YAML", work.parent):
        saved = yaml.safe_load((ckpt / "config.yaml").read_text(encoding="utf-8"))
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        raise damaged(ckpt / "config.yaml", "not a recorded config", work.parent)
    now = config.model_dump(mode="json")
    for key in sorted(set(saved["train"]) | set(now["train"])):
        if key not in RESUME_INSENSITIVE and saved["train"].get(key) != now["train"].get(key):
            raise UserError(
                f"train.{key}",
                f"checkpoint has {saved['train'].get(key)!r}, now {now['train'].get(key)!r}; "
                "resume with the same settings or train from scratch",
            )
    if saved["seed"] != now["seed"]:
        raise UserError("seed", f"checkpoint was trained with seed {saved['seed']}, now {now['seed']}")
    with reading(ckpt / "state.pt", "PyTorch checkpoint", work.parent):
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    state["weights"] = read_safetensors(ckpt / "weights.safetensors", work.parent)
    if (ckpt / "best.safetensors").is_file():
        state["best_weights"] = read_safetensors(ckpt / "best.safetensors", work.parent)
    return state


def _gather_rng(d: Dist) -> list[dict[str, Any]]:
    state = _rng_state()
    if d.world == 1:
        return [state]
    states: list[Any] = [None] * d.world
    dist.all_gather_object(states, state)
    return states


# ---------------------------------------------------------------------------------------------- ranking, selection
def _ranking_users(run: Path, cfg: TrainConfig, device: torch.device) -> torch.Tensor | None:
    """The ALS user factors the ranking loss samples from, or None when it is off."""
    if cfg.rank_loss == "none" or cfg.rank_weight == 0:
        return None
    if "factors" not in cfg.targets:
        raise UserError("train.rank_loss", "the ranking loss scores the factors head: add factors to train.targets")
    return user_factors(run).to(device)


def ranking_loss(cfg: TrainConfig, pred: torch.Tensor, teacher: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    """Listwise KL over the batch's items for ``rank_users`` users drawn (from the global RNG, so resumes repeat
    them) from the ALS users."""
    sample = users[torch.randint(len(users), (cfg.rank_users,)).to(users.device)]
    tau = rank_temperature(sample, teacher, cfg.rank_temperature)
    return listwise_kl_loss(pred, teacher, sample, tau)


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    """Where the trained model went and how its training went.

    Attributes:
        out: The model folder, ``RUN/model`` or ``RUN/meta-class``.
        metrics: One record per epoch, as in ``metrics.jsonl``: losses, validation scores, images/s.
        summary: Items trained on and held out, parameters, device, steps, time, and the epoch kept.
    """

    out: Path
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]


@writes_run()
def train(
    config: Config,
    run: str | os.PathLike[str],
    resume: bool = False,
    progress: Progress | None = None,
    name: str = "model",
) -> TrainResult:
    """Train the image model on the warm items' images to predict their targets, and keep its best epoch.

    One loop serves a CPU, one GPU, and many GPUs under ``torchrun``. Only rank 0 writes ``run/<name>``.

    Args:
        config: The run's configuration; reads ``train`` and ``seed``.
        run: The run folder, holding ``targets/`` and ``dataset/``.
        resume: Continue from the last checkpoint; the result equals an uninterrupted run's.
        progress: Hears one event dict per step, epoch, selection and image-cache update.
        name: The model folder: ``model``, or ``meta-class`` for :func:`train_meta_class`.

    Returns:
        The model folder, per-epoch metrics and a summary.

    Raises:
        UserError: Targets missing or stale, settings that cannot work together, or a resume with changed
            settings.
        Interrupted: Ctrl-C; it says whether a checkpoint was kept for ``--resume``.
    """
    try:
        return _train(config, Path(run), resume, progress, name)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_note(Path(run), name)) from None


def _work_dir(run: Path, name: str) -> Path:
    return run / (".train" if name == "model" else f".train-{name}")


def _name_of(work: Path) -> str:
    """The model folder a work folder trains (:func:`_work_dir` reversed)."""
    return "model" if work.name == ".train" else work.name.removeprefix(".train-")


def interrupted_note(run: Path, name: str = "model") -> str:
    """What an interrupted training kept: the last checkpoint (and the command that continues it), or nothing."""
    work = _work_dir(run, name)
    try:
        position = json.loads((work / "checkpoint" / "position.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no checkpoint was written yet; {run / name} is as it was"
    return (
        f"the checkpoint at epoch {int(position.get('epoch', 0)) + 1}, step {position.get('step', 0)} was kept in "
        f"{work}; continue with: {resume_command(run, name)}"
    )


def _train(config: Config, run: Path, resume: bool, progress: Progress | None, name: str) -> TrainResult:
    """The loop in its named steps: set up, restore or start afresh, score the start, then per epoch train, select
    and checkpoint, and finally keep the best epoch."""
    t = _setup(config, run, name, progress)
    if resume:
        _restore(t)
    else:
        _start_afresh(t)
    _begin(t)
    _select_start(t, resume)
    t.model.train()
    for epoch in range(t.start, t.cfg.epochs):
        record = _run_epoch(t, epoch)
        _select_epoch(t, record)
        _checkpoint(t, record)
    return _conclude(t)


@dataclass
class Training:
    """One training between its steps: what setup built, and where the loop stands (epoch, step, history, best)."""

    config: Config
    run: Path
    work: Path
    out_dir: Path
    d: Dist
    note: Progress
    began: float
    data: TrainingData
    model: FeatureModel
    counts: dict[str, int]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    order: EpochBatches
    train_ds: CachedImages
    valid_ds: CachedImages
    selector: Selector | None
    teacher: Teacher | None = None  # distillation from the start
    anchor: StartingPoint | None = None  # L2-SP's pull to the start
    users: torch.Tensor | None = None  # the ranking loss's ALS users
    net: torch.nn.Module | None = None  # the model, DDP-wrapped under torchrun
    start: int = 0  # the epoch to begin with, the steps of it already done, the global step
    skip: int = 0
    step: int = 0
    partial: dict[str, Any] = field(default_factory=dict)  # a resumed epoch's running loss sums
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, torch.Tensor] | None = None  # the best epoch's weights so far (selecting)

    @property
    def cfg(self) -> TrainConfig:
        return self.config.train

    @property
    def extras(self) -> list[str]:
        """The losses the recipe adds to the targets' own."""
        return [
            k for k, on in (("distill", self.teacher), ("l2sp", self.anchor), ("rank", self.users)) if on is not None
        ]


def _setup(config: Config, run: Path, name: str, progress: Progress | None) -> Training:
    """The process group, the image cache, the training data, the model and its optimizer, the selector."""
    cfg = config.train
    if not cfg.targets:
        raise UserError("train.targets", "select at least one target: factors, factor-clusters, engagement")
    # every rank sees the run folder (shared, or a copy on each node), else all stop at once in one line
    d = setup_distributed(cfg.device, cfg.dist_timeout_minutes, run)
    check_inputs(run, name)  # targets/ and factors/ current: never train on targets of an older factorization
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    out_dir = claim_dir(run / name, "model")  # a folder socialfeat did not write fails now, not after training
    note = progress or (lambda _: None)
    began = time.perf_counter()
    cache = shared_image_cache(
        d, run, cfg, cfg.image_size, lambda done, total: note({"event": "cache", "done": done, "total": total})
    )
    check_targets(run, cfg)
    data = training_data(run, cfg, cache.rows, config.seed)
    if data.user_root is not None:
        data.user_root = data.user_root.to(d.device)
    seed_everything(config.seed + d.rank)
    model, counts, opt, teacher, anchor = _build_model(cfg, data, d)
    users = _ranking_users(run, cfg, d.device)
    lambdas, batch = config.evaluate.ridge_lambdas, config.embed.batch_size
    selector = make_selector(run, cfg, cache.path, cache.rows, lambdas, batch, config.seed)  # the same on every rank
    if cfg.head_init == "ridge" and ("factors" not in cfg.targets or selector is None):
        raise UserError(
            "train.head_init",
            "ridge starts the factors head from the selection's ridge map: it needs "
            "the factors target and select: valid-auc with cold valid items",
        )
    per_rank = max(1, cfg.batch_size // d.world)
    if cfg.batch_size % d.world:
        log.warning("batch %d does not split evenly over %d ranks; each takes %d", cfg.batch_size, d.world, per_rank)
    order = EpochBatches(len(data.train), per_rank, d.rank, d.world, config.seed, per_epoch=cfg.images_per_epoch)
    total = order.steps_per_epoch() * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, min(cfg.warmup_steps, total // 2)))
    subset = {t: a[data.train] for t, a in data.targets.items()}
    train_ds = CachedImages(cache.path, data.rows[data.train], subset, augment=cfg.augment, seed=config.seed)
    valid_ds = CachedImages(cache.path, data.rows[data.valid], {t: a[data.valid] for t, a in data.targets.items()})
    return Training(
        config, run, _work_dir(run, name), out_dir, d, note, began, data, model, counts, opt, sched, order,
        train_ds, valid_ds, selector, teacher, anchor, users,
    )  # fmt: skip


def _build_model(
    cfg: TrainConfig, data: TrainingData, d: Dist
) -> tuple[FeatureModel, dict[str, int], torch.optim.Optimizer, Teacher | None, StartingPoint | None]:
    """The network with its heads on the device, AdamW over the trainable parts, and the start's teacher and
    anchor — captured now, before a checkpoint's weights are loaded on top of them."""
    model = FeatureModel(create_backbone(cfg.backbone, cfg.weights), data.dims, cfg.dropout)
    model.frozen_batchnorm = cfg.batchnorm == "frozen"
    counts = apply_finetune(model, cfg.finetune)
    model.to(d.device)
    if d.device.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    head_params = [p for p in model.heads.parameters() if p.requires_grad]
    body_params = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": head_params, "lr": cfg.lr}]
    if body_params and cfg.backbone_lr_scale > 0:
        # L2-SP replaces decay toward zero on the backbone: a pull to the start and a pull to zero would fight
        body = {"params": body_params, "lr": cfg.lr * cfg.backbone_lr_scale}
        groups.append({**body, **({"weight_decay": 0.0} if cfg.l2sp > 0 else {})})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    teacher = Teacher(model, cache=not cfg.augment).to(d.device) if cfg.distill > 0 else None
    anchor = StartingPoint(body_params) if cfg.l2sp > 0 and body_params else None
    return model, counts, opt, teacher, anchor


def _restore(t: Training) -> None:
    """Continue from the checkpoint: weights, optimizer, schedule, position, RNG states, history, best epoch."""
    state = load_checkpoint(t.work, t.config)
    t.best = state.get("best_weights")
    t.model.load_state_dict(state["weights"])
    t.opt.load_state_dict(state["optimizer"])
    t.sched.load_state_dict(state["scheduler"])
    t.start, t.skip, t.step = int(state["epoch"]), int(state["step_in_epoch"]), int(state["step"])
    t.partial = {"sums": state.get("sums", {}), "n": state.get("n", 0)}
    rng = state["rng"]
    if len(rng) == t.d.world:
        _set_rng_state(rng[t.d.rank])
    else:
        log.warning("checkpoint has %d ranks' RNG states, this run %d: reseeding", len(rng), t.d.world)
    metrics = t.work / "metrics.jsonl"
    if metrics.is_file():
        history = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        t.history = [h for h in history if h["epoch"] < t.start]
    t.history = from_rank0(t.history, t.d)  # every rank agrees whether the start is still to be scored


def _start_afresh(t: Training) -> None:
    """An empty work folder (rank 0); a checkpoint left there is discarded, with a warning."""
    if t.d.main:
        if (t.work / "checkpoint").exists():
            log.warning("starting afresh: the checkpoint in %s is discarded (use --resume to continue it)", t.work)
        shutil.rmtree(t.work, ignore_errors=True)
        t.work.mkdir(parents=True)


def _begin(t: Training) -> None:
    """Every rank ready: wrap the model for DDP and say what is about to be trained."""
    barrier(t.d)
    t.net = t.model
    if t.d.world > 1:
        t.net = DistributedDataParallel(
            t.model,
            device_ids=[t.d.local_rank] if t.d.device.type == "cuda" else None,
            find_unused_parameters=t.cfg.head_epochs > 0,  # the backbone gets no gradients while it is held
        )
    total = t.order.steps_per_epoch() * t.cfg.epochs
    d, data = t.d, t.data
    t.note(
        {
            "event": "start", "total": total, "step": t.step, "epochs": t.cfg.epochs, "items": len(data.item_ids),
            "train": len(data.train), "per_epoch": t.order.per_rank() * d.world, "valid": len(data.valid),
            "parameters": t.counts, "world": d.world, "device": str(d.device),
        }
    )  # fmt: skip


def _select_start(t: Training, resume: bool) -> None:
    """Epoch 0: the untrained start is a candidate like any epoch — a model no epoch improves on is no win. With
    ``head_init: ridge`` the factors head starts as the ridge this selection fit."""
    if t.selector is None or any(h["epoch"] < 0 for h in t.history):
        return
    t.note({"event": "select", "epoch": -1, **t.selector.summary})
    record = {"epoch": -1, "step": 0, **t.selector.score(t.model, t.d.device, t.d)}
    t.history.append(record)
    if t.cfg.head_init == "ridge":
        if t.d.main:
            ridge_init(t.model, t.selector, t.data.item_ids, t.data.targets["factors"], record["select_lambda"])
        if t.d.world > 1 and not resume:
            for p in t.model.heads.parameters():  # rank 0 fit it: every rank starts from the same head
                dist.broadcast(p.data, 0)
    t.best = state_tensors(t.model)
    if t.d.main:
        write_text(t.work / "metrics.jsonl", json_lines(t.history))
    t.note({"event": "epoch", **record})


def _run_epoch(t: Training, epoch: int) -> dict[str, Any]:
    """One pass over this rank's share of the training items (from the resume point), then the held-out warm
    items' validation: the epoch's record."""
    cfg, d = t.cfg, t.d
    t.model.hold_backbone(epoch < cfg.head_epochs)
    keys = list(t.order.epoch(epoch, t.skip))
    t0, seen, sums, n = time.perf_counter(), 0, {k: 0.0 for k in ["loss", *cfg.targets, *t.extras]}, 0
    if t.skip:  # resumed mid-epoch: the epoch's running loss sums come back with the checkpoint
        sums, n = dict(t.partial["sums"]), int(t.partial["n"])
    loader = batch_loader(t.train_ds, keys, loader_workers(cfg, d), t.config.seed + epoch, d.device.type == "cuda")
    for i, batch in enumerate(loader):
        logged = _step(t, batch)
        for key, value in zip(sums, logged.tolist(), strict=True):
            sums[key] += value
        n += 1
        seen += len(batch["images"]) * d.world
        rate = seen / max(time.perf_counter() - t0, 1e-9)
        t.note({"event": "step", "step": t.step, "epoch": epoch, "loss": logged[0].item(), "images_per_s": rate})
        _checkpoint_within(t, {"epoch": epoch, "step_in_epoch": t.skip + i + 1, "step": t.step, "sums": sums, "n": n})
    t.skip = 0
    seconds = time.perf_counter() - t0
    valid = validate(t.model, t.valid_ds, cfg, d) if d.main else {}
    return {
        "epoch": epoch,
        "step": t.step,
        **{f"train_{k}": v / max(n, 1) for k, v in sums.items()},
        **{f"valid_{k}": v for k, v in valid.items()},
        "images_per_s": seen / max(seconds, 1e-9),
        "seconds": seconds,
        "lr": t.sched.get_last_lr()[0],
    }


def _step(t: Training, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One optimizer step on one batch; the step's losses (total first), averaged over the ranks, on the CPU."""
    cfg, d = t.cfg, t.d
    images = batch["images"].to(d.device, non_blocking=True)
    assert t.net is not None
    with _autocast(d, cfg):
        pooled, heads = t.net(images)
    truth = {k: batch[k].to(d.device) for k in cfg.targets}
    losses = step_losses(cfg, heads, truth, t.data.user_root)
    loss = sum(cfg.loss_weights.get(k, 1.0) * losses[k] for k in cfg.targets)
    if t.teacher is not None:
        losses["distill"] = t.teacher.loss(pooled, images, batch["index"])
        loss = loss + cfg.distill * losses["distill"]
    if t.anchor is not None:
        losses["l2sp"] = t.anchor.penalty()
        loss = loss + cfg.l2sp * losses["l2sp"]
    if t.users is not None:
        losses["rank"] = ranking_loss(cfg, heads["factors"], truth["factors"], t.users)
        loss = loss + cfg.rank_weight * losses["rank"]
    t.opt.zero_grad(set_to_none=True)
    loss.backward()
    t.opt.step()
    t.sched.step()
    t.step += 1
    logged = torch.stack([loss.detach().float(), *(losses[k].detach().float() for k in [*cfg.targets, *t.extras])])
    logged = logged.cpu()
    if d.world > 1:
        dist.all_reduce(logged)
        logged /= d.world
    return logged


def _checkpoint_within(t: Training, position: dict[str, Any]) -> None:
    """The checkpoint every ``checkpoint_every`` steps inside an epoch (its end has its own), and the test's fault
    injection: SIGKILL (or the signal SOCIALFEAT_TEST_SIGNAL names) after step SOCIALFEAT_TEST_KILL_AT_STEP."""
    every = t.cfg.checkpoint_every
    if every and t.step % every == 0 and position["step_in_epoch"] < t.order.steps_per_epoch():
        rng = _gather_rng(t.d)
        if t.d.main:
            save_checkpoint(t.work, t.model, t.opt, t.sched, position, rng, t.config, t.best)
    kill_at = int(os.environ.get(KILL_ENV, "0"))
    if kill_at and t.step == kill_at:
        os.kill(os.getpid(), getattr(signal, f"SIG{os.environ.get(SIGNAL_ENV, 'KILL')}"))


def _select_epoch(t: Training, record: dict[str, Any]) -> None:
    """Score the epoch's model for selection (every rank takes part) and keep its weights when it is the best."""
    if t.selector is not None:
        t.note({"event": "select", "epoch": record["epoch"], **t.selector.summary})
        record.update(t.selector.score(t.model, t.d.device, t.d))
    t.history.append(record)
    if t.selector is not None and best_epoch(t.history) is record:
        t.best = state_tensors(t.model)


def _checkpoint(t: Training, record: dict[str, Any]) -> None:
    """The end of an epoch: metrics.jsonl and an atomic checkpoint (rank 0), then every rank in step."""
    rng = _gather_rng(t.d)
    if t.d.main:
        write_text(t.work / "metrics.jsonl", json_lines(t.history))
        position = {"epoch": record["epoch"] + 1, "step_in_epoch": 0, "step": t.step}
        save_checkpoint(t.work, t.model, t.opt, t.sched, position, rng, t.config, t.best)
    t.note({"event": "epoch", **record})
    barrier(t.d)


def _conclude(t: Training) -> TrainResult:
    """Keep the best epoch (rank 0 writes ``run/<name>`` and drops the work folder)."""
    d, data = t.d, t.data
    summary = {
        "items": len(data.item_ids),
        "train": len(data.train),
        "per_epoch": t.order.per_rank() * d.world,
        "valid": len(data.valid),
        "without_image": data.without_image,
        "parameters": t.counts,
        "world": d.world,
        "device": str(d.device),
        "steps": t.step,
        "train_seconds": time.perf_counter() - t.began,
    }
    if d.main:
        summary.update(keep_best(t.model, t.selector, t.best, t.history))
        try:
            _finish(t.out_dir, t.work, t.model, data, t.history, summary, t.config)
        except UserError as e:  # a full disk or a size limit on the model write: the last checkpoint is kept
            raise UserError(e.where, f"{e.message}; {interrupted_note(t.run, _name_of(t.work))}") from e
    barrier(d)
    return TrainResult(t.out_dir, t.history, summary)


def _finish(
    out: Path,
    work: Path,
    model: FeatureModel,
    data: TrainingData,
    history: list[dict[str, Any]],
    summary: dict[str, Any],
    config: Config,
) -> None:
    """Write the model folder ``out`` in one atomic step, then drop the work folder."""
    cfg = config.train
    meta = {
        "backbone": cfg.backbone,
        "init": cfg.weights,
        "heads": data.dims,
        "targets": list(cfg.targets),
        "image_size": cfg.image_size,
        "num_features": model.num_features,
        "dropout": cfg.dropout,
        "finetune": cfg.finetune,
        "regression_loss": cfg.regression_loss,
        "preprocess": "(x - 127) / 128",
        **summary,
    }
    with atomic_dir(out, "model") as tmp:
        save_weights(tmp / "weights.safetensors", model)
        write_json(tmp / "model.json", {**meta, **fingerprints(tmp, "weights.safetensors")})
        write_text(tmp / "metrics.jsonl", json_lines(history))
        write_json(tmp / "manifest.json", provenance(config, "train"))
        write_text(tmp / "config.yaml", dump_config(config))
    shutil.rmtree(work, ignore_errors=True)


def meta_class_config(config: Config) -> Config:
    """The learned model's recipe with the tags head as its only target: the meta-class baseline."""
    train_cfg = config.train.model_copy(update={"targets": ["tags"], "rank_loss": "none", "meta_class": False})
    return config.model_copy(update={"train": train_cfg})


def train_meta_class(
    config: Config, run: str | os.PathLike[str], resume: bool = False, progress: Progress | None = None
) -> TrainResult:
    """Train the meta-class baseline into ``run/meta-class``: the same recipe, taught by the items' tags alone.

    It shares backbone, fine-tuning and selection with :func:`train`, so behaviour and metadata teachers are
    compared on equal terms.

    Args:
        config: The run's configuration; its ``train`` section is used with the tags head as the only target.
        run: The run folder, holding ``targets/tags.parquet``.
        resume: Continue from the last checkpoint.
        progress: Hears one event dict per step and epoch, as in :func:`train`.

    Returns:
        The model folder, per-epoch metrics and a summary.

    Raises:
        UserError: No tags target, or the errors of :func:`train`.
        Interrupted: Ctrl-C, as in :func:`train`.
    """
    return train(meta_class_config(config), Path(run), resume, progress, name="meta-class")
