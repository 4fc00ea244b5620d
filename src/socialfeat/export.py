"""``export``: take a run's model out as ONNX for a user's own serving stack, and run ONNX Runtime wherever
socialfeat waits on a single forward pass (the explorer's uploads, ``similar``/``recommend --image``,
``embed --images``). Training stays PyTorch.

The graph takes uint8 RGB images, NHWC, already decoded and square-cropped (see the sidecar's ``crop``); the
normalisation is inside it. It gives the pooled features and every head, with a dynamic batch size. A JSON sidecar
beside the ``.onnx`` file says what the graph expects and gives, and carries a fingerprint of everything that
decides its outputs (the weights, the image size, the block statistics), so a stale export is detected, rebuilt and
never used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from socialfeat import __version__
from socialfeat.artifacts import FINGERPRINTS, fingerprint_problem, fingerprints, onnx_session
from socialfeat.atomic import atomic_file, claim_file, write_json
from socialfeat.config import Config, provenance
from socialfeat.errors import UserError, interrupts_held
from socialfeat.features import Encoder, source_config, source_model
from socialfeat.models.heads import FeatureModel, head_key
from socialfeat.runlock import inside, writes_run

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the graph's interface changes: older exports then count as stale
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the first opset torch's dynamo exporter writes itself; below it, it converts and often fails
CROP = (
    "decode, turn upright (EXIF), alpha on white, scale the shorter side to image_size (bicubic), centre-crop "
    "to image_size x image_size; uint8 RGB, NHWC"
)


@dataclass
class ExportResult:
    """A written ONNX export.

    Attributes:
        path: The .onnx file; its sidecar sits beside it with a .json suffix.
        meta: What the sidecar holds: inputs, outputs, image size, the graph's sha256 and the checked difference.
        seconds: Time taken.
    """

    path: Path
    meta: dict[str, Any]
    seconds: float


class _Graph(nn.Module):
    """uint8 NHWC images → (pooled features, head outputs in ``model.targets`` order): the exported interface."""

    def __init__(self, model: FeatureModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled, heads = self.model(images)
        return (pooled, *(heads[t] for t in self.model.targets))


def output_names(model: FeatureModel) -> list[str]:
    """Named as the columns of ``features/<source>.parquet``: ``features`` and ``head_<target>``."""
    return ["features", *(f"head_{head_key(t)}" for t in model.targets)]


def fingerprint(model: FeatureModel, image_size: int) -> str:
    """A hash of every tensor of the model (names, shapes, values), the image size, the block statistics and the
    export format: equal fingerprints mean the exported graph computes what this model computes."""
    h = hashlib.sha256(f"socialfeat-onnx v{FORMAT} size={image_size} block_stats={model.block_stats}\n".encode())
    h.update(json.dumps(model.targets).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def export_path(run: Path, source: str) -> Path:
    return Path(run) / "export" / f"{source}.onnx"


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def prepared_model(config: Config, run: Path, source: str) -> tuple[FeatureModel, int, dict[str, Any]]:
    """The source's model as ``embed`` used it (same image size and block statistics), and its description."""
    cfg, size = source_config(config, run, source)
    model, desc = source_model(run, cfg, source)
    return model.eval(), int(size or desc.get("image_size", config.train.image_size)), desc


@writes_run(lambda a: a["run"] if inside(a["out"], a["run"]) else None)
def export(
    config: Config,
    run: str | os.PathLike[str],
    source: str = "learned",
    out: str | os.PathLike[str] | None = None,
    opset: int | None = None,
) -> ExportResult:
    """Write a source's model as ONNX with its JSON sidecar, atomically.

    The written graph is checked against PyTorch on a random batch before it is kept. Another serving stack can
    then run the model without socialfeat or PyTorch.

    Args:
        config: The run's configuration (the image size and runtime settings come from it).
        run: The run folder.
        source: Which model: ``learned`` (the run's trained model), ``imagenet`` or ``random``.
        out: The .onnx path; default ``RUN/export/<source>.onnx``. It must be new or an earlier export.
        opset: The ONNX opset; default the exporter's choice.

    Returns:
        The graph's path, the sidecar's metadata and the seconds taken.

    Raises:
        UserError: The run is missing, the model is not trained, or ``out`` holds something else.
    """
    run = Path(run)
    if not run.is_dir():
        raise UserError(str(run), "run folder not found")
    target = Path(out) if out else export_path(run, source)
    claim_export(target, "--out" if out else None)
    model, size, desc = prepared_model(config, run, source)
    return _export(model, size, desc, config, run, source, target, opset)


def _is_sidecar(path: Path) -> bool:
    """An export's sidecar (JSON naming the graph's sha256); what sits at an .onnx path is ours when it has one."""
    try:
        meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "onnx_sha256" in meta and "format" in meta


def claim_export(out: Path, flag: str | None = None) -> None:
    """The ``--out`` rule for an export: an .onnx path that is new or an earlier export, and its sidecar likewise."""
    claim_file(out, "ONNX export", suffixes=(".onnx",), ours=_is_sidecar, sidecars=(sidecar_path(out),), flag=flag)


def _export(
    model: FeatureModel,
    size: int,
    desc: dict[str, Any],
    config: Config,
    run: Path,
    source: str,
    out: Path,
    opset: int | None,
) -> ExportResult:
    import onnxruntime as ort  # the export extra; checked by the caller's message below

    t0 = time.perf_counter()
    names = output_names(model)
    opset = check_opset(opset) if opset is not None else DEFAULT_OPSET
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=65536)
    backbone = desc.get("backbone", type(model.backbone).__name__)
    try:
        # the exporter prints its progress, and logs a failed opset conversion with a traceback: neither is ours.
        # A Ctrl-C waits for the export: raised inside its C++ tracing, it aborts the process (std::terminate)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            _quiet_exporter(),
            interrupts_held(),
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _Graph(model),
                (example,),
                dynamo=True,
                input_names=["images"],
                output_names=names,
                dynamic_shapes={"images": {0: batch}},
                opset_version=opset,
                verbose=False,
            )
            data = program.model_proto.SerializeToString()  # type: ignore[union-attr]
    except Exception as e:  # the exporter raises many kinds; the user needs the backbone and the first line
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"backbone {backbone}", f"cannot be exported to ONNX (opset {opset}): {first}") from None
    written = next((o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx")), opset)  # type: ignore[union-attr]
    if written != opset:  # the exporter falls back to the opset it could write, saying so only in its log
        raise UserError(
            "--opset",
            f"torch's exporter could not convert backbone {backbone} to opset {opset} (it "
            f"wrote {written}); use --opset {written}",
        )
    with torch.no_grad():
        reference = [t.numpy() for t in _Graph(model)(example)]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(names, {"images": example.numpy()})
    worst = max(_relative_error(r, g) for r, g in zip(reference, got, strict=True))
    if worst > 1e-3:
        raise UserError(f"backbone {backbone}", f"the ONNX graph differs from PyTorch (relative error {worst:.1e})")
    meta = {
        "format": FORMAT,
        "source": source,
        "backbone": backbone,
        "opset": opset,
        "input": {"name": "images", "dtype": "uint8", "layout": "NHWC", "shape": ["batch", size, size, 3]},
        "image_size": size,
        "crop": CROP,
        "normalisation": "inside the graph",
        "outputs": {n: int(r.shape[1]) for n, r in zip(names, reference, strict=True)},
        "heads": {t: int(r.shape[1]) for t, r in zip(model.targets, reference[1:], strict=True)},
        "block_stats": model.block_stats,
        "fingerprint": fingerprint(model, size),
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "max_relative_error": worst,
        "socialfeat": __version__,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "provenance": provenance(config, "export"),
    }
    with atomic_file(out, "wb") as fh:
        fh.write(data)
    write_json(sidecar_path(out), {**meta, **fingerprints(out.parent, out.name)})
    return ExportResult(out, meta, time.perf_counter() - t0)


@contextlib.contextmanager
def _quiet_exporter() -> Any:
    """The exporter's loggers (torch.onnx, onnxscript) silenced for the export: a failed opset conversion is logged
    with a traceback, which is detected from the written graph instead."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _relative_error(reference: np.ndarray, got: np.ndarray) -> float:
    return float(np.max(np.abs(reference - got)) / max(float(np.max(np.abs(reference))), 1e-12))


@functools.cache
def opset_range() -> tuple[int, int]:
    """The opsets an export can be written in and then run here: from :data:`MIN_OPSET` to the newest that the
    installed onnx converts to and ONNX Runtime loads (it checks a model against the onnx it was built with, which
    may be older). Measured with torch 2.14, onnx 1.23, onnxruntime 1.32: 18 to 28; above, the exporter silently
    kept opset 18 and a sidecar would have claimed the opset asked for."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    high = onnx.defs.onnx_opset_version()
    while high > MIN_OPSET:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", high)], ir_version=8)
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            break
        except Exception:  # noqa: BLE001 - ONNX Runtime's own error types: this opset is beyond it
            high -= 1
    return MIN_OPSET, high


def check_opset(opset: int, where: str = "--opset") -> int:
    """``opset`` when this installation can write and run it, else a UserError naming the range it can."""
    low, high = opset_range()
    if not low <= opset <= high:
        raise UserError(
            where,
            f"expected an opset from {low} to {high} (what torch's exporter and onnxruntime here support), got {opset}",
        )
    return opset


def onnxruntime_available() -> str | None:
    """None when the export extra is installed, else why not (one line)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install 'socialfeat[export]')"
    return None


class OnnxEncoder:
    """An exported graph in ONNX Runtime: a batch of uint8 NHWC images → {features, <target>: head output}, keyed
    as a :class:`FeatureModel`'s outputs are, so every caller treats both runtimes alike."""

    runtime = "onnx"

    def __init__(self, path: Path, meta: dict[str, Any], targets: list[str], threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(threads, 0)
        options.inter_op_num_threads = 1
        self.session = onnx_session(path, options)  # a file ONNX Runtime cannot load: one line naming it
        self.path, self.meta, self.targets = Path(path), meta, list(targets)
        self.names = ["features", *(f"head_{head_key(t)}" for t in self.targets)]
        self.image_size = int(meta["image_size"])
        self.num_features = int(meta["outputs"]["features"])

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        got = self.session.run(self.names, {"images": np.ascontiguousarray(images, dtype=np.uint8)})
        return dict(zip(["features", *self.targets], got, strict=True))


def load_export(path: Path, model: FeatureModel, size: int) -> dict[str, Any] | None:
    """The sidecar of an export that matches ``model`` at ``size`` — or None when it is missing, unreadable, of
    another format, for other weights, or when the ``.onnx`` file is not the one the sidecar describes."""
    return export_state(path, model, size)[0]


def export_state(path: Path, model: FeatureModel, size: int) -> tuple[dict[str, Any] | None, str]:
    """(sidecar, "") of a usable export, else (None, why not): ``missing``, or a phrase for the log that tells a
    stale export (other weights, another format) from a damaged one (a file that is not what its sidecar says)."""
    path, side = Path(path), sidecar_path(path)
    if not path.exists() and not side.exists():
        return None, "missing"
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"is damaged (its sidecar {side.name} is missing or not JSON)"
    if not isinstance(meta, dict):
        return None, f"is damaged (its sidecar {side.name} is not a JSON object)"
    if meta.get("format") != FORMAT or meta.get("fingerprint") != fingerprint(model, size):
        return None, "is stale (the model changed)"
    recorded = meta.get(FINGERPRINTS, {}).get(path.name) if isinstance(meta.get(FINGERPRINTS), dict) else None
    if not isinstance(recorded, dict):
        return None, "is stale (written before exports were fingerprinted)"
    try:
        problem = fingerprint_problem(path, side, recorded)  # the check every opener makes (artifacts.verify)
    except OSError as e:
        return None, f"is damaged ({e.strerror or type(e).__name__})"
    return (None, f"is damaged ({problem})") if problem else (meta, "")


@dataclass
class Inference:
    """What embeds new images for one source, and how: the encoder, its image size, the runtime and the model's
    description."""

    encoder: Encoder
    image_size: int
    runtime: str
    desc: dict[str, Any]


def encoder_for(config: Config, run: Path, source: str, threads: int = 1, runtime: str | None = None) -> Inference:
    """The encoder of new images for ``source``, by ``serve.runtime`` (or ``runtime``): see :func:`runtime_for`.
    The model is the source as ``embed`` last used it (its image size and block statistics)."""
    model, size, desc = prepared_model(config, Path(run), source)
    return runtime_for(model, size, desc, config, Path(run), source, runtime or config.serve.runtime, threads)


def runtime_for(
    model: FeatureModel,
    size: int,
    desc: dict[str, Any],
    config: Config,
    run: Path,
    source: str,
    runtime: str,
    threads: int = 1,
    key: str = "serve.runtime",
) -> Inference:
    """What runs ``model`` at ``size``: ``onnx`` the run's export, made (or remade, when stale) once and cached in
    ``RUN/export/``; ``torch`` the PyTorch model; ``auto`` ONNX when the export extra is installed and the backbone
    exports, else PyTorch, saying why. ``threads``: ONNX Runtime's threads per forward pass (0: all cores); ``key``:
    the setting a refusal names (``serve.runtime``, ``embed.runtime``)."""
    if runtime == "torch":
        return Inference(model, size, "torch", desc)
    missing = onnxruntime_available()
    if missing:
        if runtime == "onnx":
            raise UserError(key, f"onnx: {missing}")
        log.info("%s: PyTorch runtime (%s)", source, missing)
        return Inference(model, size, "torch", desc)
    path = export_path(Path(run), source)
    meta, why = export_state(path, model, size)
    if meta is None:
        if why != "missing":
            log.warning("%s: the ONNX export %s %s; exporting again", source, path, why)
        try:
            meta = _export(model, size, desc, config, Path(run), source, path, None).meta
        except (UserError, OSError) as e:
            if runtime == "onnx":
                raise
            log.warning("%s: PyTorch runtime (%s)", source, e)
            return Inference(model, size, "torch", desc)
    return Inference(OnnxEncoder(path, meta, model.targets, threads), size, "onnx", desc)
