"""MiniLM on CPU: sentence-transformers (PyTorch) against socialfeat's ONNX Runtime path, on real comment texts.

targets embeds every distinct comment once; at 100K simulated items that is 305,846 texts, most of the stage.
Both encoders run on the same texts in one process, alternating, so the ratio holds on a busy machine.

    python bench/text_encoder.py --comments RUN/dataset/comments.parquet [--n 6000] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import hardware, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comments", type=Path, required=True, help="a run's dataset/comments.parquet")
    ap.add_argument("--n", type=int, default=6000, help="distinct texts sampled (seeded)")
    ap.add_argument("--batch-size", type=int, default=256, help="targets.text_batch_size's default")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()

    import pyarrow.parquet as pq
    import torch

    import socialfeat.models.text as text

    texts = sorted(set(pq.read_table(a.comments, columns=["text"]).column("text").to_pylist()))
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(a.n, len(texts)), replace=False)]
    words = np.mean([len(t.split()) for t in sample])

    def backend(name: str) -> None:
        os.environ["SOCIALFEAT_TEXT_BACKEND"] = name
        text._build_onnx_encoder.cache_clear()

    t0 = time.perf_counter()
    backend("onnx")
    assert text._onnx_encoder() is not None, "the ONNX path is not available here"
    export = time.perf_counter() - t0
    rates: dict[str, list[float]] = {"torch": [], "onnx": []}
    out: dict[str, np.ndarray] = {}
    for _ in range(a.rounds):
        for name in ("torch", "onnx"):
            backend(name)
            text.encode_unit(sample[: a.batch_size], a.batch_size)  # warm: the export, first allocations
            t = time.perf_counter()
            out[name] = text.encode_unit(sample, a.batch_size)
            rates[name].append(len(sample) / (time.perf_counter() - t))
    cos = np.sum(out["torch"] * out["onnx"], axis=1)
    best = {k: max(v) for k, v in rates.items()}
    body = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {hardware()}; torch threads {torch.get_num_threads()}.",
            "",
            f"Command: `python bench/text_encoder.py --comments {a.comments} --n {a.n}`: {len(sample):,} distinct "
            f"comments of {len(texts):,}, {words:.1f} words on average, batches of {a.batch_size}, "
            f"best of {a.rounds} alternating rounds.",
            "",
            "| encoder | comments/s |",
            "|---|---:|",
            f"| sentence-transformers (PyTorch) | {best['torch']:.0f} |",
            f"| ONNX Runtime (socialfeat's CPU path) | {best['onnx']:.0f} |",
            "",
            f"- Ratio ONNX / PyTorch: {best['onnx'] / best['torch']:.2f}×. Every round: "
            + ", ".join(f"{o / p:.2f}" for o, p in zip(rates["onnx"], rates["torch"], strict=True))
            + ".",
            f"- Cosine of the two encoders' vectors: min {cos.min():.6f}, mean {cos.mean():.6f}.",
            f"- The export to ONNX, in memory, once per process: {export:.1f} s with the model load.",
        ]
    )
    print(body)
    if a.record:
        record("targets: the comment encoder on CPU (bench/text_encoder.py)", body + "\n")


if __name__ == "__main__":
    main()
