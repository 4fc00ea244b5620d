"""Commands of the data stages: ingest, simulate, factorize, targets."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, err, limits, out, shown
from socialfeat.config import Config, load_config
from socialfeat.errors import UserError

commands = Commands()


def _event_weights(items: list[str] | None) -> dict[str, tuple[str, Any]]:
    """``--event-weight like=4`` → config flags; a weight must be a finite number ≥ 0 (``nan`` and ``inf`` parse as
    floats in Python, so they are refused here by name rather than deep in ingest's SQL)."""
    result: dict[str, tuple[str, Any]] = {}
    for item in items or []:
        kind, sep, raw = item.partition("=")
        try:
            weight = float(raw)
        except ValueError:
            weight = None
        if not sep or not kind or weight is None or weight < 0:
            raise UserError(f"--event-weight {item}", "expected KIND=WEIGHT with a number ≥ 0, e.g. like=4")
        if not math.isfinite(weight):
            raise UserError(
                f"--event-weight {item}", f"'{raw}' is not a finite number; expected a weight ≥ 0, e.g. like=4"
            )
        result[f"ingest.event_weights.{kind}"] = (f"--event-weight {item}", weight)
    return result


@commands()
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
    live: Annotated[
        bool,
        typer.Option(
            "--live/--no-live", help="Absorb the live store of the run --out lies in (RUN/live/live.db), if any."
        ),
    ] = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Validate, popularity-filter and store an interaction log (plus items and comments) as Parquet."""
    from socialfeat.data.ingest import ingest as run_ingest

    flags = config_flags(
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
        result = run_ingest(cfg, out_dir, step=lambda msg: status.update(f"{shown(msg)}…"), live=live)
    out.print(stats_table(result.stats))
    _print_drops(result.stats)
    absorbed = result.stats.get("live")
    if absorbed:
        out.print(
            f"absorbed the live store up to version {absorbed['version']:,}: {absorbed['items']:,} item(s) "
            f"({absorbed['items_in_dataset']:,} kept by the filter), {absorbed['events']:,} event(s)",
            highlight=False,
        )
    out.print(f"wrote {shown(out_dir)} in {time.perf_counter() - started:.1f} s", highlight=False)


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
        row(f"  {shown(event)}", n, after["events"].get(event, 0))
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


@commands()
def simulate(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the demo platform.")],
    seed: Annotated[
        int | None, typer.Option(help="Random seed; the same seed gives the same data.", **limits("seed"))
    ] = None,
    users: Annotated[
        int | None, typer.Option("--users", help="Number of users [2000].", **limits("simulate.n_users"))
    ] = None,
    n_items: Annotated[
        int | None, typer.Option("--items", help="Number of items (images) [3000].", **limits("simulate.n_items"))
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Image side in pixels [96].", **limits("simulate.image_size"))
    ] = None,
    views_per_user: Annotated[
        float | None, typer.Option(help="Mean views per user [60].", **limits("simulate.views_per_user"))
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate the embedded demo platform: images with hidden attributes and a log from hidden tastes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from socialfeat.data.simulate import simulate as run_simulate

    flags = config_flags(
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
        disable=not err.is_terminal,  # off a terminal a stopped bar leaves a blank line before an error
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
    out.print(f"wrote {shown(out_dir)} in {time.perf_counter() - started:.1f} s", highlight=False)
    where = shown(out_dir)
    out.print(
        f"next: socialfeat ingest --interactions {where}/interactions.csv --items {where}/items.csv "
        f"--comments {where}/comments.csv --out runs/{shown(out_dir.resolve().name)}/dataset",
        highlight=False,
        soft_wrap=True,
    )


@commands()
def factorize(
    run: Annotated[Path, typer.Argument(help="Run folder with dataset/ (from ingest); factors/ is written here.")],
    grid: Annotated[list[str] | None, typer.Argument(help="More --sweep terms, e.g. alpha=1,10 reg=0.01,0.1.")] = None,
    backend: Annotated[str | None, typer.Option(help="local (implicit ALS) or spark (Spark MLlib ALS).")] = None,
    factors: Annotated[int | None, typer.Option(help="Latent factors [64].", **limits("factorize.factors"))] = None,
    iterations: Annotated[
        int | None, typer.Option(help="ALS iterations [15].", **limits("factorize.iterations"))
    ] = None,
    regularization: Annotated[
        float | None, typer.Option("--regularization", "--reg", help="λ [20].", **limits("factorize.regularization"))
    ] = None,
    alpha: Annotated[float | None, typer.Option(help="Confidence scale α [10].", **limits("factorize.alpha"))] = None,
    confidence: Annotated[str | None, typer.Option(help="linear: 1 + α·w, or log: 1 + α·log(1 + w/ε).")] = None,
    epsilon: Annotated[
        float | None, typer.Option(help="ε of the log confidence [1].", **limits("factorize.epsilon"))
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads, 0 = all.", **limits("factorize.threads"))] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (init, splits, sampling).", **limits("seed"))] = None,
    cold_items: Annotated[Path | None, typer.Option(help="File item_id,split (train/valid/test): cold items.")] = None,
    cold_fraction: Annotated[
        float | None, typer.Option(help="Random fraction of items made cold [0].", **limits("split.cold_fraction"))
    ] = None,
    leave_out: Annotated[
        int | None,
        typer.Option(help="Interactions held out per user for the metrics [1].", **limits("split.leave_out")),
    ] = None,
    k: Annotated[
        int | None, typer.Option("-k", "--k", help="Cut-off of the ranking metrics [20].", **limits("factorize.k"))
    ] = None,
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
    flags = config_flags(
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
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
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
        f"wrote {shown(result.out)} in {m['seconds']:.1f} s (final fit {m['fit_seconds']:.1f} s, {m['backend']})",
        highlight=False,
    )


@commands()
def targets(
    run: Annotated[Path, typer.Argument(help="Run folder with factors/ (from factorize); targets/ is written here.")],
    which: Annotated[
        str | None,
        typer.Option(
            "--targets", help="Comma list of factors, factor-clusters, engagement, tags [factors,factor-clusters]."
        ),
    ] = None,
    clusters: Annotated[
        int | None, typer.Option(help="k of the k-means on item factors [32].", **limits("targets.clusters"))
    ] = None,
    engagement_clusters: Annotated[
        int | None,
        typer.Option(
            help="k of the k-means on comments and engagement counts [32].", **limits("targets.engagement_clusters")
        ),
    ] = None,
    normalize: Annotated[str | None, typer.Option(help="l2, standardize or none [l2].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the k-means.", **limits("seed"))] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Turn item factors into training targets: normalized factors and k-means pseudo-classes (of the factors, or
    of comments and engagement counts: VisE), described in words."""
    from socialfeat.targets.stage import targets as run_targets

    names = [t.strip() for t in which.split(",") if t.strip()] if which else None
    flags = config_flags(
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
                ", ".join(shown(w["word"]) for w in g["words"][:6]),
                ", ".join(shown(i) for i in g["items"][:3]),
            )
        out.print(table)
        if masked := result.summary.get(name, {}).get("without_comments"):
            out.print(f"({masked:,} items without comments masked)", highlight=False)
    out.print(f"wrote {shown(result.out)} ({', '.join(result.summary['targets'])})", highlight=False)


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
