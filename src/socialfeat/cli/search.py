"""Commands of the search stages: index, similar and recommend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, limits, out, shown
from socialfeat.config import load_config
from socialfeat.errors import UserError

SourceOpt = Annotated[str | None, typer.Option("--source", help="Feature source: learned, imagenet or random.")]
ColumnOpt = Annotated[
    str | None, typer.Option("--column", help="Feature column: features (pooled) or a head, e.g. head_factors.")
]
KOpt = Annotated[int | None, typer.Option("--k", help="How many results [10].", **limits("index.k"))]

commands = Commands()


def _items_table(title: str, rows: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("item id")
    table.add_column("score", justify="right")
    for name in extra:
        table.add_column(name)
    table.add_column("title")
    for r in rows:
        cells = [str(r["rank"]), shown(r["item_id"]), f"{r['score']:.4f}", *(shown(r.get(x) or "") for x in extra)]
        table.add_row(*cells, shown(r.get("title") or ""))
    return table


def _one_of(where: str, *given: object) -> None:
    if sum(g is not None for g in given) != 1:
        raise UserError(where, "give exactly one of them")


def _not_empty(where: str, what: str, value: str | None) -> None:
    """An id given as ``''`` (an empty shell variable): no id is empty, so say so rather than "unknown"."""
    if value == "":
        raise UserError(where, f"expected {what}, got an empty string")


@commands()
def index(
    run: Annotated[Path, typer.Argument(help="Run folder holding features/<source>.parquet.")],
    source: SourceOpt = None,
    column: ColumnOpt = None,
    kind: Annotated[str | None, typer.Option(help="auto, flat (exact), hnsw or ivfpq [auto].")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Build a faiss nearest-neighbour index (cosine) over one feature source of a run."""
    from socialfeat.index import build_index

    flags = config_flags(
        index__source=("--source", source), index__column=("--column", column), index__kind=("--kind", kind)
    )
    cfg = load_config(config, set_ or [], flags)
    result = build_index(cfg, run)
    m = result.meta
    out.print(
        f"wrote {shown(result.path)}: {m['kind']} index of {m['n']:,} items × {m['dim']} "
        f"({shown(m['source'])}/{shown(m['column'])}), "
        f"{m['build_seconds']:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


@commands()
def similar(
    run: Annotated[Path, typer.Argument(help="Run folder with features (and an index, built when missing).")],
    item_id: Annotated[str | None, typer.Argument(help="A known item: its neighbours, itself left out.")] = None,
    image: Annotated[Path | None, typer.Option(help="A new image file instead of an item id.")] = None,
    source: SourceOpt = None,
    column: ColumnOpt = None,
    k: KOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Items most similar to a known item or to a new image file."""
    from socialfeat.library import Run

    _one_of("ITEM_ID/--image", item_id, image)
    _not_empty("ITEM_ID", "an item id", item_id)
    flags = config_flags(index__source=("--source", source), index__column=("--column", column), index__k=("--k", k))
    cfg = load_config(config, set_ or [], flags)
    if image is not None and image.is_dir():  # the library's words name no flag
        raise UserError(str(image), "is a folder; --image expects an image file (JPEG, PNG, WebP, …)")
    rows = Run(run, cfg).similar(item_id if item_id is not None else image).rows()
    query = f"item {shown(item_id)}" if item_id is not None else shown(image)
    out.print(_items_table(f"similar to {query} ({shown(cfg.index.source)}/{shown(cfg.index.column)})", rows))


@commands()
def recommend(
    run: Annotated[Path, typer.Argument(help="Run folder with factors, a trained model and features.")],
    image: Annotated[Path | None, typer.Option(help="A new image: the users it would reach.")] = None,
    title: Annotated[str | None, typer.Option(help="The new item's title (uses the run's content model).")] = None,
    text: Annotated[str | None, typer.Option(help="The new item's description (content model).")] = None,
    tags: Annotated[str | None, typer.Option(help="The new item's tags, comma separated (content model).")] = None,
    user: Annotated[str | None, typer.Option(help="A known user id: the items to show them.")] = None,
    k: KOpt = None,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="With --user: keep items already seen.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Users a new image would reach (--image), or items for a known user (--user), cold items included."""
    from socialfeat.library import Run

    described = title is not None or text is not None or tags is not None
    if described and user is not None:
        raise UserError("--user", "give a new item (--image, --title, --text, --tags) or --user, not both")
    if not described:
        _one_of("--image/--user", image, user)
    _not_empty("--user", "a user id", user)
    new_item = image is not None or described
    cfg = load_config(config, set_ or [], config_flags(index__k=("--k", k)))
    opened = Run(run, cfg)
    if new_item:
        result = opened.audience(image, title=title, text=text, tags=tags)
        what = image.name if image is not None else repr(title or text or tags)
        table = Table(title=f"audience of {shown(what)}", title_justify="left", caption="score u·predicted factors")
        for name, justify in (("rank", "right"), ("user id", "left"), ("score", "right")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for r in result.users.rows():
            table.add_row(str(r["rank"]), shown(r["user_id"]), f"{r['score']:.4f}")
        out.print(table)
        for note in result.notes:
            out.print(f"note: {shown(note)}", highlight=False, soft_wrap=True)
        if result.similar:
            out.print(_items_table(f"similar items (learned/{shown(cfg.index.column)})", result.similar.rows()))
    else:
        rows = opened.recommend(user, include_seen=include_seen).rows()
        title = f"items for user {shown(user)}{' (seen included)' if include_seen else ''}"
        table = _items_table(title, rows, ("factors",))
        by = next((r["predicted_by"] for r in rows if r.get("predicted_by")), None)
        how = {"content": "the content model (image, text, tags, …)", "image": "the image's factors head"}
        table.caption = "score u·v; cold items by their predicted factors" + (f", from {how[by]}" if by else "")
        out.print(table)
