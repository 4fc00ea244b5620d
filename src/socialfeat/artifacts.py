"""A run's files as things one command writes: which command rewrites each, and readers that turn a missing,
truncated or garbage file into one line naming it and that command, instead of a parser's traceback.

``runs/x/features/learned.parquet: is damaged (not a Parquet file); rerun: socialfeat embed runs/x --source learned``

Every command named is safe to run as printed: it rewrites only the stage output it names (atomically, and under
the ``--out`` rule), and its inputs come from the run or from the config that stage recorded. The readers here wrap
the load calls of pyarrow, safetensors, faiss, ONNX Runtime and ``json`` alone, so a bug in the code that uses what
they return still keeps its traceback. This module sits on the lowest floor (it imports only ``errors``): every
stage, the report and the explorer use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shlex
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from socialfeat.errors import UserError

# The folders of a run (ARCHITECTURE.md, "Run directory") and the stage that writes each.
STAGE_FOLDERS = {
    "dataset": "ingest",
    "factors": "factorize",
    "targets": "targets",
    "model": "train",
    ".train": "train",
    "meta-class": "train",
    ".train-meta-class": "train",
    "features": "embed",
    "content": "content",
    "eval": "evaluate",
    "export": "export",
    "cache": "",  # image caches: rebuilt by whichever stage reads a damaged one, so no command to name
}
FORMATS = {".parquet": "Parquet", ".json": "JSON", ".safetensors": "safetensors", ".faiss": "faiss", ".onnx": "ONNX"}
MAX_REASON = 160  # a parser's message is cut here: the line is for a person, the file is what matters


# ---------------------------------------------------------------------------------------------------- which command
def locate(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> tuple[Path, PurePosixPath]:
    """(run folder, path inside it) of a run's file: ``run`` when given, else the folder above the nearest stage
    folder (``dataset/``, ``features/``, …) on the path. Raises ValueError for a path in no run."""
    path = Path(path)
    if run is not None:
        return Path(run), PurePosixPath(path.relative_to(run).as_posix())
    for parent in path.parents:
        if parent.name in STAGE_FOLDERS:
            return parent.parent, PurePosixPath(path.relative_to(parent.parent).as_posix())
    raise ValueError(f"{path} is not inside a run's stage folder")


def _q(path: str | os.PathLike[str]) -> str:
    return shlex.quote(str(path))


def _recorded_config(path: Path, needs: str | None = None) -> Path | None:
    """``path`` when it is a config a stage recorded (a YAML mapping; with ``needs`` = ``section.key`` set)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    if needs is not None:
        section, key = needs.split(".")
        if not isinstance(data.get(section), dict) or not data[section].get(key):
            return None
    return path


def _with_config(run: Path, folder: str) -> str:
    """`` -c RUN/<folder>/config.yaml`` when that stage recorded its resolved config: the rerun then makes what
    the rest of the run was built from (the factors' width, the backbone), not the defaults."""
    found = _recorded_config(run / folder / "config.yaml")
    return f" -c {_q(found)}" if found is not None else ""


def ingest_command(run: str | os.PathLike[str]) -> str:
    """``ingest`` into ``RUN/dataset``: with the config that ingest (or ``run``) recorded, which names the input
    files; else with placeholders for them (which fail harmlessly if typed as printed)."""
    run = Path(run)
    out = _q(run / "dataset")
    for candidate in (run / "dataset" / "config.yaml", run / "config.yaml"):
        if (found := _recorded_config(candidate, "ingest.interactions")) is not None:
            return f"socialfeat ingest -c {_q(found)} --out {out}"
    return f"socialfeat ingest --interactions INTERACTIONS --items ITEMS --out {out}"


def rerun_command(run: str | os.PathLike[str], rel: str | PurePosixPath) -> str | None:
    """The command that rewrites ``rel`` (a path inside the run, e.g. ``features/learned.parquet``), or None for
    a file no stage writes."""
    run, rel = Path(run), PurePosixPath(rel)
    if not rel.parts:
        return None
    top, name, r = rel.parts[0], rel.name, _q(run)
    if top == "dataset":
        return ingest_command(run)
    if top in ("factors", "targets", "content"):
        return f"socialfeat {STAGE_FOLDERS[top]} {r}{_with_config(run, top)}"
    if top == "model":
        return f"socialfeat train {r}{_with_config(run, 'model')}"
    if top == ".train":  # a damaged checkpoint cannot be resumed: train afresh, with the settings it recorded
        return f"socialfeat train {r}{_with_config(run, '.train/checkpoint') or _with_config(run, 'model')}"
    if top in ("meta-class", ".train-meta-class"):
        return f"socialfeat train {r} --meta-class{_with_config(run, 'meta-class')}"
    if top == "eval":
        if name.startswith("transfer-") and name.endswith(".json"):
            return f"socialfeat transfer {r} --name {_q(name[len('transfer-') : -len('.json')])} --labels LABELS"
        return f"socialfeat evaluate {r}{_with_config(run, 'eval')}"
    if top == "export" and len(rel.parts) == 2:
        return f"socialfeat export {r} --source {_q(name.split('.')[0])}"
    if top == "features" and len(rel.parts) == 2:
        source, _, rest = name.partition(".")
        if name.endswith((".faiss", ".faiss.json")):
            column = rest.removesuffix(".json").removesuffix("faiss").removesuffix(".")
            return f"socialfeat index {r} --source {_q(source)}" + (f" --column {_q(column)}" if column else "")
        return f"socialfeat embed {r} --source {_q(source)}"
    return None


def _hint(path: Path, run: str | os.PathLike[str] | None, verb: str) -> str:
    try:
        command = rerun_command(*locate(path, run))
    except ValueError:
        return ""
    return f"; {verb}: {command}" if command else ""


def damaged(path: str | os.PathLike[str], reason: str, run: str | os.PathLike[str] | None = None) -> UserError:
    """The one-line error for a file that is there but cannot be used: what is wrong, and the rerun."""
    path = Path(path)
    return UserError(str(path), f"is damaged ({reason}){_hint(path, run, 'rerun')}")


def missing(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> UserError:
    """The one-line error for a run file that is not there: the missing stage folder (or file), and the command
    that makes it."""
    path = Path(path)
    try:
        root, rel = locate(path, run)
    except ValueError:
        return UserError(str(path), "not found")
    folder = root / rel.parts[0]
    if not root.is_dir():  # no run at all: it starts with its dataset
        return UserError(str(root), f"run folder not found; start it with: {ingest_command(root)}")
    shown = path if folder.is_dir() else folder
    command = rerun_command(root, rel)
    return UserError(str(shown), "not found" + (f"; make it with: {command}" if command else ""))


# ---------------------------------------------------------------------------------------------------- readers
def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _reason(path: Path, kind: str, e: BaseException) -> str:
    """A short why: an empty file and a wrong format say so; anything else gives the parser's first words."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            return "empty file"
    text = str(e)
    if kind == "Parquet" and ("magic bytes" in text or "Parquet file size is 0" in text):
        return "not a Parquet file"
    if kind == "safetensors" and "header" in text:
        return f"not a safetensors file: {_first_line(e)}"
    if kind == "faiss" and ("not recognized" in text or "read error" in text.lower()):
        return "not a faiss index"
    if kind == "ONNX" and ("Protobuf parsing failed" in text or "INVALID_PROTOBUF" in text):
        return "not an ONNX model"
    if isinstance(e, pickle.UnpicklingError):  # torch's own text advises weights_only=False: running the file's code
        return (
            "holds pickled Python objects, which socialfeat will not load; expected tensors only, as socialfeat writes"
        )
    if kind == "JSON" and isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    if kind == "JSON" and isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
    return _first_line(e)


def _load_errors() -> tuple[type[BaseException], ...]:
    """What the loaders raise for a bad file: pyarrow's errors (ValueError, OSError subclasses), safetensors',
    faiss's (RuntimeError), ``json``'s (ValueError), YAML's, torch.load's. Read lazily: safetensors is imported
    only when it is used."""
    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, EOFError, yaml.YAMLError]
    errors.append(pickle.UnpicklingError)  # torch.load of a training checkpoint's state
    with contextlib.suppress(ImportError):
        import pyarrow as pa

        errors.append(pa.ArrowException)
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    return tuple(errors)


@contextlib.contextmanager
def reading(
    path: str | os.PathLike[str], kind: str | None = None, run: str | os.PathLike[str] | None = None
) -> Iterator[Path]:
    """Around the load of one run file: missing → :func:`missing`; a load error → :func:`damaged`. A permission
    error is not damage: it says so, and names no rerun."""
    path = Path(path)
    kind = kind or FORMATS.get(path.suffix, path.suffix.lstrip(".") or "file")
    if not path.exists():
        raise missing(path, run)
    if path.is_dir():
        raise UserError(str(path), f"is a folder; expected a {kind} file")
    try:
        yield path
    except UserError:
        raise
    except PermissionError as e:
        raise UserError(str(path), f"cannot be read ({e.strerror or 'permission denied'})") from None
    except FileNotFoundError:
        raise missing(path, run) from None
    except _load_errors() as e:
        raise damaged(path, _reason(path, kind, e), run) from None
    except Exception as e:  # ONNX Runtime's errors are plain Exception subclasses of its own module
        if type(e).__module__.startswith("onnxruntime"):
            raise damaged(path, _reason(path, kind, e), run) from None
        raise


def read_table(
    path: str | os.PathLike[str],
    columns: list[str] | None = None,
    run: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """``pyarrow.parquet.read_table`` of a run file; a file without one of ``columns`` is damaged too (written by
    another version, or not by socialfeat)."""
    import pyarrow.parquet as pq

    with reading(path, "Parquet", run) as p:
        if columns is not None:
            require_columns(p, columns, run)
        return pq.read_table(p, columns=columns, **kwargs)


def require_columns(path: Path, columns: list[str], run: str | os.PathLike[str] | None = None) -> None:
    """A run's Parquet file without one of ``columns`` is damaged (written by another version, or not by
    socialfeat); call inside :func:`reading`."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    absent = [c for c in columns if c not in names]
    if absent:
        raise damaged(path, f"no column {', '.join(repr(c) for c in absent)}", run)


def read_schema(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> Any:
    """``pyarrow.parquet.read_schema`` of a run file."""
    import pyarrow.parquet as pq

    with reading(path, "Parquet", run) as p:
        return pq.read_schema(p)


def read_json(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> Any:
    """A run's JSON file, parsed."""
    with reading(path, "JSON", run) as p:
        return json.loads(p.read_text(encoding="utf-8"))


def read_json_lines(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> list[Any]:
    """A run's JSON Lines file (``model/metrics.jsonl``), one parsed value per non-blank line."""
    with reading(path, "JSON Lines", run) as p:
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_safetensors(
    path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None, framework: str = "pt"
) -> dict[str, Any]:
    """The tensors of a run's ``.safetensors`` file: torch tensors (``pt``) or numpy arrays (``numpy``)."""
    with reading(path, "safetensors", run) as p:
        if framework == "numpy":
            from safetensors.numpy import load_file
        else:
            from safetensors.torch import load_file
        return load_file(str(p))


def read_faiss(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> Any:
    """A run's faiss index."""
    import faiss

    with reading(path, "faiss", run) as p:
        return faiss.read_index(str(p))


def onnx_session(path: str | os.PathLike[str], options: Any = None, run: str | os.PathLike[str] | None = None) -> Any:
    """An ONNX Runtime session (CPU) over a run's ``.onnx`` export."""
    import onnxruntime as ort

    with reading(path, "ONNX", run) as p:
        return ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
