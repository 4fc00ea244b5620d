"""``embed --images`` throughput on external images: the learned model (EfficientNet-Lite0 + a head) at the demo's
96 px and at 224 px, and the ImageNet baseline at 224 px — each with a cold image cache (decode + resize + embed)
and a warm one (embed only), in one process on whatever device torch picks.

    python bench/embed_images.py [--images 1000] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import record  # noqa: E402

from socialfeat.config import load_config  # noqa: E402
from socialfeat.data.simulate import simulate_collection  # noqa: E402
from socialfeat.embed_images import embed_images  # noqa: E402
from socialfeat.models.backbones import IMAGENET_BACKBONE, create_backbone  # noqa: E402
from socialfeat.models.heads import FeatureModel  # noqa: E402
from socialfeat.models.store import save_weights  # noqa: E402


def fake_run(folder: Path, size: int) -> Path:
    """A run folder with a 'trained' model: ImageNet Lite0 plus a 16-d factor head, recorded at ``size`` px."""
    run = folder / f"run-{size}"
    (run / "model").mkdir(parents=True)
    model = FeatureModel(create_backbone(IMAGENET_BACKBONE, "imagenet"), {"factors": 16})
    save_weights(run / "model" / "weights.safetensors", model)
    meta = {"backbone": IMAGENET_BACKBONE, "init": "imagenet", "heads": {"factors": 16}, "image_size": size}
    (run / "model" / "model.json").write_text(json.dumps(meta))
    return run


def measure(run: Path, table: Path, root: Path, source: str, size: int, out: Path) -> dict[str, float]:
    cfg = load_config(None, [f"train.image_size={size}"])
    shutil.rmtree(run / "cache", ignore_errors=True)
    timings = {}
    for kind in ("cold", "warm"):
        t0 = time.perf_counter()
        result = embed_images(cfg, run, table, out, root, source)
        timings[kind] = time.perf_counter() - t0
        timings[f"{kind}_embed_per_s"] = result.summary["images_per_s"]
    timings["n"] = result.summary["embedded"]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--source-size", type=int, default=256, help="side of the generated PNGs")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    device = f"CUDA ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        simulate_collection(folder / "images", args.images, args.source_size, seed=3)
        print(f"generated {args.images} images of {args.source_size} px in {time.perf_counter() - t0:.1f} s")
        table, root = folder / "images" / "labels.csv", folder / "images"
        cases = [("learned", 96), ("learned", 224), ("imagenet", 224)]
        runs = {size: fake_run(folder, size) for size in (96, 224)}
        rows = []
        for source, size in cases:
            m = measure(runs[size], table, root, source, size, folder / f"{source}-{size}.parquet")
            n = m["n"]
            rows.append(
                f"| {source} (Lite0{' + head' if source == 'learned' else ''}) | {size} px | {n / m['cold']:,.0f} "
                f"| {n / m['warm']:,.0f} | {m['cold'] / m['warm']:.2f}× | {m['warm_embed_per_s']:,.0f} |"
            )
            print(rows[-1], flush=True)
    body = (
        f"`python bench/embed_images.py`: `embed --images` on {args.images:,} external PNGs of {args.source_size} px "
        f"(a table of paths, as a user would give), device: {device}, batch 128, 0 loader workers. Cold: no image "
        "cache yet (decode, resize, cache, embed: the first call); warm: the cache reused (the second call). "
        "Images per second of the whole call; the last column is the model alone.\n\n"
        "| source | input | cold img/s | warm img/s | warm speed-up | model img/s |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n"
    )
    print(body)
    if not args.no_record:
        record(f"embed --images throughput ({device.split(' ')[0]})", body)


if __name__ == "__main__":
    main()
