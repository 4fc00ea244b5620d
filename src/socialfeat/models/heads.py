"""The trained image model: a backbone, dropout, and one linear head per target; plus what to fine-tune."""

from __future__ import annotations

import re

import torch
from torch import nn

from socialfeat.errors import UserError
from socialfeat.models.backbones import preprocess


def head_key(target: str) -> str:
    """Module-safe name of a target's head (``factor-clusters`` → ``factor_clusters``)."""
    return target.replace("-", "_")


class FeatureModel(nn.Module):
    """uint8 images → (pooled features, {target: head output}). Frozen parts stay in eval mode, so their
    BatchNorm statistics are the pretrained ones whatever ``train()`` is called with."""

    def __init__(self, backbone: nn.Module, heads: dict[str, int], dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = int(backbone.num_features)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({head_key(t): nn.Linear(self.num_features, dim) for t, dim in heads.items()})
        self.targets = list(heads)
        self.frozen: list[nn.Module] = []
        self.held = False  # the whole backbone temporarily frozen (linear-probe phase of LP-FT)
        self.frozen_batchnorm = False  # train.batchnorm: frozen — running statistics stay the start's
        self.block_stats = 0  # embed.block_stats: the embedding appends per-channel stats of the last N blocks

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = preprocess(images)
        if images.is_cuda:  # channels-last is what tensor cores want; on CPU it only costs a copy
            x = x.contiguous(memory_format=torch.channels_last)
        if self.block_stats:
            pooled, stats = self._with_block_stats(x)
        else:
            pooled, stats = self.backbone(x), None
        dropped = self.dropout(pooled)
        heads = {t: self.heads[head_key(t)](dropped) for t in self.targets}
        return (pooled if stats is None else torch.cat([pooled, stats], dim=1)), heads

    def _with_block_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features, and the per-channel mean and standard deviation over space of the last
        ``block_stats`` blocks' outputs: second-order texture and colour statistics the global average pool
        drops, cheap to read on the way (the heads still see the pooled features only)."""
        found = _block_container(self.backbone)
        if found is None:
            raise ValueError(f"{type(self.backbone).__name__} has no blocks to read statistics from")
        outputs: list[torch.Tensor] = []
        hooks = [b.register_forward_hook(lambda _m, _i, o: outputs.append(o)) for b in found[1][-self.block_stats :]]
        try:
            pooled = self.backbone(x)
        finally:
            for h in hooks:
                h.remove()
        stats = [torch.cat([o.float().mean(dim=(2, 3)), o.float().std(dim=(2, 3))], dim=1) for o in outputs]
        return pooled, torch.cat(stats, dim=1).to(pooled.dtype)

    def train(self, mode: bool = True) -> FeatureModel:
        super().train(mode)
        for module in [self.backbone] if self.held else self.frozen:
            module.eval()
        if self.frozen_batchnorm:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def hold_backbone(self, hold: bool) -> None:
        """Freeze the whole backbone (``True``) or give back what ``apply_finetune`` chose to train: training the
        heads first and fine-tuning after (LP-FT) keeps random heads from wrecking pretrained features."""
        if hold == self.held:
            return
        if hold:
            self._trainable = [p for p in self.backbone.parameters() if p.requires_grad]
            for p in self._trainable:
                p.requires_grad_(False)
        else:
            for p in self._trainable:
                p.requires_grad_(True)
        self.held = hold
        self.train(self.training)


def _block_container(backbone: nn.Module) -> tuple[str, list[nn.Module]] | None:
    """The backbone's sequence of blocks: timm models call it blocks, stages or layers (ResNets: layer1..4)."""
    for name in ("blocks", "stages", "layers"):
        seq = getattr(backbone, name, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq) > 0:
            return name, list(seq)
    layers = [getattr(backbone, f"layer{i}") for i in range(1, 5) if hasattr(backbone, f"layer{i}")]
    return ("layer", layers) if layers else None


def apply_finetune(model: FeatureModel, spec: str) -> dict[str, int]:
    """Freeze what ``spec`` leaves alone: ``all`` trains everything, ``head`` only the heads, ``last-N`` the last
    N blocks and everything after them. Returns trainable/total parameter counts."""
    backbone = model.backbone
    match = re.fullmatch(r"last-(\d+)", spec)
    if spec not in ("all", "head") and not match:
        raise UserError("train.finetune", f"expected all, head or last-N (e.g. last-2), got '{spec}'")
    if spec == "all":
        frozen: list[nn.Module] = []
    elif spec == "head":
        frozen = [backbone]
    else:
        found = _block_container(backbone)
        if found is None:
            raise UserError("train.finetune", f"{type(backbone).__name__} has no blocks to pick from; use all or head")
        name, blocks = found
        n = int(match.group(1)) if match else 0
        if not 1 <= n <= len(blocks):  # last-999 would silently train every block
            raise UserError(
                "train.finetune",
                f"{type(backbone).__name__} has {len(blocks)} blocks, got '{spec}'; expected all, head, or last-1 "
                f"to last-{len(blocks)}",
            )
        trainable_blocks = blocks[max(0, len(blocks) - n) :] if n else []
        after = False
        frozen = []
        for child_name, child in backbone.named_children():
            if child_name == name or (name == "layer" and child_name.startswith("layer")):
                after = True
                if name == "layer":
                    if child not in trainable_blocks:
                        frozen.append(child)
                    continue
                frozen.extend(b for b in blocks if all(b is not t for t in trainable_blocks))
            elif not after:
                frozen.append(child)
    for module in frozen:
        module.requires_grad_(False)
    model.frozen = frozen
    model.train(model.training)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}
