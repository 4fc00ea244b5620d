"""How much of the cold-start gap a feature could still close: the simulator's hidden attributes through evaluate's
own protocol.

The simulator draws every image from a few hidden attributes (palette, texture, composition, object) and every
user's taste from the same attributes. An image feature can at best recover those attributes. So the ridge from
their one-hot codes to the ALS factors, scored like any source by evaluate, is the ceiling of what an image
feature can reach on that platform. If learned features sit near it, the learning curve flattens because the
platform has no more to teach, not because the method stopped learning.

    python bench/ceiling.py /tmp/e2e-100k/run --labels /tmp/e2e-100k/platform/labels.csv
    python bench/ceiling.py RUN --labels LABELS --record   # into bench/RESULTS.md

Rows, all on evaluate's seeded user sample and λ grid (chosen on the valid cold items): the learned and ImageNet
pooled features (they must repeat evaluate's metrics.json), every attribute alone, all four side by side, and the
taste class: the cross product of the three attributes tastes depend on, which a linear map can fit exactly.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import hardware, record  # noqa: E402

ATTRIBUTES = ["palette", "texture", "composition", "object"]
TASTE = ["palette", "texture", "composition"]  # a user's affinity depends on these alone; views follow affinity³


def one_hot(labels: Path, item_ids: list, groups: list[tuple[str, ...]]) -> np.ndarray:
    """n_items × (classes of each group) one-hot, rows by the run's item_idx. A group of several columns is their
    cross product: one class per combination. An item without a label is all 0."""
    with open(labels, newline="") as fh:
        table = {r["item_id"]: r for r in csv.DictReader(fh)}
    blocks = []
    for group in groups:
        values = [tuple(table[str(i)][c] for c in group) if str(i) in table else None for i in item_ids]
        classes = sorted({v for v in values if v is not None})
        code = {c: k for k, c in enumerate(classes)}
        block = np.zeros((len(item_ids), len(classes)), np.float32)
        for row, v in enumerate(values):
            if v is not None:
                block[row, code[v]] = 1.0
        blocks.append(block)
    return np.hstack(blocks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--labels", type=Path, required=True, help="the simulator's labels.csv")
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()

    from socialfeat.config import load_config
    from socialfeat.measures.coldstart import aligned_features, coldstart_scored, load_coldstart, sampled

    config = load_config(a.run / "config.yaml")
    cfg = config.evaluate
    lambdas = sorted(float(x) for x in cfg.ridge_lambdas)
    data = sampled(load_coldstart(a.run), cfg.users, cfg.valid_users, config.seed)
    saved = json.loads((a.run / "eval" / "metrics.json").read_text())
    reported = {(r["source"], r["column"], r["mapping"]): r["coldstart"]["auc"] for r in saved["rows"]}
    rows: list[tuple[str, float, float | None, float | None]] = []
    for source in ("learned", "imagenet"):
        features, has = aligned_features(a.run, source, "features", data)
        t0 = time.perf_counter()
        found = coldstart_scored(features, has, "ridge", data, lambdas, cfg.k, influence=False)[0]
        rows.append(
            (f"{source} pooled features", found["auc"], found["lambda"], reported.get((source, "features", "ridge")))
        )
        print(f"{rows[-1][0]}: {found['auc']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        del features
    has = np.ones(data.n_items, dtype=bool)
    variants = [
        *((c, [(c,)]) for c in ATTRIBUTES),
        ("all four attributes", [(c,) for c in ATTRIBUTES]),
        ("taste class (palette × texture × composition)", [tuple(TASTE)]),
    ]
    for name, groups in variants:
        codes = one_hot(a.labels, data.item_ids, groups)
        found = coldstart_scored(codes, has, "ridge", data, lambdas, cfg.k, influence=False)[0]
        rows.append((f"hidden {name}, one-hot", found["auc"], found["lambda"], None))
        print(f"{rows[-1][0]}: {found['auc']:.4f}", flush=True)

    learned, imagenet, ceiling = rows[0][1], rows[1][1], max(r[1] for r in rows[2:])
    closed = (learned - imagenet) / (ceiling - imagenet) if ceiling > imagenet else float("nan")
    n_items = data.n_items
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {hardware()}.",
        "",
        f"Command: `python bench/ceiling.py {a.run} --labels {a.labels}`: {n_items:,} items, "
        f"{len(data.test):,} cold test items, {saved['sample']['text']}.",
        "",
        "| features | cold-start AUC | λ | evaluate's metrics.json |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {auc:.4f} | {lam:g} | {'' if rep is None else f'{rep:.4f}'} |" for name, auc, lam, rep in rows),
        "",
        f"Learned − ImageNet: {learned - imagenet:+.4f}; the best hidden row − ImageNet: {ceiling - imagenet:+.4f}.",
        f"Learned features close {100 * closed:.0f}% of the gap an image feature could close on this platform.",
    ]
    body = "\n".join(lines) + "\n"
    print(body)
    if a.record:
        record(f"evaluate: the hidden attributes' ceiling at {n_items:,} items (bench/ceiling.py)", body)


if __name__ == "__main__":
    main()
