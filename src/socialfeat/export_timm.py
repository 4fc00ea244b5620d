"""``export --format timm``: a run's learned backbone as a folder that timm itself loads.

The folder holds ``config.json`` (timm's pretrained-config layout) and ``model.safetensors`` (the backbone's
weights under timm's own state-dict names). ``timm.create_model("local-dir:DIR", pretrained=True,
num_classes=0)`` loads it, and the folder is the layout of a model hub repository.

Only the backbone leaves: the heads and the block statistics stay in the run. The config records the
preprocessing the run used and where the weights came from. Before the folder is kept, timm's own loader reads
it back and its pooled features are checked against the run's model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from socialfeat import __version__
from socialfeat.artifacts import fingerprints, read_json
from socialfeat.atomic import atomic_dir, claim_dir, write_json
from socialfeat.config import Config
from socialfeat.errors import UserError
from socialfeat.features import MODEL_DIRS, source_config, source_model
from socialfeat.models.backbones import MEAN, SCALE, first_line, preprocess
from socialfeat.models.store import state_tensors
from socialfeat.runlock import inside, writes_run
from socialfeat.tensor_io import write_safetensors

log = logging.getLogger(__name__)

KIND = "timm export"  # the marker's kind: an existing folder is replaced only when it is one
CONFIG, WEIGHTS = "config.json", "model.safetensors"
TOLERANCE = 1e-4  # relative: the folder as timm loads it against the run's backbone, on a random batch
# the run's (x − 127) / 128 on uint8 pixels, in timm's terms: (x / 255 − mean) / std
TIMM_MEAN = [MEAN / 255.0] * 3
TIMM_STD = [SCALE / 255.0] * 3
CROP = "decode, turn upright (EXIF), alpha on white, shorter side to image_size (bicubic), centre crop"
STAGES = ("dataset", "factors", "targets")  # upstream stage folders whose manifests the provenance names
SUPPORTED = "timm's own models (timm.list_models()), e.g. tf_efficientnet_lite0"


@dataclass
class TimmExportResult:
    """A written timm folder.

    Attributes:
        path: The folder.
        config: What ``config.json`` holds.
        seconds: Time taken.
    """

    path: Path
    config: dict[str, Any]
    seconds: float


def timm_export_path(run: str | os.PathLike[str], source: str) -> Path:
    """The default folder of a source's timm export.

    Args:
        run: The run folder.
        source: The feature source (``learned``, ``meta-class``, ...).

    Returns:
        ``RUN/export/SOURCE-timm``.
    """
    return Path(run) / "export" / f"{source}-timm"


@writes_run(lambda a: a["run"] if inside(a["out"], a["run"]) else None)
def export_timm(
    config: Config,
    run: str | os.PathLike[str],
    source: str = "learned",
    out: str | os.PathLike[str] | None = None,
) -> TimmExportResult:
    """Write a source's backbone as a timm model folder, atomically.

    Args:
        config: The resolved config (the source's recorded image size and settings take precedence).
        run: The run folder.
        source: Which model: ``learned`` (the default), ``meta-class``, ``imagenet`` or ``random``.
        out: The folder to write; default ``RUN/export/SOURCE-timm``. An existing folder is replaced only when
            it is an earlier timm export, or empty.

    Returns:
        The folder, its config and the time taken.

    Raises:
        UserError: The run or its model is missing, the backbone is not a timm model, the folder is taken, or
            timm cannot load what was written.
    """
    t0 = time.perf_counter()
    run = Path(run)
    if not run.is_dir():
        raise UserError(str(run), "run folder not found")
    target = Path(out) if out else timm_export_path(run, source)
    flag = "--out" if out else None
    claim_dir(target, KIND, inputs=[run], flag=flag)  # before loading the model: a taken folder fails fast
    cfg, recorded_size = source_config(config, run, source)
    model, desc = source_model(run, cfg, source)
    size = int(recorded_size or desc.get("image_size", cfg.train.image_size))
    architecture = timm_architecture(model.backbone, str(desc.get("backbone", "")))
    with atomic_dir(target, KIND, inputs=[run]) as tmp:
        write_safetensors(tmp / WEIGHTS, state_tensors(model.backbone))
        document = timm_config(model.backbone, architecture, size)
        document["socialfeat"] = _provenance(cfg, run, source, desc, size, model.block_stats)
        write_json(tmp / CONFIG, document)
        worst = _check_loads(tmp, model.backbone, architecture, size)
        document["socialfeat"]["max_relative_error"] = worst
        document["socialfeat"].update(fingerprints(tmp, WEIGHTS))
        write_json(tmp / CONFIG, document)
    return TimmExportResult(target, document, time.perf_counter() - t0)


def timm_architecture(backbone: nn.Module, name: str) -> str:
    """The timm architecture name of a backbone, or a UserError when timm alone cannot build it.

    Args:
        backbone: The run's backbone.
        name: Its name as the run recorded it (``model.json``'s ``backbone``).

    Returns:
        ``name``, checked.

    Raises:
        UserError: The backbone is socialfeat's own test net or another class from outside timm.
    """
    import timm

    own = type(backbone).__module__.startswith("timm.")
    if not own or not timm.is_model(name):
        raise UserError(
            "--format timm", f"backbone {name or type(backbone).__name__} is not a timm model; supported: {SUPPORTED}"
        )
    return name


def timm_config(backbone: nn.Module, architecture: str, size: int) -> dict[str, Any]:
    """``config.json`` in timm's layout, with the preprocessing the run's model used.

    Args:
        backbone: The run's timm backbone (built with ``num_classes=0``).
        architecture: Its timm name.
        size: The image size the source was embedded at.

    Returns:
        The top-level keys timm reads (``architecture``, ``num_classes``, ``num_features``, ``global_pool``,
        ``pretrained_cfg``).
    """
    source = dict(getattr(backbone, "pretrained_cfg", None) or {})
    default_size = tuple(source.get("input_size", (3, size, size)))
    pretrained = {
        "input_size": [3, size, size],
        "fixed_input_size": bool(source.get("fixed_input_size", False)),
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": TIMM_MEAN,
        "std": TIMM_STD,
        "num_classes": 0,
        "pool_size": source.get("pool_size") if default_size[1:] == (size, size) else None,
        "first_conv": source.get("first_conv"),
        "classifier": source.get("classifier"),
    }
    document: dict[str, Any] = {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": int(backbone.num_features),  # type: ignore[arg-type]
    }
    pool = getattr(getattr(backbone, "global_pool", None), "pool_type", None)
    if isinstance(pool, str) and pool:
        document["global_pool"] = pool
    document["pretrained_cfg"] = pretrained
    return document


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _manifest(folder: Path) -> dict[str, Any] | None:
    """What names a stage's output: its manifest's time, git sha and hash; None for a folder without one."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        return None
    return {
        "stage": manifest.get("stage"),
        "created": manifest.get("created"),
        "git_sha": manifest.get("git_sha"),
        "manifest_sha256": _sha256(path),
    }


def _provenance(
    config: Config, run: Path, source: str, desc: dict[str, Any], size: int, block_stats: int
) -> dict[str, Any]:
    """The ``socialfeat`` block of ``config.json``: which run, stages and training config made the weights."""
    import timm

    stages = {name: m for name in STAGES if (m := _manifest(run / name)) is not None}
    train: dict[str, Any] | None = None
    if source in MODEL_DIRS:
        folder = run / MODEL_DIRS[source]
        found = _manifest(folder)
        if found is not None:
            stages[MODEL_DIRS[source]] = found
            recorded = read_json(folder / "manifest.json")
            train = recorded.get("config", {}).get("train") if isinstance(recorded, dict) else None
    weights = desc.get("fingerprints", {}).get("weights.safetensors", {}) if isinstance(desc, dict) else {}
    block = {
        "version": __version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": str(run),  # as given: an absolute path would publish the local folder names with the model
        "source": source,
        "backbone": desc.get("backbone"),
        "init": desc.get("init"),
        "image_size": size,
        "preprocess": f"uint8 RGB: (x - {MEAN:g}) / {SCALE:g}",
        "crop": CROP,
        "heads": {t: int(d) for t, d in desc.get("heads", {}).items()},
        "heads_exported": False,
        "block_stats": block_stats,
        "run_weights_sha256": weights.get("sha256") if isinstance(weights, dict) else None,
        "selected_epoch": desc.get("selected_epoch"),
        "valid_cold_auc": desc.get("valid_cold_auc"),
        "stages": stages,
        "train": train if train is not None else config.train.model_dump(mode="json"),
        "versions": {"socialfeat": __version__, "timm": timm.__version__, "torch": torch.__version__},
    }
    return block


def timm_input(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 NHWC images normalised as timm's transform does: ``(x / 255 − mean) / std``, NCHW.

    Args:
        images: Decoded, cropped uint8 RGB images, ``[batch, S, S, 3]``.
        mean: ``pretrained_cfg["mean"]``.
        std: ``pretrained_cfg["std"]``.

    Returns:
        A float32 NCHW batch.
    """
    x = images.permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


@torch.no_grad()
def _check_loads(folder: Path, backbone: nn.Module, architecture: str, size: int) -> float:
    """Load ``folder`` through timm's own ``local-dir`` loader, strictly, and compare its pooled features with
    the run's backbone on a random batch; returns the largest relative difference."""
    import timm

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0).eval()
    except Exception as e:  # timm raises RuntimeError, KeyError, ValueError for a folder it cannot read
        raise UserError(f"backbone {architecture}", f"timm cannot load the export: {first_line(e)}") from None
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    device = next(backbone.parameters()).device
    reference = backbone(preprocess(example).to(device)).float().cpu()
    got = loaded(timm_input(example, TIMM_MEAN, TIMM_STD)).float()
    if got.shape != reference.shape:
        raise UserError(
            f"backbone {architecture}", f"timm's model gives {tuple(got.shape)}, expected {tuple(reference.shape)}"
        )
    worst = float((reference - got).abs().max() / reference.abs().max().clamp_min(1e-12))
    if worst > TOLERANCE:
        raise UserError(f"backbone {architecture}", f"timm's model differs from the run's (relative error {worst:.1e})")
    return worst
