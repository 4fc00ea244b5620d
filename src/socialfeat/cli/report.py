"""Command of the report stage: the HTML report of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, err, out, shown
from socialfeat.config import load_config

commands = Commands()


@commands()
def report(
    run: Annotated[Path, typer.Argument(help="Run folder; report.html is written here.")],
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report here instead of RUN/report.html.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write one self-contained HTML report of a run: results, data, training, galleries, configuration."""
    from socialfeat.report import report as run_report

    cfg = load_config(config, set_ or [], {})
    with err.status("writing the report…"):
        path = run_report(cfg, run, out_path)
    out.print(f"wrote {shown(path)} ({path.stat().st_size / 1024:,.0f} KB)", highlight=False, soft_wrap=True)
