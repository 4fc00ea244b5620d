"""Commands over whole runs: run (every stage from one config) and demo (the simulated platform)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from socialfeat.cli.options import Commands, SetOpt, err, one_line, out, shown
from socialfeat.cli.tables import transfer_table
from socialfeat.config import load_config

commands = Commands()


@contextlib.contextmanager
def _stage_printer() -> Iterator[tuple[Callable[[Any], None], Callable[[str, str], None]]]:
    """(on_stage, progress) callbacks: one line per finished stage on stdout, and on a terminal a spinner on
    stderr saying what the running stage does (stopped while a line is printed, so the two never interleave)."""
    from socialfeat.pipeline import stage_line

    status = err.status("") if err.is_terminal else None
    current = {"stage": ""}

    def on_stage(o: Any) -> None:
        if o.action == "start":
            current["stage"] = o.stage
            if status is not None:
                status.update(f"{shown(o.stage)}…")
                status.start()
            return
        if status is not None:
            status.stop()
        out.print(one_line(stage_line(o)), highlight=False, markup=False, soft_wrap=True)  # a reason may quote a path

    def progress(stage: str, message: str) -> None:
        if status is not None and stage == current["stage"]:
            status.update(f"{shown(stage)}: {shown(message)}")

    try:
        yield on_stage, progress
    finally:
        if status is not None:
            status.stop()


@commands()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config of the run (defaults < file < --set).")],
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="Run folder [runs/<name> of the config, from the current folder].")
    ] = None,
    from_stage: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Rerun this stage and every later one: ingest, factorize, targets, train, "
            "embed, index, evaluate, transfer, report.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun every stage.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only say which stages would run, and why.")] = False,
    set_: SetOpt = None,
) -> None:
    """Run the whole pipeline (ingest → factorize → targets → train → embed → index → evaluate → report), skipping
    every stage whose outputs are newer than its inputs and whose config is unchanged."""
    from socialfeat import pipeline

    cfg = load_config(config, set_ or [], {})
    with _stage_printer() as (on_stage, progress):
        result = pipeline.run(cfg, run_dir, from_stage, force, dry_run=dry_run, on_stage=on_stage, progress=progress)
    if not dry_run:
        ran = sum(o.action == "ran" for o in result.stages)
        out.print(
            f"{shown(result.run)}: {ran} of {len(result.stages)} stages ran in {result.seconds:.1f} s", highlight=False
        )


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def headline_table(metrics: dict[str, Any]) -> Table:
    """Learned features against the baselines, in three numbers each."""
    from socialfeat.pipeline import headline

    split = metrics.get("split", {})
    table = Table(
        title=f"cold start: {split.get('test', 0):,} images nobody has seen, "
        f"{metrics.get('sample', {}).get('text') or format(split.get('users_evaluated', 0), ',') + ' users'}",
        title_justify="left",
        caption="AUC: who engages with a new image, predicted from its features · lift: audience overlap of nearest "
        "neighbours ÷ random pairs · taste probe: linear-probe accuracy on palette, texture, composition",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("features", no_wrap=True)
    for name in ("cold-start AUC", "retrieval lift", "taste probe"):
        table.add_column(name, justify="right")
    for row in headline(metrics):
        table.add_row(shown(row["name"]), _fmt(row["auc"], 3), _fmt(row["lift"], 2), _fmt(row["taste_probe"], 3))
    table.add_section()
    for ref in metrics.get("references", []):
        table.add_row(shown(ref["name"]), _fmt(ref.get("coldstart", {}).get("auc"), 3), "", "", style="dim")
    return table


@commands()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder; the platform goes to OUT/platform.")] = Path(
        "runs/demo"
    ),
    small: Annotated[
        bool, typer.Option("--small", help="Test size: 300 users, 400 images of 32 px, a tiny CNN, 2 epochs.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Rerun every stage, the simulation too.")] = False,
    set_: SetOpt = None,
) -> None:
    """Simulate a small image platform and run the whole pipeline on it: learned features against ImageNet,
    random and metadata features, ending in an HTML report."""
    from socialfeat import pipeline

    started = time.perf_counter()
    with _stage_printer() as (on_stage, progress):
        result = pipeline.demo(out_dir, small, set_ or [], force, on_stage=on_stage, progress=progress)
    metrics_path = result.run / "eval" / "metrics.json"
    if metrics_path.is_file():
        from socialfeat.measures.bootstrap import describe

        metrics = json.loads(metrics_path.read_text())
        out.print(headline_table(metrics))
        for entry in metrics.get("differences", []):  # each difference with its 95% interval
            out.print(shown(describe(entry)), highlight=False, soft_wrap=True)
    for path in sorted((result.run / "eval").glob("transfer-*.json")):  # images nobody engaged with: transfer
        out.print(transfer_table(json.loads(path.read_text())))
    out.print(f"report: {shown(result.report)}", highlight=False, soft_wrap=True)
    out.print(f"total {time.perf_counter() - started:.1f} s", highlight=False)
    from socialfeat.artifacts import command, pipeline_command

    out.print(
        f"next: {shown(command('similar', result.run, 'ITEM_ID'))} · rerun: {shown(pipeline_command(result.run))}",
        highlight=False,
        soft_wrap=True,
    )
