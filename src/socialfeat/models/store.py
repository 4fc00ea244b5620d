"""A trained model on disk: ``weights.safetensors`` (tensors only, safe to receive from anyone) and
``model.json`` (what to build before loading them). No pickle anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from socialfeat.artifacts import damaged, missing, read_json, read_safetensors
from socialfeat.errors import UserError
from socialfeat.models.backbones import create_backbone
from socialfeat.models.heads import FeatureModel
from socialfeat.tensor_io import write_safetensors


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts: contiguous CPU tensors, no shared storage."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """The model's weights as safetensors; a full disk or a size limit is an OSError with its errno."""
    write_safetensors(path, state_tensors(model))


def build_model(meta: dict[str, Any]) -> FeatureModel:
    """The architecture described by ``model.json`` (random init; weights are loaded on top)."""
    backbone = create_backbone(meta["backbone"], "random")
    return FeatureModel(backbone, {t: int(d) for t, d in meta["heads"].items()}, float(meta.get("dropout", 0.0)))


def load_model(model_dir: Path) -> tuple[FeatureModel, dict[str, Any]]:
    """A trained model in eval mode, and its description. Refuses a missing, incomplete or damaged model folder
    with one line naming the file and the ``train`` command that rewrites it."""
    model_dir = Path(model_dir)
    meta_path, weights = model_dir / "model.json", model_dir / "weights.safetensors"
    if not model_dir.is_dir():
        raise missing(meta_path)
    meta = read_json(meta_path)
    try:
        model = build_model(meta)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise damaged(meta_path, f"not a model description: {type(e).__name__} {e}") from None
    except UserError as e:  # an unknown backbone name: the description, not the user's flag, is at fault
        raise damaged(meta_path, e.message) from None
    state = read_safetensors(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise damaged(weights, f"does not fit model.json: {' '.join(str(e).split())[:160]}") from None
    return model.eval(), meta
