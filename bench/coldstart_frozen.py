"""What frozen ImageNet features can do for cold-start audience prediction on MovieLens, to put the learned
features' number in context: the same protocol as ``socialfeat evaluate`` (ridge to the run's ALS factors fit on
the warm movies, λ chosen on the valid movies, mean per-user AUC on the test movies) applied to feature variants
that ``embed`` does not produce — several layers' channel means and standard deviations, the whole poster instead
of the centre crop — and to posters → predicted genres → factors.

    socialfeat run configs/movielens.yaml            # first: the run with factors/ and dataset/
    python bench/coldstart_frozen.py --run runs/movielens
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import record  # noqa: E402

from socialfeat.data.images import load_image  # noqa: E402
from socialfeat.measures.coldstart import coldstart_row, load_coldstart  # noqa: E402
from socialfeat.models.backbones import IMAGENET_BACKBONE, create_backbone, preprocess  # noqa: E402

LAMBDAS = [10.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5]
LAYERS = (3, 4, 5)  # EfficientNet-Lite0 blocks whose channel statistics are kept (plus the pooled output)


def whole_poster(path: Path, size: int) -> np.ndarray:
    """The whole image squashed to a square: the centre crop cuts a poster's title and credits."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


@torch.no_grad()
def frozen_features(paths: list[Path], crop: bool, size: int = 224) -> dict[str, np.ndarray]:
    """Pooled features and, per block in LAYERS, channel means and standard deviations of its output."""
    model = create_backbone(IMAGENET_BACKBONE, "imagenet").eval()
    seen: dict[str, torch.Tensor] = {}
    for i in LAYERS:
        model.blocks[i].register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(f"b{i}", out))
    parts: dict[str, list[np.ndarray]] = {"pooled": [], **{f"b{i}": [] for i in LAYERS}}
    for start in range(0, len(paths), 64):
        batch = [load_image(p, size) if crop else whole_poster(p, size) for p in paths[start : start + 64]]
        parts["pooled"].append(model(preprocess(torch.from_numpy(np.stack(batch)))).numpy())
        for i in LAYERS:
            out = seen[f"b{i}"]
            parts[f"b{i}"].append(torch.cat([out.mean((2, 3)), out.std((2, 3))], 1).numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def auc(features: np.ndarray, data, k: int = 20) -> float:
    row = coldstart_row(features, np.ones(len(features), bool), "ridge", data, LAMBDAS, k)
    return row["auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/movielens"))
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_coldstart(args.run)
    items = pq.read_table(args.run / "dataset" / "items.parquet", columns=["item_id", "image", "tags"])
    root = Path(json.loads((args.run / "dataset" / "stats.json").read_text())["missing_images"]["image_root"])
    by_id = dict(zip(items.column("item_id").to_pylist(), range(len(items)), strict=True))
    order = [by_id[i] for i in data.item_ids]  # rows in item_idx order, as the protocol expects
    paths = [root / items.column("image")[r].as_py() for r in order]
    rows: list[tuple[str, int, float]] = []
    t0 = time.perf_counter()
    for crop in (True, False):
        feats = frozen_features(paths, crop)
        name = "centre crop" if crop else "whole poster"
        rows.append((f"{name}: pooled", feats["pooled"].shape[1], auc(feats["pooled"], data)))
        for i in LAYERS:
            rows.append((f"{name}: block {i} mean+std", feats[f"b{i}"].shape[1], auc(feats[f"b{i}"], data)))
        multi = np.concatenate([feats["pooled"], *(feats[f"b{i}"] for i in LAYERS)], 1)
        rows.append((f"{name}: pooled + blocks {', '.join(map(str, LAYERS))}", multi.shape[1], auc(multi, data)))
        if crop:
            genres = predicted_genres(multi, [items.column("tags")[r].as_py() for r in order], data)
            rows.append(("centre crop: predicted genres (logistic, out-of-fold on warm movies)", genres.shape[1],
                         auc(genres, data)))  # fmt: skip
    seconds = time.perf_counter() - t0
    lines = [
        f"`python bench/coldstart_frozen.py --run {args.run}`: frozen ImageNet EfficientNet-Lite0 (packaged weights), "
        "224 px; ridge to the run's ALS factors, λ on the valid movies, mean per-user AUC on the test movies "
        f"(the `evaluate` protocol); {seconds:.0f} s in all.",
        "",
        "| features | dim | cold-start AUC |",
        "|---|---:|---:|",
        *(f"| {n} | {d:,} | {a:.3f} |" for n, d, a in rows),
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record("Cold start from frozen ImageNet features (MovieLens)", body)


def predicted_genres(features: np.ndarray, tags: list[str | None], data) -> np.ndarray:
    """Per genre, a logistic regression from features to the genre (out-of-fold for warm movies, fit on all
    warm movies for cold ones): does routing the image through genres help?"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    names = sorted({g for t in tags for g in (t or "").split("|") if g})
    labels = np.array([[g in (t or "").split("|") for g in names] for t in tags], dtype=np.int64)
    mean, std = features[data.train].mean(0), features[data.train].std(0) + 1e-6
    z = (features - mean) / std
    out = np.zeros((len(z), len(names)), np.float32)
    cold = np.setdiff1d(np.arange(len(z)), data.train)
    for j in range(len(names)):
        y = labels[data.train, j]
        if y.sum() < 5:
            continue
        clf = LogisticRegression(C=0.002, max_iter=300)
        out[data.train, j] = cross_val_predict(clf, z[data.train], y, cv=5, method="predict_proba")[:, 1]
        out[cold, j] = clf.fit(z[data.train], y).predict_proba(z[cold])[:, 1]
    return out


if __name__ == "__main__":
    main()
