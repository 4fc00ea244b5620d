"""A trained model on disk: ``weights.safetensors`` (tensors only, safe to receive from anyone) and
``model.json`` (what to build before loading them). No pickle anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from socialfeat.errors import UserError
from socialfeat.models.backbones import create_backbone
from socialfeat.models.heads import FeatureModel


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts: contiguous CPU tensors, no shared storage."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(path: Path, model: torch.nn.Module) -> None:
    save_file(state_tensors(model), str(path))


def build_model(meta: dict[str, Any]) -> FeatureModel:
    """The architecture described by ``model.json`` (random init; weights are loaded on top)."""
    backbone = create_backbone(meta["backbone"], "random")
    return FeatureModel(backbone, {t: int(d) for t, d in meta["heads"].items()}, float(meta.get("dropout", 0.0)))


def load_model(model_dir: Path) -> tuple[FeatureModel, dict[str, Any]]:
    """A trained model in eval mode, and its description. Refuses a missing or incomplete model folder."""
    model_dir = Path(model_dir)
    meta_path, weights = model_dir / "model.json", model_dir / "weights.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        run = model_dir.parent
        how = " --meta-class" if model_dir.name == "meta-class" else ""
        raise UserError(str(run), f"no trained model in {model_dir}; run `socialfeat train {run}{how}` first")
    try:
        meta = json.loads(meta_path.read_text())
        model = build_model(meta)
        model.load_state_dict(load_file(str(weights)))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(str(model_dir), f"cannot load the trained model ({type(e).__name__}: {e})") from None
    return model.eval(), meta
