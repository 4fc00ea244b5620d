"""The fine-tuning recipe on real behaviour, variant by variant: MovieLens-1M posters → ALS factors.

Every variant shares one base run (ingest, factorize, targets, the 224-px image cache and the ImageNet features),
trains `configs/movielens.yaml` with its own `--set` overrides, embeds, and is scored exactly as `socialfeat
evaluate` scores it: ridge from pooled features to the ALS factors, fit on the warm posters, λ chosen on the valid
cold posters, mean per-user AUC on the test cold posters — learned and ImageNet side by side, same items. What the
model forgot is measured with a linear probe on ../shared/data/cifar10-sample (learned vs ImageNet, same probe).

    python bench/quality_movielens.py                       # every variant (about 10 min each on 2 CPU cores)
    python bench/quality_movielens.py --variants distill    # one row; rows accumulate in --rows
    python bench/quality_movielens.py --record              # the table from --rows into RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _results import record  # noqa: E402

from socialfeat.config import Config, TransferSet, dump_config, load_config  # noqa: E402

CONFIG = ROOT / "configs" / "movielens.yaml"
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-sample"
SHARED_PARTS = ("dataset", "factors", "targets", "cache")
# the probe's settings, the same for every source: 3-fold accuracy, C by 3-fold inner CV; few-shot at 10 per class
PROBE = ["transfer.folds=3", "transfer.inner_folds=3", "transfer.few_shot=[10]", "transfer.draws=3"]

SEL = ["train.select=valid-auc"]
BN = [*SEL, "train.batchnorm=frozen"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "last-epoch": ("the recipe before: factors + clusters, keep the last epoch", ["train.select=last"]),
    "select": ("+ selection by valid cold AUC", SEL),
    "factors-only": ("selection, factors head only (no cluster head)", [*SEL, "train.targets=[factors]"]),
    "bn-frozen": ("selection + frozen BatchNorm statistics", BN),
    "distill": ("+ feature distillation λ=30", [*BN, "train.distill=30"]),
    "l2sp": ("+ L2-SP 0.01", [*BN, "train.l2sp=0.01"]),
    "rank": ("+ listwise KL ranking loss", [*BN, "train.rank_loss=kl"]),
    "tags-aux": (
        "+ genre head (meta-class target) beside the others",
        [*BN, "train.targets=[factors,factor-clusters,tags]"],
    ),
    "meta-class": ("meta-class baseline: genre head alone", [*BN, "train.targets=[tags]"]),
    "low-lr": ("backbone lr 1e-5 instead of 1e-4 (BN frozen)", [*BN, "train.backbone_lr_scale=0.01"]),
    "low-lr-distill": (
        "backbone lr 1e-5 + distillation λ=30",
        [*BN, "train.backbone_lr_scale=0.01", "train.distill=30"],
    ),
    "low-lr-tags": (
        "backbone lr 1e-5 + genre head beside factors and clusters",
        [*BN, "train.backbone_lr_scale=0.01", "train.targets=[factors,factor-clusters,tags]"],
    ),
    "low-lr-rank": (
        "backbone lr 1e-5 + listwise KL ranking loss",
        [*BN, "train.backbone_lr_scale=0.01", "train.rank_loss=kl"],
    ),
    "low-lr-meta-class": (
        "meta-class baseline at backbone lr 1e-5: genre head alone",
        [*BN, "train.backbone_lr_scale=0.01", "train.targets=[tags]"],
    ),
    "ridge-head": ("factors head starts as the ridge map (LP-FT in closed form)", [*BN, "train.head_init=ridge"]),
    "low-lr-ridge-head": (
        "backbone lr 1e-5 + ridge-initialised factors head",
        [*BN, "train.backbone_lr_scale=0.01", "train.head_init=ridge"],
    ),
    "l2sp-strong": ("backbone lr 1e-4 held near the start by L2-SP 1.0", [*BN, "train.l2sp=1.0"]),
    "low-lr-l2sp": ("backbone lr 1e-5 + L2-SP 0.1", [*BN, "train.backbone_lr_scale=0.01", "train.l2sp=0.1"]),
    "low-lr-combined": (
        "backbone lr 1e-5 + genre head + ridge-initialised head + L2-SP 0.1",
        [
            *BN,
            "train.backbone_lr_scale=0.01",
            "train.targets=[factors,factor-clusters,tags]",
            "train.head_init=ridge",
            "train.l2sp=0.1",
        ],
    ),
    "combined": (
        "factors + genres, distillation, L2-SP, ranking",
        [*BN, "train.targets=[factors,tags]", "train.distill=30", "train.l2sp=0.01", "train.rank_loss=kl"],
    ),
}

# embedding-only variants: a trained variant's model, embedded differently — ImageNet alike, so both sides compare
EMBED_VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "low-lr-l2sp-block-stats": (
        "low-lr-l2sp's model; both sources embed pooled + mean/std of the last 2 blocks",
        "low-lr-l2sp",
        ["embed.block_stats=2"],
    ),
}
IMAGENET_LABELS = {"embed.block_stats=2": "ImageNet + mean/std of the last 2 blocks (frozen)"}


def config_for(overrides: list[str]) -> Config:
    """configs/movielens.yaml with the probe's settings and a variant's overrides (paths from the repo root)."""
    return load_config(CONFIG, [*PROBE, *overrides])


def base_run(base: Path) -> Path:
    """The shared stages, made once: ingest, factorize, targets, image cache, ImageNet features and probe."""
    from socialfeat.data.ingest import ingest
    from socialfeat.embed import embed
    from socialfeat.factorize.stage import factorize
    from socialfeat.runtime import setup_distributed, shared_image_cache
    from socialfeat.targets.stage import targets

    cfg = config_for([])
    if not (base / "dataset" / "items.parquet").is_file():
        ingest(cfg, base / "dataset")
    if not (base / "factors" / "item_factors.parquet").is_file():
        factorize(cfg, base)
    if not (base / "targets" / "summary.json").is_file():
        targets(cfg, base)
    shared_image_cache(setup_distributed("cpu"), base, cfg.train, cfg.train.image_size)
    if not (base / "features" / "imagenet.parquet").is_file():
        embed(cfg, base, "imagenet")
    return base


def probe(cfg: Config, run: Path, source: str) -> dict[str, float]:
    """cifar10-sample linear probe of one source's pooled features: k-fold accuracy and the few-shot point."""
    from socialfeat.evaluate.transfer_stage import transfer

    cache = run / "eval" / f"cifar-{source}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    s = TransferSet(name=f"cifar10-{source}", labels=CIFAR / "labels.csv", image_root=CIFAR)
    result = transfer(cfg, run, sets=[s], sources=[source]).results[0]
    row = next(r for r in result["rows"] if r["column"] == "features")
    out = {"kfold": row["kfold"]["mean"], "few_shot_10": row["few_shot"]["10"]["mean"]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def variant(name: str, base: Path, work: Path) -> dict[str, Any]:
    """Train, embed and evaluate one variant in ``work/name`` over the base run's shared stages."""
    from socialfeat.embed import embed
    from socialfeat.train import TrainResult, train

    what, overrides = VARIANTS[name]
    cfg = config_for(overrides)
    run = work / name
    model = run / "model"
    if (model / "config.yaml").is_file() and same_config(model / "config.yaml", cfg):
        # a model trained with exactly these settings is kept (a crash later on costs no retraining)
        meta = json.loads((model / "model.json").read_text())
        history = [json.loads(x) for x in (model / "metrics.jsonl").read_text().splitlines() if x.strip()]
        result = TrainResult(model, history, meta)
        minutes = meta.get("train_seconds", float("nan")) / 60
    else:
        shutil.rmtree(run, ignore_errors=True)
        (run / "features").mkdir(parents=True)
        for part in SHARED_PARTS:
            (run / part).symlink_to((base / part).resolve(), target_is_directory=True)
        for f in ("imagenet.parquet", "imagenet.json"):
            (run / "features" / f).symlink_to((base / "features" / f).resolve())
        t0 = time.perf_counter()
        result = train(cfg, run)
        minutes = (time.perf_counter() - t0) / 60
    if not (run / "features" / "learned.parquet").is_file():
        embed(cfg, run, "learned")
    epochs = [h for h in result.metrics if h["epoch"] >= 0]
    return {
        "variant": name,
        "what": what,
        "overrides": overrides,
        **scores(cfg, run, base),
        "selected_epoch": result.summary["selected_epoch"],
        "epochs": len(epochs),
        "select_valid_auc_by_epoch": [h.get("valid_cold_auc") for h in result.metrics],
        "train_minutes": minutes,
        "command": f"python bench/quality_movielens.py --variants {name}",
    }


def scores(cfg: Config, run: Path, imagenet_run: Path) -> dict[str, Any]:
    """``evaluate``'s learned and ImageNet rows and the cifar10-sample probe of both, on the same items."""
    from socialfeat.evaluate.stage import evaluate

    metrics = evaluate(cfg, run, sources=["learned", "imagenet"]).metrics
    rows = {(r["source"], r["column"], r["mapping"]): r["coldstart"] for r in metrics["rows"]}
    learned, imagenet = rows[("learned", "features", "ridge")], rows[("imagenet", "features", "ridge")]
    return {
        "valid_auc": learned["valid_auc"],
        "test_auc": learned["auc"],
        "imagenet_valid_auc": imagenet["valid_auc"],
        "imagenet_test_auc": imagenet["auc"],
        "cifar": probe(cfg, run, "learned"),
        "imagenet_cifar": probe(cfg, imagenet_run, "imagenet"),
    }


def same_config(path: Path, cfg: Config) -> bool:
    """The model at ``path`` was trained with ``cfg``: the same text, or the same settings once keys added to the
    package since then take their defaults."""
    if path.read_text() == dump_config(cfg):
        return True
    try:
        return load_config(path).model_dump() == cfg.model_dump()
    except Exception:  # an old config the package no longer reads: retrain
        return False


def embed_variant(name: str, base: Path, work: Path) -> dict[str, Any]:
    """A trained variant's model (trained first if need be) embedded with other settings, ImageNet too."""
    from socialfeat.embed import embed

    what, donor, extra = EMBED_VARIANTS[name]
    trained = variant(donor, base, work)
    cfg = config_for([*VARIANTS[donor][1], *extra])
    run = work / name
    shutil.rmtree(run, ignore_errors=True)
    (run / "features").mkdir(parents=True)
    for part in SHARED_PARTS:
        (run / part).symlink_to((base / part).resolve(), target_is_directory=True)
    (run / "model").symlink_to((work / donor / "model").resolve(), target_is_directory=True)
    for source in ("learned", "imagenet"):
        embed(cfg, run, source)
    keep = ("selected_epoch", "epochs", "select_valid_auc_by_epoch", "train_minutes")
    return {
        "variant": name,
        "what": what,
        "overrides": [*VARIANTS[donor][1], *extra],
        **scores(cfg, run, run),
        **{k: trained[k] for k in keep},
        "imagenet_label": " ".join(IMAGENET_LABELS.get(x, x) for x in extra),
        "command": f"python bench/quality_movielens.py --variants {name}",
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| variant | valid AUC | test AUC | Δ test vs ImageNet | epoch kept | cifar10-sample 3-fold | Δ vs ImageNet "
        "| train min |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r['variant']}: {r['what']} | {r['valid_auc']:.4f} | {r['test_auc']:.4f} | "
            f"{r['test_auc'] - r['imagenet_test_auc']:+.4f} | {r['selected_epoch']} of {r['epochs']} | "
            f"{r['cifar']['kfold']:.3f} | {r['cifar']['kfold'] - r['imagenet_cifar']['kfold']:+.3f} | "
            f"{r['train_minutes']:.1f} |"
        )
    references = {r.get("imagenet_label") or "ImageNet (frozen, the start)": r for r in reversed(rows)}
    for label, ref in references.items():
        lines.append(
            f"| {label} | {ref['imagenet_valid_auc']:.4f} | {ref['imagenet_test_auc']:.4f} | "
            f"— | — | {ref['imagenet_cifar']['kfold']:.3f} | — | — |"
        )
    return head + "\n".join(lines) + "\n"


def by_epoch(rows: list[dict[str, Any]]) -> str:
    """The selection score of every epoch, per variant, as a table: where training helped, stalled or hurt."""
    scored = [(r["variant"], v) for r in rows if (v := r.get("select_valid_auc_by_epoch")) and None not in v]
    if not scored:
        return ""
    epochs = max(len(v) for _, v in scored)
    lines = [
        "",
        "Selection score by epoch: valid cold AUC, ridge on 1,000 warm items; epoch 0 is the untrained start.",
        "",
        "| variant | " + " | ".join(str(e) for e in range(epochs)) + " |",
        "|---|" + "---:|" * epochs,
    ]
    for name, v in scored:
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in v) + " |" * (1 + epochs - len(v)))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=ROOT / "runs" / "quality-base")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "quality")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma list of: {', '.join([*VARIANTS, *EMBED_VARIANTS])}"
    )
    ap.add_argument("--rows", type=Path, default=HERE / "rows" / "quality_movielens.jsonl", help="kept in git")
    ap.add_argument("--record", action="store_true", help="write the table of --rows into RESULTS.md and stop")
    args = ap.parse_args()
    os.chdir(ROOT)  # the config's data paths are relative to the repository root
    if args.record:
        rows = [json.loads(x) for x in args.rows.read_text().splitlines() if x.strip()]
        latest = {r["variant"]: r for r in rows}
        ordered = [latest[v] for v in [*VARIANTS, *EMBED_VARIANTS] if v in latest]
        body = (
            "MovieLens-1M posters, `configs/movielens.yaml` (Lite0 from ImageNet, last 2 blocks, 5 epochs, 224 px, "
            "audience loss on 64 ALS factors) with each row's overrides; 1,785 warm posters, cold valid 297 and "
            "test 888. AUC: `evaluate`'s protocol on the learned pooled features; cifar10-sample: 3-fold linear "
            "probe of the pooled features on 2,000 object photos. Each row: its `python bench/quality_movielens.py "
            "--variants NAME`; all rows share one base run.\n\n" + table(ordered) + by_epoch(ordered)
        )
        record("fine-tuning recipe on MovieLens (bench/quality_movielens.py)", body)
        return
    known = [*VARIANTS, *EMBED_VARIANTS]
    unknown = [v for v in args.variants.split(",") if v not in known]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    base = base_run(args.base)
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    for name in args.variants.split(","):
        row = embed_variant(name, base, args.work) if name in EMBED_VARIANTS else variant(name, base, args.work)
        with args.rows.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(table([row]), flush=True)


if __name__ == "__main__":
    main()
