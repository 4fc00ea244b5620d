"""Command of the export stage: a run's model as ONNX, for serving it in another stack, or as a timm folder."""

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
    fmt: Annotated[
        str, typer.Option("--format", help="onnx (a graph for ONNX Runtime) or timm (a folder timm loads).")
    ] = "onnx",
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The .onnx file [RUN/export/SOURCE.onnx]; with --format timm, a folder [RUN/export/SOURCE-timm].",
        ),
    ] = None,
    opset: Annotated[
        int | None,
        typer.Option("--opset", help="ONNX opset, 18 to the newest installed [18].", min=18, callback=_opset),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Export a model as ONNX, or with --format timm as a folder timm loads. ONNX: uint8 NHWC images in, pooled
    features and every head out; a JSON sidecar gives the image size, crop rule and fingerprint. timm: the backbone
    as config.json + model.safetensors, for timm.create_model("local-dir:DIR")."""
    from socialfeat.export import export as run_export
    from socialfeat.export import onnxruntime_available

    if fmt not in ("onnx", "timm"):
        raise UserError("--format", f"expected onnx or timm, got '{fmt}'")
    if fmt == "timm":
        if opset is not None:
            raise UserError("--opset", "applies to --format onnx only")
        _export_timm(run, source, out_file, config, set_)
        return
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


def _export_timm(run: Path, source: str, out_dir: Path | None, config: Path | None, set_: list[str] | None) -> None:
    """``export --format timm``: the backbone as a folder timm loads, and how to load it."""
    from socialfeat.export_timm import CONFIG, WEIGHTS, export_timm

    result = export_timm(load_config(config, set_ or []), run, source, out_dir)
    size = (result.path / WEIGHTS).stat().st_size / 1e6
    meta = result.config["socialfeat"]
    out.print(
        f"wrote {shown(result.path)} ({CONFIG}, {WEIGHTS}: {size:.1f} MB) in {result.seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"{result.config['architecture']}: {result.config['num_features']} pooled features, "
        f"{meta['image_size']} px input; heads not exported",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f'load it: timm.create_model("local-dir:{shown(result.path)}", pretrained=True, num_classes=0); '
        f"checked through timm's loader: max relative difference {meta['max_relative_error']:.1e}",
        highlight=False,
        soft_wrap=True,
    )
