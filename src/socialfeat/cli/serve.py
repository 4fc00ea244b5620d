"""Command of the web explorer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, err, limits, shown
from socialfeat.config import load_config

commands = Commands()


@commands()
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder with features (learned and imagenet), factors and model.")],
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1; 0.0.0.0 = every network].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [8000; 0 = any free port].", **limits("serve.port"))] = None,
    max_upload_mb: Annotated[
        float | None, typer.Option(help="Largest accepted upload in MB [10].", min=0.01, max=1000)
    ] = None,
    writable: Annotated[
        bool, typer.Option("--writable", help="Turn on the write endpoints: add and remove items, log events.")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="SOCIALFEAT_TOKEN",
            show_envvar=True,
            help="Token that writes must send (Authorization: Bearer); required with --writable beyond 127.0.0.1.",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Web explorer: browse items and their neighbours under learned vs ImageNet features, upload new images.

    With --writable it also adds and removes items and logs events in the run's live catalogue (POST /api/items,
    DELETE /api/items/ID, POST /api/events). Beyond 127.0.0.1 these need a token."""
    from socialfeat.serve import serve as run_serve

    upload = None if max_upload_mb is None else int(max_upload_mb * 1_000_000)
    flags = config_flags(
        serve__host=("--host", host),
        serve__port=("--port", port),
        serve__max_upload_bytes=("--max-upload-mb", upload),
        serve__writable=("--writable", True if writable else None),
    )
    cfg = load_config(config, set_ or [], flags)

    def ready(url: str, seconds: float) -> None:
        err.print(f"socialfeat explorer: {shown(url)} (loaded in {seconds:.1f} s; Ctrl-C stops)", highlight=False)

    run_serve(cfg, run, ready, token=token)
