"""Commands of the model stages: train and embed (items of a run, or any table of images)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, err, is_main_rank, limits, out, shown
from socialfeat.config import load_config
from socialfeat.errors import UserError

commands = Commands()


@commands()
def train(
    run: Annotated[Path, typer.Argument(help="Run folder with targets/ (from targets); model/ is written here.")],
    backbone: Annotated[str | None, typer.Option(help="timm model name [tf_efficientnet_lite0].")] = None,
    weights: Annotated[
        str | None, typer.Option(help="imagenet, random, or a .safetensors/.pt file [imagenet].")
    ] = None,
    which: Annotated[
        str | None, typer.Option("--targets", help="Comma list of heads: factors,factor-clusters,engagement,tags.")
    ] = None,
    finetune: Annotated[str | None, typer.Option(help="all, head (frozen backbone) or last-N blocks [last-2].")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs [5].", **limits("train.epochs"))] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch size, split over ranks [64].", **limits("train.batch_size"))
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate of the heads [0.001].", **limits("train.lr"))
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Square input side in pixels [224].", **limits("train.image_size"))
    ] = None,
    regression_loss: Annotated[str | None, typer.Option(help="cosine or mse [cosine].")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="DataLoader worker processes [0 on CPU, up to 8 per GPU].", **limits("train.workers")),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [auto].")] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(help="Also checkpoint every N steps [0: per epoch].", **limits("train.checkpoint_every")),
    ] = None,
    strict_images: Annotated[
        bool | None, typer.Option("--strict-images", help="A bad image is an error instead of a skipped item.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in RUN/.train.")] = False,
    meta_class: Annotated[
        bool,
        typer.Option("--meta-class", help="Train the meta-class baseline (the tags head alone) into RUN/meta-class."),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed (init, order, augmentation).", **limits("seed"))] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a CNN on the warm items' images to predict their targets (runs under torchrun too)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from socialfeat.train import train as train_model
    from socialfeat.train import train_meta_class

    run_train = train_meta_class if meta_class else train_model

    flags = config_flags(
        seed=("--seed", seed),
        train__backbone=("--backbone", backbone),
        train__weights=("--weights", weights),
        train__targets=("--targets", [t.strip() for t in which.split(",") if t.strip()] if which else None),
        train__finetune=("--finetune", finetune),
        train__epochs=("--epochs", epochs),
        train__batch_size=("--batch-size", batch_size),
        train__lr=("--lr", lr),
        train__image_size=("--image-size", image_size),
        train__regression_loss=("--regression-loss", regression_loss),
        train__workers=("--workers", workers),
        train__device=("--device", device),
        train__checkpoint_every=("--checkpoint-every", checkpoint_every),
        train__strict_images=("--strict-images", strict_images),
    )
    cfg = load_config(config, set_ or [], flags)
    main_rank = is_main_rank()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    live = main_rank and err.is_terminal  # in logs (pipes, cluster jobs) one line per epoch instead of a bar
    with Progress(*columns, console=err, transient=True, disable=not live) as bar:
        tasks: dict[str, Any] = {}
        last: dict[str, str] = {"valid": ""}

        def progress(e: dict[str, Any]) -> None:
            kind = e["event"]
            if kind == "cache":
                if "cache" not in tasks:
                    tasks["cache"] = bar.add_task("caching images", total=e["total"], info="")
                bar.update(tasks["cache"], completed=e["done"])
            elif kind == "start":
                p = e["parameters"]
                sample = (
                    f", a sample of {e['per_epoch']:,} per epoch" if e.get("per_epoch", e["train"]) < e["train"] else ""
                )
                err.print(
                    f"training on {e['train']:,} items{sample} ({e['valid']:,} held out), {p['trainable']:,} of "
                    f"{p['total']:,} parameters, {e['world']} × {e['device']}",
                    highlight=False,
                )
                tasks["train"] = bar.add_task("training", total=e["total"], completed=e["step"], info="")
            elif kind == "step":
                info = f"epoch {e['epoch'] + 1}  loss {e['loss']:.4f}  {e['images_per_s']:.0f} img/s  {last['valid']}"
                bar.update(tasks["train"], completed=e["step"], info=info)
            elif kind == "select" and "train" in tasks:
                what = "the untrained start" if e["epoch"] < 0 else f"epoch {e['epoch'] + 1}"
                bar.update(tasks["train"], info=f"scoring {what} on {e['valid_items']:,} valid cold items")
            elif kind == "epoch":
                last["valid"] = "  ".join(f"{k[6:]} {v:.3f}" for k, v in e.items() if k.startswith("valid_"))
                if e["epoch"] < 0:
                    err.print(f"epoch 0 (the untrained start): {last['valid']}", highlight=False)
                elif main_rank and not live:
                    err.print(
                        f"epoch {e['epoch'] + 1}: loss {e['train_loss']:.4f}  {last['valid']}  "
                        f"{e['images_per_s']:.0f} img/s  {e['seconds']:.1f} s",
                        highlight=False,
                    )

        result = run_train(cfg, run, resume=resume, progress=progress)
    if not main_rank:
        return
    table = Table(
        title=f"training ({result.summary['train']:,} items, {result.summary['steps']:,} steps)", title_justify="left"
    )
    keys = [k for k in result.metrics[-1] if k.startswith(("train_", "valid_"))] if result.metrics else []
    for name in ["epoch", *(_metric_label(k) for k in keys), "img/s", "seconds"]:
        table.add_column(name, justify="right")
    for m in result.metrics:
        table.add_row(
            str(m["epoch"] + 1),
            *(f"{m[k]:.4f}" if k in m else "" for k in keys),
            f"{m['images_per_s']:.1f}" if "images_per_s" in m else "",
            f"{m.get('seconds', 0) + m.get('select_seconds', 0):.1f}",
        )
    out.print(table)
    s = result.summary
    if s.get("selection") == "valid-auc":
        if s["selected_epoch"] == 0:
            out.print(
                f"no epoch beat the untrained start on valid cold-start AUC ({s['valid_cold_auc_start']:.4f}): "
                "run/model is the starting network — no win from training",
                highlight=False,
            )
        else:
            out.print(
                f"kept epoch {s['selected_epoch']} of {len(result.metrics) - 1}: valid cold-start AUC "
                f"{s['valid_cold_auc']:.4f} (start {s['valid_cold_auc_start']:.4f}; ridge on {s['fit_items']:,} "
                f"warm items)",
                highlight=False,
            )
    if result.summary["without_image"]:
        out.print(f"{result.summary['without_image']:,} items with targets had no usable image", highlight=False)
    out.print(f"wrote {shown(result.out)}", highlight=False)


def _metric_label(key: str) -> str:
    """``valid_factor_clusters_top1`` → ``val clusters top1``: short enough for an 80-column table."""
    split, _, rest = key.partition("_")
    rest = rest.replace("factor_clusters", "clusters").replace("factors_cosine", "cosine").replace("_", " ")
    return f"{'val' if split == 'valid' else split} {rest}"


@commands()
def embed(
    run: Annotated[Path, typer.Argument(help="Run folder; features/<source>.parquet is written here.")],
    source: Annotated[
        str, typer.Option(help="learned (the trained model), imagenet, random or meta-class.")
    ] = "learned",
    batch_size: Annotated[
        int | None, typer.Option(help="Images per batch [128].", **limits("embed.batch_size"))
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="DataLoader worker processes [0 on CPU, up to 8 per GPU].", **limits("embed.workers")),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [auto].")] = None,
    images: Annotated[
        Path | None, typer.Option(help="Embed the images of this table (CSV/TSV/Parquet/JSONL) instead of the run's.")
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="Folder the table's image paths are relative to [the table's folder].")
    ] = None,
    image_column: Annotated[str, typer.Option(help="Image path column of the --images table.")] = "image",
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Output .parquet for --images.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Embed every item (cold ones too) with the learned model or a baseline — or, with --images, any table of
    images (runs under torchrun too)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from socialfeat.embed import embed as run_embed
    from socialfeat.embed_images import embed_images

    if (images is None) != (out_file is None):
        raise UserError("--out" if out_file is None else "--images", "--images and --out go together")
    if image_root is not None and images is None:
        raise UserError("--image-root", "only applies with --images TABLE --out FILE.parquet")

    flags = config_flags(
        embed__batch_size=("--batch-size", batch_size),
        embed__workers=("--workers", workers),
        train__device=("--device", device),
    )
    cfg = load_config(config, set_ or [], flags)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not (is_main_rank() and err.is_terminal)) as bar:
        task = bar.add_task(f"embedding ({shown(source)})", total=None, rate="")

        def progress(done: int, total: int, rate: float) -> None:
            bar.update(task, completed=done, total=total, rate=f"{rate:.0f} img/s")

        def caching(done: int, total: int) -> None:
            bar.update(task, description="caching images", completed=done, total=total)
            if done == total:
                bar.update(task, description=f"embedding ({shown(source)})", completed=0, total=None)

        if images is not None and out_file is not None:
            found = embed_images(cfg, run, images, out_file, image_root, source, image_column, progress, caching)
        else:
            result = run_embed(cfg, run, source, progress=progress)
    if images is not None:
        _print_embedded_images(found.out, found.summary)
        return
    s = result.summary
    missing = f"; {s['without_image']:,} items without a usable image" if s["without_image"] else ""
    out.print(
        f"wrote {shown(result.out)}: {s['items']:,} items × {s['dimension']:,} ({shown(s['model'])}, {s['init']}), "
        f"{s['images_per_s']:.0f} img/s on {s['runtime']}{missing}",
        highlight=False,
    )


def _print_embedded_images(path: Path, s: dict[str, Any]) -> None:
    """One line on what was written, and which images were skipped (the first few by name)."""
    if not is_main_rank():
        return
    out.print(
        f"wrote {shown(path)}: {s['embedded']:,} of {s['rows']:,} images × {s['dimension']:,} "
        f"({shown(s['model'])}, {s['init']}, "
        f"{s['image_size']} px), {s['images_per_s']:.0f} img/s",
        highlight=False,
        soft_wrap=True,
    )
    p = s["problems"]
    if p["total"]:
        reasons = ", ".join(f"{n:,} {r}" for r, n in p["counts"].items())
        names = ", ".join(shown(e["image"]) for e in p["examples"][:3])
        more = " …" if p["total"] > 3 else ""
        out.print(
            f"skipped {p['total']:,} images ({shown(reasons)}): {names}{more}; all listed in {shown(s['sidecar'])}",
            highlight=False,
            soft_wrap=True,
        )
