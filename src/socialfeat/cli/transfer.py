"""Command of the transfer stage: linear probes on labelled images nobody engaged with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, err, limits, out, shown
from socialfeat.cli.tables import transfer_table
from socialfeat.config import load_config

commands = Commands()


def print_transfer(result: dict[str, Any], path: Path | None = None) -> None:
    out.print(transfer_table(result))
    skipped = {n: p["skipped"] for r in result["rows"][:1] for n, p in r.get("few_shot", {}).items() if "skipped" in p}
    for n, why in skipped.items():
        out.print(f"note: {n} per class skipped: {shown(why)}", highlight=False, soft_wrap=True)
    for note in result.get("notes", []):
        out.print(f"note: {shown(note)}", highlight=False, soft_wrap=True)
    if path is not None:
        out.print(f"wrote {shown(path)} in {result['seconds']:.1f} s", highlight=False, soft_wrap=True)


@commands()
def transfer(
    run: Annotated[Path, typer.Argument(help="Run folder with model/; eval/transfer-<name>.json is written here.")],
    labels: Annotated[
        Path | None,
        typer.Option(help="Table (CSV/TSV/Parquet/JSONL) of image paths and labels [transfer.sets of the config]."),
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="Folder the table's image paths are relative to [the table's folder].")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the set: eval/transfer-<name>.json [table file name].")
    ] = None,
    image_column: Annotated[str | None, typer.Option(help="Image path column [image].")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column [label].")] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            help="Feature source (repeatable): learned, imagenet, random, meta-class [all; meta-class when trained]."
        ),
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="Stratified k-fold of the accuracy [5].", **limits("transfer.folds"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (folds, few-shot draws).", **limits("seed"))] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [auto].")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Transfer evaluation: linear probes of every feature source (learned pooled and heads, ImageNet, random init)
    on labelled images the model never saw — k-fold accuracy and a few-shot curve, side by side."""
    from socialfeat.errors import UserError
    from socialfeat.evaluate.transfer_stage import one_set
    from socialfeat.evaluate.transfer_stage import transfer as run_transfer

    flags = config_flags(seed=("--seed", seed), transfer__folds=("--folds", folds), train__device=("--device", device))
    cfg = load_config(config, set_ or [], flags)
    given = {"--image-root": image_root, "--name": name, "--image-column": image_column, "--label-column": label_column}
    if labels is None:
        extra = next((flag for flag, value in given.items() if value is not None), None)
        if extra is not None:
            raise UserError(
                extra, "only applies with --labels TABLE (without it, transfer.sets of the config are used)"
            )
        sets = None
    else:
        sets = [one_set(labels, image_root, name, image_column, label_column)]
    with err.status("transfer…") as status:
        result = run_transfer(cfg, run, sets, source, progress=lambda msg: status.update(f"{shown(msg)}…"))
    for path, res in zip(result.outs, result.results, strict=True):
        print_transfer(res, path)
