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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from socialfeat.artifacts import damaged, read_json, read_safetensors, read_table, reading
from socialfeat.atomic import atomic_dir, claim_dir, write_json, write_text
from socialfeat.config import Config, TrainConfig, dump_config, provenance
from socialfeat.data.batches import CachedImages, EpochBatches
from socialfeat.errors import Interrupted, UserError
from socialfeat.factorize.splits import uniform
from socialfeat.freshness import check_inputs
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
from socialfeat.runtime import Dist, barrier, batch_loader, default_workers, setup_distributed, shared_image_cache
from socialfeat.selection import METRIC, Selector, best_epoch, make_selector, ridge_head

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
    from safetensors.torch import save_file

    with atomic_dir(work / "checkpoint", "checkpoint") as tmp:
        save_weights(tmp / "weights.safetensors", model)
        if best is not None:
            save_file(best, str(tmp / "best.safetensors"))
        torch.save(
            {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng, **position}, tmp / "state.pt"
        )
        write_json(tmp / "position.json", position)
        write_text(tmp / "config.yaml", dump_config(config))


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


def _ridge_init(model: FeatureModel, selector: Selector, data: TrainingData, lam: float) -> None:
    """Set the factors head to the ridge map the selection fit on the starting features (its fit items' training
    targets, so a normalisation of the targets is respected)."""
    position = {item: i for i, item in enumerate(data.item_ids)}
    ids = [selector.data.item_ids[i] for i in selector.data.train]
    keep = np.array([i in position for i in ids], dtype=bool)
    targets = data.targets["factors"][[position[i] for i, k in zip(ids, keep, strict=True) if k]]
    assert selector.fit_features is not None
    weight, bias = ridge_head(selector.fit_features[keep], targets, lam)
    head = model.heads[head_key("factors")]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))


def _select(
    model: FeatureModel, selector: Selector | None, best: dict[str, torch.Tensor] | None, history: list[dict]
) -> dict[str, Any]:
    """Load the best epoch's weights into ``model`` and describe the choice; one line when the start won."""
    if selector is None:
        return {"selection": "last", "selected_epoch": len([h for h in history if h["epoch"] >= 0])}
    chosen = best_epoch(history)
    assert chosen is not None and best is not None
    model.load_state_dict(best)
    selected = int(chosen["epoch"]) + 1
    start = next(h for h in history if h["epoch"] < 0)[METRIC]
    if selected == 0:
        log.info(
            "no epoch beat the untrained start on valid cold-start AUC (%.4f): run/model is the starting network, "
            "no win from training",
            start,
        )
    return {
        "selection": "valid-auc",
        "selected_epoch": selected,
        METRIC: chosen[METRIC],
        f"{METRIC}_start": start,
        **selector.summary,
    }


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    out: Path
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]


def train(
    config: Config,
    run: str | os.PathLike[str],
    resume: bool = False,
    progress: Progress | None = None,
    name: str = "model",
) -> TrainResult:
    """Train the image model on the warm items' images to predict their targets; write ``run/<name>`` (``model``;
    ``meta-class`` for the baseline of :func:`train_meta_class`). Ctrl-C ends in :class:`Interrupted`, which says
    whether a checkpoint was kept for ``--resume``."""
    try:
        return _train(config, run, resume, progress, name)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_note(Path(run), name)) from None


def interrupted_note(run: Path, name: str = "model") -> str:
    """What an interrupted training kept: the last checkpoint (and the command that continues it), or nothing."""
    work = run / (".train" if name == "model" else f".train-{name}")
    try:
        position = json.loads((work / "checkpoint" / "position.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no checkpoint was written yet; {run / name} is as it was"
    flag = " --meta-class" if name == "meta-class" else ""
    return (
        f"the checkpoint at epoch {int(position.get('epoch', 0)) + 1}, step {position.get('step', 0)} was kept in "
        f"{work}; continue with: socialfeat train {run}{flag} --resume"
    )


def _train(
    config: Config, run: str | os.PathLike[str], resume: bool, progress: Progress | None, name: str
) -> TrainResult:
    run, cfg = Path(run), config.train
    if not cfg.targets:
        raise UserError("train.targets", "select at least one target: factors, factor-clusters, engagement")
    check_inputs(run, name)  # targets/ and factors/ current: never train on targets of an older factorization
    d = setup_distributed(cfg.device, cfg.dist_timeout_minutes)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    work = run / (".train" if name == "model" else f".train-{name}")
    out_dir = claim_dir(run / name, "model")  # a folder socialfeat did not write fails now, not after training
    note = progress or (lambda _: None)
    began = time.perf_counter()

    cache = shared_image_cache(
        d, run, cfg, cfg.image_size, lambda done, total: note({"event": "cache", "done": done, "total": total})
    )
    check_targets(run, cfg)
    data = training_data(run, cfg, cache.rows, config.seed)

    seed_everything(config.seed + d.rank)
    backbone = create_backbone(cfg.backbone, cfg.weights)
    model = FeatureModel(backbone, data.dims, cfg.dropout)
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
        groups.append(
            {
                "params": body_params,
                "lr": cfg.lr * cfg.backbone_lr_scale,
                **({"weight_decay": 0.0} if cfg.l2sp > 0 else {}),
            }
        )
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    # the start, captured before a checkpoint's weights are loaded on top of it
    teacher = Teacher(model, cache=not cfg.augment).to(d.device) if cfg.distill > 0 else None
    anchor = StartingPoint(body_params) if cfg.l2sp > 0 and body_params else None
    users = _ranking_users(run, cfg, d.device)
    selector = (
        make_selector(
            run,
            cfg.select,
            cache.path,
            cache.rows,
            cfg.select_items,
            config.evaluate.ridge_lambdas,
            config.embed.batch_size,
            config.seed,
        )
        if d.main
        else None
    )
    extras = [name for name, on in (("distill", teacher), ("l2sp", anchor), ("rank", users)) if on is not None]
    if cfg.head_init == "ridge" and ("factors" not in cfg.targets or (d.main and selector is None)):
        raise UserError(
            "train.head_init",
            "ridge starts the factors head from the selection's ridge map: it needs "
            "the factors target and select: valid-auc with cold valid items",
        )
    per_rank = max(1, cfg.batch_size // d.world)
    if cfg.batch_size % d.world:
        log.warning("batch %d does not split evenly over %d ranks; each takes %d", cfg.batch_size, d.world, per_rank)
    order = EpochBatches(len(data.train), per_rank, d.rank, d.world, config.seed)
    steps_per_epoch = order.steps_per_epoch()
    total_steps = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, min(cfg.warmup_steps, total_steps // 2)))

    start, skip, step = 0, 0, 0
    partial: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    best: dict[str, torch.Tensor] | None = None
    if resume:
        state = load_checkpoint(work, config)
        best = state.get("best_weights")
        model.load_state_dict(state["weights"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, skip, step = int(state["epoch"]), int(state["step_in_epoch"]), int(state["step"])
        partial = {"sums": state.get("sums", {}), "n": state.get("n", 0)}
        rng = state["rng"]
        if len(rng) == d.world:
            _set_rng_state(rng[d.rank])
        else:
            log.warning("checkpoint has %d ranks' RNG states, this run %d: reseeding", len(rng), d.world)
        if (work / "metrics.jsonl").is_file():
            history = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines() if x.strip()]
            history = [h for h in history if h["epoch"] < start]
    elif d.main:
        if (work / "checkpoint").exists():
            log.warning("starting afresh: the checkpoint in %s is discarded (use --resume to continue it)", work)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    barrier(d)

    net: torch.nn.Module = model
    if d.world > 1:
        net = DistributedDataParallel(
            model,
            device_ids=[d.local_rank] if d.device.type == "cuda" else None,
            find_unused_parameters=cfg.head_epochs > 0,  # the backbone gets no gradients while it is held
        )
    train_ds = CachedImages(
        cache.path,
        data.rows[data.train],
        {t: a[data.train] for t, a in data.targets.items()},
        augment=cfg.augment,
        seed=config.seed,
    )
    valid_ds = CachedImages(cache.path, data.rows[data.valid], {t: a[data.valid] for t, a in data.targets.items()})
    weights = {t: cfg.loss_weights.get(t, 1.0) for t in cfg.targets}
    user_root = data.user_root.to(d.device) if data.user_root is not None else None
    kill_at = int(os.environ.get(KILL_ENV, "0"))
    note(
        {
            "event": "start",
            "total": total_steps,
            "step": step,
            "epochs": cfg.epochs,
            "items": len(data.item_ids),
            "train": len(data.train),
            "valid": len(data.valid),
            "parameters": counts,
            "world": d.world,
            "device": str(d.device),
        }
    )
    if selector is not None and not any(h["epoch"] < 0 for h in history):
        # epoch 0: the untrained start is a candidate like any epoch — a model no epoch improves on is no win
        note({"event": "select", "epoch": -1, **selector.summary})
        record = {"epoch": -1, "step": 0, **selector.score(model, d.device)}
        history.append(record)
        if cfg.head_init == "ridge":
            _ridge_init(model, selector, data, record["select_lambda"])
        best = state_tensors(model)
        write_text(work / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        note({"event": "epoch", **record})
    if cfg.head_init == "ridge" and not resume and d.world > 1:
        for p in model.heads.parameters():  # rank 0 fit it: every rank starts from the same head
            dist.broadcast(p.data, 0)
    model.train()
    for epoch in range(start, cfg.epochs):
        model.hold_backbone(epoch < cfg.head_epochs)
        keys = list(order.epoch(epoch, skip))
        t0, seen, sums, n = time.perf_counter(), 0, {t: 0.0 for t in ["loss", *cfg.targets, *extras]}, 0
        if skip:  # resumed mid-epoch: the epoch's running loss sums come back with the checkpoint
            sums, n = dict(partial["sums"]), int(partial["n"])
        for i, batch in enumerate(
            batch_loader(train_ds, keys, loader_workers(cfg, d), config.seed + epoch, d.device.type == "cuda")
        ):
            images = batch["images"].to(d.device, non_blocking=True)
            with _autocast(d, cfg):
                pooled, heads = net(images)
            truth = {t: batch[t].to(d.device) for t in cfg.targets}
            losses = step_losses(cfg, heads, truth, user_root)
            loss = sum(weights[t] * losses[t] for t in cfg.targets)
            if teacher is not None:
                losses["distill"] = teacher.loss(pooled, images, batch["index"])
                loss = loss + cfg.distill * losses["distill"]
            if anchor is not None:
                losses["l2sp"] = anchor.penalty()
                loss = loss + cfg.l2sp * losses["l2sp"]
            if users is not None:
                losses["rank"] = ranking_loss(cfg, heads["factors"], truth["factors"], users)
                loss = loss + cfg.rank_weight * losses["rank"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            logged = torch.stack(
                [loss.detach().float(), *(losses[t].detach().float() for t in [*cfg.targets, *extras])]
            )
            logged = logged.cpu()
            if d.world > 1:
                dist.all_reduce(logged)
                logged /= d.world
            for name, value in zip(sums, logged.tolist(), strict=True):
                sums[name] += value
            n += 1
            seen += len(images) * d.world
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            note({"event": "step", "step": step, "epoch": epoch, "loss": logged[0].item(), "images_per_s": rate})
            position = {"epoch": epoch, "step_in_epoch": skip + i + 1, "step": step, "sums": sums, "n": n}
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and skip + i + 1 < steps_per_epoch:
                rng = _gather_rng(d)
                if d.main:
                    save_checkpoint(work, model, opt, sched, position, rng, config, best)
            if kill_at and step == kill_at:
                os.kill(os.getpid(), getattr(signal, f"SIG{os.environ.get(SIGNAL_ENV, 'KILL')}"))
        skip = 0
        seconds = time.perf_counter() - t0
        valid = validate(model, valid_ds, cfg, d) if d.main else {}
        scored = {}
        if selector is not None:
            note({"event": "select", "epoch": epoch, **selector.summary})
            scored = selector.score(model, d.device)
        record = {
            "epoch": epoch,
            "step": step,
            **{f"train_{k}": v / max(n, 1) for k, v in sums.items()},
            **{f"valid_{k}": v for k, v in valid.items()},
            "images_per_s": seen / max(seconds, 1e-9),
            "seconds": seconds,
            "lr": sched.get_last_lr()[0],
            **scored,
        }
        history.append(record)
        if selector is not None and best_epoch(history) is record:
            best = state_tensors(model)
        rng = _gather_rng(d)
        if d.main:
            write_text(work / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            save_checkpoint(
                work, model, opt, sched, {"epoch": epoch + 1, "step_in_epoch": 0, "step": step}, rng, config, best
            )
        note({"event": "epoch", **record})
        barrier(d)

    summary = {
        "items": len(data.item_ids),
        "train": len(data.train),
        "valid": len(data.valid),
        "without_image": data.without_image,
        "parameters": counts,
        "world": d.world,
        "device": str(d.device),
        "steps": step,
        "train_seconds": time.perf_counter() - began,
    }
    if d.main:
        summary.update(_select(model, selector, best, history))
        _finish(out_dir, work, model, data, history, summary, config)
    barrier(d)
    return TrainResult(out_dir, history, summary)


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
        write_json(tmp / "model.json", meta)
        write_text(tmp / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
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
    """Train the meta-class baseline — the same backbone, fine-tuning and selection, taught by the items' tags
    alone — into ``run/meta-class``, so that behaviour and metadata teachers are compared on equal terms."""
    return train(meta_class_config(config), Path(run), resume, progress, name="meta-class")
