"""Commands of the live catalogue: add and remove items, log events, without a batch rerun."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, limits, out, shown
from socialfeat.config import load_config

commands = Commands()
RunArg = Annotated[Path, typer.Argument(help="Run folder: its live store is RUN/live/live.db.")]


@commands()
def add(
    run: RunArg,
    items: Annotated[Path, typer.Option("--items", help="Item table: id, image, optional title/text/tags/...")],
    image_root: Annotated[
        Path | None, typer.Option(help="Folder the image paths are relative to [the table's].")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an item added before with other bytes.")] = False,
    k: Annotated[int | None, typer.Option("--k", help="Users shown per item [10].", **limits("index.k"))] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Add new items to a run's catalogue: searchable and recommendable at once."""
    from socialfeat.live.operations import add_items

    cfg = load_config(config, set_ or [], config_flags(index__k=("--k", k)))
    results = add_items(cfg, run, items, image_root, replace=replace, k=cfg.index.k)
    table = Table(
        title=f"added to {shown(run)}", title_justify="left", caption="audience: users by u·predicted factors"
    )
    for name in ("item id", "status", "factors from", "audience"):
        table.add_column(name)
    for r in results:
        users = ", ".join(shown(u["user_id"]) for u in r.audience[:5]) + (" …" if len(r.audience) > 5 else "")
        table.add_row(shown(r.item_id), r.status, r.predicted_by, users or "(unchanged)")
    out.print(table)


@commands()
def remove(
    run: RunArg,
    ids: Annotated[list[str], typer.Argument(help="Item ids to take out of search and recommendations.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Take items out of a run's search and recommendations (their events are kept)."""
    from socialfeat.live.operations import remove_items

    removed = remove_items(load_config(config, set_ or []), run, ids)
    out.print(
        f"removed {len(removed)} item(s): {', '.join(shown(i) for i in removed)}", highlight=False, soft_wrap=True
    )


@commands()
def log(
    run: RunArg,
    events: Annotated[Path, typer.Argument(help="Event table: user, item, event, optional value and time.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Log new events: the users' vectors are folded in at once, and items warm up."""
    from socialfeat.live.operations import log_events

    result = log_events(load_config(config, set_ or []), run, events)
    warm = f"; {len(result.warm_items)} added item(s) now warm" if result.warm_items else ""
    out.print(
        f"logged {result.events:,} event(s) from {result.users:,} user(s) ({result.new_users:,} new){warm}",
        highlight=False,
        soft_wrap=True,
    )
