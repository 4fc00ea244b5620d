"""Command of the export stage: a run's model as ONNX, for serving it in another stack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, out, shown
from socialfeat.config import load_config
from socialfeat.errors import UserError

commands = Commands()


def _opset(value: int | None) -> int | None:
    """``--opset`` checked while parsing, against what the installed exporter and onnxruntime support (without
    the export extra, the command says so before any work)."""
    from socialfeat.export import check_opset, onnxruntime_available

    if value is None or onnxruntime_available():
        return value
    try:
        return check_opset(value)
    except UserError as e:
        raise typer.BadParameter(e.message) from None


@commands()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder with a trained model (or features of a baseline).")],
    source: Annotated[
        str, typer.Option("--source", help="Model to export: learned, imagenet, random or meta-class.")
    ] = "learned",
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="The .onnx file [RUN/export/SOURCE.onnx].")
    ] = None,
    opset: Annotated[
        int | None,
        typer.Option("--opset", help="ONNX opset, 18 to the newest installed [18].", min=18, callback=_opset),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Export a model as ONNX: uint8 NHWC images in (normalised inside the graph), pooled features and every
    head out, any batch size; a JSON sidecar beside it gives the image size, crop rule, heads and fingerprint."""
    from socialfeat.export import export as run_export
    from socialfeat.export import onnxruntime_available

    if out_file is not None and out_file.suffix.lower() != ".onnx":
        raise UserError("--out", f"expected a .onnx file name, got '{out_file.name}'")
    missing = onnxruntime_available()
    if missing:
        raise UserError("export", missing)
    cfg = load_config(config, set_ or [])
    result = run_export(cfg, run, source, out_file, opset)
    meta = result.meta
    outputs = ", ".join(f"{name} ({dim})" for name, dim in meta["outputs"].items())
    size = result.path.stat().st_size / 1e6
    line = f"wrote {shown(result.path)} ({size:.1f} MB, opset {meta['opset']}) in {result.seconds:.1f} s"
    out.print(line, highlight=False, soft_wrap=True)
    size_px = meta["image_size"]
    out.print(
        f"input images: uint8 [batch, {size_px}, {size_px}, 3]; outputs: {outputs}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"checked against PyTorch: max relative difference {meta['max_relative_error']:.1e}; "
        f"sidecar {shown(result.path.with_suffix('.json'))}",
        highlight=False,
        soft_wrap=True,
    )
