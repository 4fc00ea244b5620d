"""The ``socialfeat`` command line: each subcommand parses its flags, then calls one library function."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from socialfeat import __version__
from socialfeat.config import Config, load_config
from socialfeat.errors import UserError

app = typer.Typer(
    name="socialfeat",
    help="Learn image features from how people engage with images: views, likes, comments, shares.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (defaults < file < flags < --set).")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override any config key: --set filter.min_user_interactions=10")
]


class _WarningHandler(logging.Handler):
    """Warnings and info from the library as short lines on stderr, not log records."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"{record.levelname.lower()}: {record.getMessage()}", markup=False, highlight=False)


def _version(value: bool) -> None:
    if value:
        out.print(f"socialfeat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show informational messages.")] = False,
) -> None:
    """socialfeat: collaborative feature learning and VisE-style pseudo labels from engagement logs."""
    root = logging.getLogger("socialfeat")
    root.handlers[:] = [_WarningHandler()]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _flags(**pairs: tuple[str, str, Any]) -> dict[str, tuple[str, Any]]:
    """Config overrides from the flags a user actually gave: key → (flag, value)."""
    return {
        key: (flag, value)
        for key, (flag, value) in ((k.replace("__", "."), v) for k, v in pairs.items())
        if value is not None
    }


def _event_weights(items: list[str] | None) -> dict[str, tuple[str, Any]]:
    result: dict[str, tuple[str, Any]] = {}
    for item in items or []:
        kind, sep, raw = item.partition("=")
        try:
            weight = float(raw)
        except ValueError:
            weight = None
        if not sep or not kind or weight is None or weight < 0:
            raise UserError(f"--event-weight {item}", "expected KIND=WEIGHT with a number ≥ 0, e.g. like=4")
        result[f"ingest.event_weights.{kind}"] = (f"--event-weight {item}", weight)
    return result


@app.command()
def ingest(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: a run's dataset/.")],
    interactions: Annotated[
        Path | None, typer.Option(help="Interaction log: user, item, [event, value, timestamp].")
    ] = None,
    items: Annotated[Path | None, typer.Option(help="Items table: item id, image path, [title, tags, text].")] = None,
    comments: Annotated[Path | None, typer.Option(help="Comments table: item id, user id, text, [timestamp].")] = None,
    image_root: Annotated[
        Path | None,
        typer.Option(help="Folder the items' image paths are relative to (default: the items file's folder)."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv, tsv, parquet or jsonl for every input (default: by extension)."),
    ] = None,
    user_col: Annotated[str | None, typer.Option(help="User id column [user_id].")] = None,
    item_col: Annotated[str | None, typer.Option(help="Item id column [item_id].")] = None,
    event_col: Annotated[str | None, typer.Option(help="Event kind column [event, if present].")] = None,
    value_col: Annotated[str | None, typer.Option(help="Count/weight column [value, if present].")] = None,
    time_col: Annotated[str | None, typer.Option(help="Timestamp column [timestamp, if present].")] = None,
    items_id_col: Annotated[
        str | None, typer.Option(help="Item id column of the items table [same as --item-col].")
    ] = None,
    image_col: Annotated[str | None, typer.Option(help="Image path column of the items table [image].")] = None,
    title_col: Annotated[str | None, typer.Option(help="Title column of the items table [title].")] = None,
    tags_col: Annotated[str | None, typer.Option(help="Tags column of the items table [tags], e.g. genres.")] = None,
    text_col: Annotated[str | None, typer.Option(help="Description column of the items table [text].")] = None,
    default_event: Annotated[
        str | None, typer.Option(help="Event kind of every row when there is no event column [interaction].")
    ] = None,
    event_weight: Annotated[
        list[str] | None, typer.Option(help="Weight of one event of a kind: --event-weight like=4 (repeatable).")
    ] = None,
    strict: Annotated[
        bool | None, typer.Option("--strict", help="A missing image is an error instead of a dropped item.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Validate, popularity-filter and store an interaction log (plus items and comments) as Parquet."""
    from socialfeat.data.ingest import ingest as run_ingest

    flags = _flags(
        ingest__interactions=("--interactions", interactions),
        ingest__items=("--items", items),
        ingest__comments=("--comments", comments),
        ingest__image_root=("--image-root", image_root),
        ingest__format=("--format", fmt),
        ingest__columns__user=("--user-col", user_col),
        ingest__columns__item=("--item-col", item_col),
        ingest__columns__event=("--event-col", event_col),
        ingest__columns__value=("--value-col", value_col),
        ingest__columns__time=("--time-col", time_col),
        ingest__item_columns__id=("--items-id-col", items_id_col),
        ingest__item_columns__image=("--image-col", image_col),
        ingest__item_columns__title=("--title-col", title_col),
        ingest__item_columns__tags=("--tags-col", tags_col),
        ingest__item_columns__text=("--text-col", text_col),
        ingest__default_event=("--default-event", default_event),
        ingest__strict=("--strict", strict),
    )
    flags.update(_event_weights(event_weight))
    cfg = load_config(config, set_ or [], flags)
    started = time.perf_counter()
    with err.status("ingesting…") as status:
        result = run_ingest(cfg, out_dir, step=lambda msg: status.update(f"{msg}…"))
    out.print(stats_table(result.stats))
    _print_drops(result.stats)
    out.print(f"wrote {out_dir} in {time.perf_counter() - started:.1f} s", highlight=False)


def stats_table(stats: dict[str, Any]) -> Table:
    """The dataset table of the seed paper: users, items, interactions per event, density — before and after."""
    before, after = stats["before"], stats["after"]
    table = Table(title="dataset", title_justify="left")
    table.add_column("")
    table.add_column("before filtering", justify="right")
    table.add_column("after filtering", justify="right")
    table.add_column("kept", justify="right")

    def row(name: str, b: float, a: float) -> None:
        table.add_row(name, f"{b:,}", f"{a:,}", f"{a / b:.1%}" if b else "–")

    row("users", before["users"], after["users"])
    row("items", before["items"], after["items"])
    row("interactions", before["interactions"], after["interactions"])
    for event, n in before["events"].items():
        row(f"  {event}", n, after["events"].get(event, 0))
    row("user–item pairs", before["pairs"], after["pairs"])
    table.add_row("density", f"{before['density']:.3%}", f"{after['density']:.3%}", "")
    return table


def _print_drops(stats: dict[str, Any]) -> None:
    d = stats["dropped"]
    parts = [
        (d.get("items_missing_image", 0), "items without an image file"),
        (d.get("items_not_in_items_file", 0), "items missing from the items table"),
        (d.get("top_users", 0), "most active users"),
        (d.get("top_items", 0), "most popular items"),
        (d.get("low_users", 0), f"users with < {stats['filter']['min_user_interactions']} items"),
        (d.get("low_items", 0), f"items with < {stats['filter']['min_item_interactions']} users"),
    ]
    shown = [f"{n:,} {what}" for n, what in parts if n]
    if shown:
        out.print(f"dropped: {'; '.join(shown)} ({stats['filter']['rounds']} filter rounds)", highlight=False)


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the demo platform.")],
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed gives the same data.")] = None,
    users: Annotated[int | None, typer.Option("--users", help="Number of users [2000].")] = None,
    n_items: Annotated[int | None, typer.Option("--items", help="Number of items (images) [3000].")] = None,
    image_size: Annotated[int | None, typer.Option(help="Image side in pixels [96].")] = None,
    views_per_user: Annotated[float | None, typer.Option(help="Mean views per user [60].")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate the embedded demo platform: images with hidden attributes and a log from hidden tastes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from socialfeat.data.simulate import simulate as run_simulate

    flags = _flags(
        seed=("--seed", seed),
        simulate__n_users=("--users", users),
        simulate__n_items=("--items", n_items),
        simulate__image_size=("--image-size", image_size),
        simulate__views_per_user=("--views-per-user", views_per_user),
    )
    cfg: Config = load_config(config, set_ or [], flags)
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        summary = run_simulate(out_dir, cfg.simulate, seed=cfg.seed, progress=progress)
    table = Table(title=f"simulated platform (seed {cfg.seed})", title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    for key, value in _flat_counts(summary):
        table.add_row(key, f"{value:,}")
    out.print(table)
    out.print(f"wrote {out_dir} in {time.perf_counter() - started:.1f} s", highlight=False)
    out.print(
        f"next: socialfeat ingest --interactions {out_dir}/interactions.csv --items {out_dir}/items.csv "
        f"--comments {out_dir}/comments.csv --out runs/demo/dataset",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def factorize(
    run: Annotated[Path, typer.Argument(help="Run folder with dataset/ (from ingest); factors/ is written here.")],
    grid: Annotated[list[str] | None, typer.Argument(help="More --sweep terms, e.g. alpha=1,10 reg=0.01,0.1.")] = None,
    backend: Annotated[str | None, typer.Option(help="local (implicit ALS) or spark (Spark MLlib ALS).")] = None,
    factors: Annotated[int | None, typer.Option(help="Latent factors [64].")] = None,
    iterations: Annotated[int | None, typer.Option(help="ALS iterations [15].")] = None,
    regularization: Annotated[float | None, typer.Option("--regularization", "--reg", help="λ [0.05].")] = None,
    alpha: Annotated[float | None, typer.Option(help="Confidence scale α [10].")] = None,
    confidence: Annotated[str | None, typer.Option(help="linear: 1 + α·w, or log: 1 + α·log(1 + w/ε).")] = None,
    epsilon: Annotated[float | None, typer.Option(help="ε of the log confidence [1].")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads, 0 = all.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (init, splits, sampling).")] = None,
    cold_items: Annotated[Path | None, typer.Option(help="File item_id,split (train/valid/test): cold items.")] = None,
    cold_fraction: Annotated[float | None, typer.Option(help="Random fraction of items made cold [0].")] = None,
    leave_out: Annotated[int | None, typer.Option(help="Interactions held out per user for the metrics [1].")] = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Cut-off of the ranking metrics [20].")] = None,
    sweep: Annotated[
        list[str] | None, typer.Option(help="Grid on a validation split: factors=32,64 alpha=1,10 …")
    ] = None,
    evaluate: Annotated[bool | None, typer.Option("--evaluate/--no-evaluate", help="Held-out metrics first.")] = None,
    log_loss: Annotated[bool | None, typer.Option("--log-loss", help="Show the training loss (costs a pass).")] = None,
    spark_master: Annotated[str | None, typer.Option(help="Spark master URL [local[*]].")] = None,
    spark_conf: Annotated[list[str] | None, typer.Option(help="Spark setting KEY=VALUE (repeatable).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Factorize the interaction matrix (implicit-feedback ALS) into user and item factors, with held-out metrics."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from socialfeat.factorize.stage import factorize as run_factorize
    from socialfeat.factorize.stage import parse_sweep

    terms = [*(sweep or []), *(grid or [])]
    if grid and not sweep:
        raise UserError(
            grid[0], "unexpected argument; sweep terms follow --sweep, e.g. --sweep factors=32,64 alpha=1,10"
        )
    confs = {}
    for item in spark_conf or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--spark-conf {item}", "expected KEY=VALUE, e.g. spark.executor.memory=8g")
        confs[f"factorize.spark_conf.{key}"] = (f"--spark-conf {item}", value)
    flags = _flags(
        seed=("--seed", seed),
        factorize__backend=("--backend", backend),
        factorize__factors=("--factors", factors),
        factorize__iterations=("--iterations", iterations),
        factorize__regularization=("--regularization", regularization),
        factorize__alpha=("--alpha", alpha),
        factorize__confidence=("--confidence", confidence),
        factorize__epsilon=("--epsilon", epsilon),
        factorize__threads=("--threads", threads),
        split__cold_items=("--cold-items", cold_items),
        split__cold_fraction=("--cold-fraction", cold_fraction),
        split__leave_out=("--leave-out", leave_out),
        factorize__k=("-k", k),
        factorize__sweep=("--sweep", parse_sweep(terms) if terms else None),
        factorize__evaluate=("--evaluate", evaluate),
        factorize__log_loss=("--log-loss", log_loss),
        factorize__spark_master=("--spark-master", spark_master),
    )
    flags.update(confs)
    cfg = load_config(config, set_ or [], flags)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(label: str, done: int, total: int, loss: float | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total, loss="")
            bar.update(tasks[label], completed=done, loss="" if loss is None else f"loss {loss:.4f}")

        result = run_factorize(cfg, run, progress=progress)
    m = result.metrics
    if "sweep" in m:
        out.print(_sweep_table(m["sweep"], m["sweep_best"], m["heldout"]["k"]))
    if "heldout" in m:
        out.print(_heldout_table(m["heldout"]))
    items = m["items"]
    out.print(
        f"items: {items['train']:,} warm, {items['valid']:,} cold (valid), {items['test']:,} cold (test); "
        f"{m['pairs']['cold']:,} interactions with cold items kept aside",
        highlight=False,
    )
    out.print(
        f"wrote {result.out} in {m['seconds']:.1f} s (final fit {m['fit_seconds']:.1f} s, {m['backend']})",
        highlight=False,
    )


@app.command()
def targets(
    run: Annotated[Path, typer.Argument(help="Run folder with factors/ (from factorize); targets/ is written here.")],
    which: Annotated[
        str | None,
        typer.Option(
            "--targets", help="Comma list of factors, factor-clusters, engagement, tags [factors,factor-clusters]."
        ),
    ] = None,
    clusters: Annotated[int | None, typer.Option(help="k of the k-means on item factors [32].")] = None,
    engagement_clusters: Annotated[
        int | None, typer.Option(help="k of the k-means on comments and engagement counts [32].")
    ] = None,
    normalize: Annotated[str | None, typer.Option(help="l2, standardize or none [l2].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the k-means.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Turn item factors into training targets: normalized factors and k-means pseudo-classes (of the factors, or
    of comments and engagement counts: VisE), described in words."""
    from socialfeat.targets.stage import targets as run_targets

    names = [t.strip() for t in which.split(",") if t.strip()] if which else None
    flags = _flags(
        seed=("--seed", seed),
        targets__targets=("--targets", names),
        targets__clusters=("--clusters", clusters),
        targets__engagement_clusters=("--engagement-clusters", engagement_clusters),
        targets__normalize=("--normalize", normalize),
    )
    cfg = load_config(config, set_ or [], flags)
    with err.status("clustering…"):
        result = run_targets(cfg, run)
    for name, groups in result.summary["clusters"].items():
        n_items = result.summary.get(name, {}).get("with_comments", result.summary["items"])
        table = Table(title=f"{name}: {len(groups)} clusters of {n_items:,} items", title_justify="left")
        table.add_column("cluster", justify="right")
        table.add_column("items", justify="right")
        table.add_column("distinctive words")
        table.add_column("typical items")
        for g in groups:
            table.add_row(
                str(g["cluster"]),
                f"{g['size']:,}",
                ", ".join(w["word"] for w in g["words"][:6]),
                ", ".join(str(i) for i in g["items"][:3]),
            )
        out.print(table)
        if masked := result.summary.get(name, {}).get("without_comments"):
            out.print(f"({masked:,} items without comments masked)", highlight=False)
    out.print(f"wrote {result.out} ({', '.join(result.summary['targets'])})", highlight=False)


def _is_main() -> bool:
    """Under torchrun only rank 0 prints."""
    import os

    return os.environ.get("RANK", "0") == "0"


@app.command()
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
    epochs: Annotated[int | None, typer.Option(help="Epochs [5].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size, split over ranks [64].")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate of the heads [0.001].")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input side in pixels [224].")] = None,
    regression_loss: Annotated[str | None, typer.Option(help="cosine or mse [cosine].")] = None,
    workers: Annotated[
        int | None, typer.Option(help="DataLoader worker processes [0 on CPU, up to 8 per GPU].")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [auto].")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Also checkpoint every N steps [0: per epoch].")] = None,
    strict_images: Annotated[
        bool | None, typer.Option("--strict-images", help="A bad image is an error instead of a skipped item.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in RUN/.train.")] = False,
    meta_class: Annotated[
        bool,
        typer.Option("--meta-class", help="Train the meta-class baseline (the tags head alone) into RUN/meta-class."),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed (init, order, augmentation).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a CNN on the warm items' images to predict their targets (runs under torchrun too)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from socialfeat.train import train as train_model
    from socialfeat.train import train_meta_class

    run_train = train_meta_class if meta_class else train_model

    flags = _flags(
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
    main_rank = _is_main()
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
                err.print(
                    f"training on {e['train']:,} items ({e['valid']:,} held out), {p['trainable']:,} of "
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
    out.print(f"wrote {result.out}", highlight=False)


def _metric_label(key: str) -> str:
    """``valid_factor_clusters_top1`` → ``val clusters top1``: short enough for an 80-column table."""
    split, _, rest = key.partition("_")
    rest = rest.replace("factor_clusters", "clusters").replace("factors_cosine", "cosine").replace("_", " ")
    return f"{'val' if split == 'valid' else split} {rest}"


@app.command()
def embed(
    run: Annotated[Path, typer.Argument(help="Run folder; features/<source>.parquet is written here.")],
    source: Annotated[
        str, typer.Option(help="learned (the trained model), imagenet, random or meta-class.")
    ] = "learned",
    batch_size: Annotated[int | None, typer.Option(help="Images per batch [128].")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes [0; more pays off on GPU].")] = None,
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

    flags = _flags(
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
    with Progress(*columns, console=err, transient=True, disable=not (_is_main() and err.is_terminal)) as bar:
        task = bar.add_task(f"embedding ({source})", total=None, rate="")

        def progress(done: int, total: int, rate: float) -> None:
            bar.update(task, completed=done, total=total, rate=f"{rate:.0f} img/s")

        def caching(done: int, total: int) -> None:
            bar.update(task, description="caching images", completed=done, total=total)
            if done == total:
                bar.update(task, description=f"embedding ({source})", completed=0, total=None)

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
        f"wrote {result.out}: {s['items']:,} items × {s['dimension']:,} ({s['model']}, {s['init']}), "
        f"{s['images_per_s']:.0f} img/s{missing}",
        highlight=False,
    )


def _print_embedded_images(path: Path, s: dict[str, Any]) -> None:
    """One line on what was written, and which images were skipped (the first few by name)."""
    if not _is_main():
        return
    out.print(
        f"wrote {path}: {s['embedded']:,} of {s['rows']:,} images × {s['dimension']:,} ({s['model']}, {s['init']}, "
        f"{s['image_size']} px), {s['images_per_s']:.0f} img/s",
        highlight=False,
        soft_wrap=True,
    )
    p = s["problems"]
    if p["total"]:
        reasons = ", ".join(f"{n:,} {r}" for r, n in p["counts"].items())
        names = ", ".join(str(e["image"]) for e in p["examples"][:3])
        more = " …" if p["total"] > 3 else ""
        out.print(
            f"skipped {p['total']:,} images ({reasons}): {names}{more}; all listed in {s['sidecar']}",
            highlight=False,
            soft_wrap=True,
        )


METRIC_NAMES = (("recall", "recall"), ("precision", "precision"), ("ndcg", "NDCG"), ("map", "MAP"))


def _heldout_table(h: dict[str, Any]) -> Table:
    k = h["k"]
    table = Table(
        title=f"held-out ranking ({h['model']['users']:,} users, {h['held_out_pairs']:,} held-out pairs)",
        title_justify="left",
    )
    table.add_column("")
    for _, name in METRIC_NAMES:
        table.add_column(f"{name}@{k}", justify="right")
    table.add_column("AUC", justify="right")
    table.add_column("coverage", justify="right")
    for source in ("model", "popularity", "random"):
        r = h[source]
        table.add_row(source, *(f"{r[key]:.4f}" for key, _ in METRIC_NAMES), f"{r['auc']:.4f}", f"{r['coverage']:.1%}")
    return table


def _sweep_table(rows: list[dict[str, Any]], best: dict[str, float], k: int) -> Table:
    table = Table(title="sweep (validation hold-out; best NDCG wins)", title_justify="left")
    params = [
        key
        for key in rows[0]
        if key not in {"recall", "precision", "ndcg", "map", "auc", "coverage", "users", "seconds"}
    ]
    for name in [*params, f"recall@{k}", f"NDCG@{k}", "AUC", "seconds"]:
        table.add_column(name, justify="right")
    for r in rows:
        mark = " ◀" if all(r[key] == value for key, value in best.items()) else ""
        table.add_row(
            *(f"{r[p]:g}" for p in params),
            f"{r['recall']:.4f}",
            f"{r['ndcg']:.4f}{mark}",
            f"{r['auc']:.4f}",
            f"{r['seconds']:.1f}",
        )
    return table


def _flat_counts(summary: dict[str, Any], prefix: str = "") -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    for key, value in summary.items():
        if isinstance(value, dict):
            rows += _flat_counts(value, f"{prefix}{key} ")
        elif isinstance(value, int) and not isinstance(value, bool) and key != "seed":
            rows.append((f"{prefix}{key}", value))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="socialfeat")
    except UserError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; no partial output was kept", markup=False)
        sys.exit(130)


# The later stages keep their commands in their own modules (each file stays short); importing them adds their
# commands to ``app``. They import ``app`` and the helpers above, so this import stays at the bottom.
from socialfeat import cli_evaluate, cli_pipeline, cli_report, cli_search, cli_serve, cli_transfer  # noqa: E402, F401
