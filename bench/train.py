"""Training throughput: is the input pipeline ever the bottleneck? Recorded in bench/RESULTS.md.

In one process and one run: the model alone (forward + backward + step on uint8 batches already in memory)
against the whole training loop (image cache memmap → DataLoader workers → augmentation → the same model),
as a ratio (target ≥ 0.9), for the default backbone on CPU; then a 2-process torchrun (gloo) run on CPU to show
the distributed path. With a CUDA GPU it also measures ResNet-50 (bf16 autocast, channels-last, batch 256) and
the default backbone.

    python bench/train.py                 # CPU figures (about 10 minutes on 2 cores)
    python bench/train.py --gpu           # GPU figures as well
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import record  # noqa: E402

from socialfeat.config import SimulateConfig, load_config  # noqa: E402
from socialfeat.data.ingest import ingest  # noqa: E402
from socialfeat.data.simulate import simulate  # noqa: E402
from socialfeat.factorize.stage import factorize  # noqa: E402
from socialfeat.models.backbones import create_backbone  # noqa: E402
from socialfeat.models.heads import FeatureModel, apply_finetune  # noqa: E402
from socialfeat.models.losses import cosine_loss  # noqa: E402
from socialfeat.targets.stage import targets  # noqa: E402
from socialfeat.train import train  # noqa: E402

DATA = HERE / "_data" / "train"


def prepared_run(items: int, size: int) -> Path:
    """A simulated platform at ``size`` px, ingested, factorized and with targets (cached under bench/_data)."""
    run = DATA / f"run-{items}-{size}"
    if (run / "targets" / "summary.json").is_file():
        return run
    shutil.rmtree(run, ignore_errors=True)
    simulate(run / "platform", SimulateConfig(n_users=1500, n_items=items, image_size=size), seed=0)
    flags = {
        "ingest.interactions": ("bench", run / "platform" / "interactions.csv"),
        "ingest.items": ("bench", run / "platform" / "items.csv"),
    }
    cfg = load_config(None, ["factorize.factors=32", "factorize.evaluate=false", "targets.clusters=16"], flags)
    ingest(cfg, run / "dataset")
    factorize(cfg, run)
    targets(cfg, run)
    return run


def model_only(
    backbone: str, weights: str, finetune: str, size: int, batch: int, steps: int, device: str, amp: bool = False
) -> float:
    """Images/s of forward + backward + optimizer step on one uint8 batch held in memory."""
    dev = torch.device(device)
    model = FeatureModel(create_backbone(backbone, weights), {"factors": 32}, 0.1)
    apply_finetune(model, finetune)
    model.to(dev).train()
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=dev)
    target = torch.randn(batch, 32, device=dev)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            _, heads = model(images)
        loss = cosine_loss(heads["factors"], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: allocator, kernels, autotuning
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def end_to_end(
    run: Path, backbone: str, weights: str, finetune: str, size: int, batch: int, workers: int, epochs: int, device: str
) -> float:
    """Images/s of the last epoch of the real training loop (cache already built by an earlier epoch)."""
    overrides = [
        f"train.backbone={backbone}",
        f"train.weights={weights}",
        f"train.finetune={finetune}",
        f"train.image_size={size}",
        f"train.batch_size={batch}",
        f"train.workers={workers}",
        f"train.epochs={epochs}",
        "train.targets=[factors]",
        f"train.device={device}",
        "train.valid_fraction=0",
    ]
    result = train(load_config(None, overrides), run)
    return result.metrics[-1]["images_per_s"]


def cpu_section(items: int, size: int, batch: int) -> str:
    run = prepared_run(items, size)
    steps = max(3, items // batch)
    rows = []
    for backbone, weights, finetune in (
        ("tf_efficientnet_lite0", "imagenet", "last-2"),
        ("tf_efficientnet_lite0", "imagenet", "all"),
    ):
        for workers in (0, 2):
            m1 = model_only(backbone, weights, finetune, size, batch, steps, "cpu")
            e2e = end_to_end(run, backbone, weights, finetune, size, batch, workers, 2, "cpu")
            m2 = model_only(backbone, weights, finetune, size, batch, steps, "cpu")
            model = (m1 + m2) / 2
            rows.append(f"| {backbone} | {finetune} | {workers} | {model:.1f} | {e2e:.1f} | {e2e / model:.2f} |")
            print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| backbone | fine-tuned | workers | model only (img/s) | end to end (img/s) | ratio |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    ddp = torchrun_section(run, size, batch)
    return (
        f"Simulated platform, {items} items at {size}×{size} px, batch {batch}, CPU, one process; model-only "
        f"measured before and after each end-to-end run and averaged. Target ratio ≥ 0.9.\n\n{table}\n\n{ddp}\n"
    )


def torchrun_section(run: Path, size: int, batch: int) -> str:
    """Two CPU processes under torchrun (gloo) on the same run: it trains, and the throughput it reaches."""
    work = run.parent / f"{run.name}-ddp"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(run, work, ignore=shutil.ignore_patterns("model", "features", ".train"))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "socialfeat",
        "train",
        str(work),
        "--image-size",
        str(size),
        "--batch-size",
        str(batch),
        "--epochs",
        "2",
        "--workers",
        "0",
        "--set",
        "train.threads=1",
        "--set",
        "train.valid_fraction=0",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    meta = json.loads((work / "model" / "model.json").read_text())
    last = json.loads((work / "model" / "metrics.jsonl").read_text().splitlines()[-1])
    return (
        f"`torchrun --nproc_per_node 2` on CPU (gloo, one thread per rank, default backbone, last-2): "
        f"world {meta['world']}, {meta['steps']} steps, last epoch {last['images_per_s']:.1f} img/s, "
        f"{wall:.0f} s wall including start-up — the distributed path runs (compare the one-process rows "
        f"above: same machine, same cores)."
    )


def gpu_section() -> str:
    rows = []
    for backbone, weights, size, batch in (
        ("resnet50", "random", 224, 256),
        ("tf_efficientnet_lite0", "imagenet", 224, 256),
    ):
        rate = model_only(backbone, weights, "all", size, batch, 30, "cuda", amp=True)
        rows.append(f"| {backbone} | {batch} | bf16 + channels-last | {rate:,.0f} |")
    name = torch.cuda.get_device_name()
    return "\n".join(
        [
            f"{name}, model only, full fine-tuning:",
            "",
            "| backbone | batch | precision | img/s |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=480)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--gpu", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    record("Training throughput (CPU)", cpu_section(args.items, args.size, args.batch))
    if args.gpu and torch.cuda.is_available():
        record("Training throughput (GPU)", gpu_section())


if __name__ == "__main__":
    main()
