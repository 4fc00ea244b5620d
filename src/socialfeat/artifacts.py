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
import hashlib
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
    """A path as a hint prints it: absolute (so the hint works from any folder) and shell-quoted."""
    return shlex.quote(os.path.abspath(path))


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


def run_config(run: Path, *folders: str, needs: str | None = None) -> Path | None:
    """The first config the run recorded among ``RUN/<folder>/config.yaml`` (``""``: ``RUN/config.yaml``, which
    ``run`` writes): what a rerun must be built with so that it makes what the rest of the run was built from (the
    factors' width, the backbone, the seed), not the defaults."""
    for folder in folders:
        found = _recorded_config(Path(run) / folder / "config.yaml", needs)
        if found is not None:
            return found
    return None


def command(*words: str | os.PathLike[str], config: Path | None = None) -> str:
    """Every hint socialfeat prints: ``socialfeat <words> [-c CONFIG]``, paths absolute and quoted, so it works as
    printed from any folder and rebuilds with the run's own settings. Words that are paths are given as Path."""
    parts = ["socialfeat", *(_q(w) if isinstance(w, Path) else shlex.quote(str(w)) for w in words)]
    if config is not None:
        parts += ["-c", _q(config)]
    return " ".join(parts)


def ingest_command(run: str | os.PathLike[str]) -> str:
    """``ingest`` into ``RUN/dataset``: with the config that ingest (or ``run``) recorded, which names the input
    files; else with placeholders for them (which fail harmlessly if typed as printed)."""
    run = Path(run)
    found = run_config(run, "dataset", "", needs="ingest.interactions")
    if found is not None:
        return f"socialfeat ingest -c {_q(found)} --out {_q(run / 'dataset')}"
    return f"socialfeat ingest --interactions INTERACTIONS --items ITEMS --out {_q(run / 'dataset')}"


def no_images_hint(run: str | os.PathLike[str]) -> str:
    """How to give a dataset ingested without ``--items`` its images: ingest again, with an items table."""
    run = Path(run)
    found = run_config(run, "dataset", "", needs="ingest.interactions")
    start = (
        f"socialfeat ingest -c {_q(found)}" if found is not None else "socialfeat ingest --interactions INTERACTIONS"
    )
    return f"ingest again with a table of item_id,image: {start} --items ITEMS --out {_q(run / 'dataset')}"


def resume_command(run: str | os.PathLike[str], name: str = "model") -> str:
    """``train --resume`` of an interrupted training, with the config its checkpoint recorded: the settings a
    resume must match (the backbone, the seed), whatever the defaults are now."""
    run = Path(run)
    work = ".train" if name == "model" else f".train-{name}"
    found = run_config(run, f"{work}/checkpoint", name, "")
    flags = ["--meta-class"] if name == "meta-class" else []
    return command("train", run, *flags, "--resume", config=found)


def pipeline_command(run: str | os.PathLike[str]) -> str:
    """``run`` again on a run folder, with the config it recorded (``RUN/config.yaml``)."""
    run = Path(run)
    return f"socialfeat run {_q(run / 'config.yaml')} --run {_q(run)}"


# The configs a stage's rerun takes, first found first: its own record, then the run's, then the model's (which
# holds the whole config that trained it: the backbone and the seed that the random and imagenet sources follow).
_CONFIGS = {
    "factors": ("factors", ""),
    "targets": ("targets", "factors", ""),
    "content": ("content", ""),
    "model": ("model", "", ".train/checkpoint"),
    ".train": (".train/checkpoint", "model", ""),
    "meta-class": ("meta-class", "", ".train-meta-class/checkpoint", "model"),
    "eval": ("eval", "", "model"),
    "features": ("", "model", "factors"),
    "export": ("", "model"),
}


def rerun_command(run: str | os.PathLike[str], rel: str | PurePosixPath) -> str | None:
    """The command that rewrites ``rel`` (a path inside the run, e.g. ``features/learned.parquet``), or None for
    a file no stage writes. It carries the config the run recorded (see :data:`_CONFIGS`)."""
    run, rel = Path(run), PurePosixPath(rel)
    if not rel.parts:
        return None
    top, name = rel.parts[0], rel.name
    if top == "dataset":
        return ingest_command(run)
    if top in ("meta-class", ".train-meta-class"):
        return command("train", run, "--meta-class", config=run_config(run, *_CONFIGS["meta-class"]))
    config = run_config(run, *_CONFIGS.get(top, ()))
    if top in ("factors", "targets", "content"):
        return command(STAGE_FOLDERS[top], run, config=config)
    if top in ("model", ".train"):  # a damaged checkpoint cannot be resumed: train afresh, as it was set up
        return command("train", run, config=config)
    if top == "eval":
        if name.startswith("transfer-") and name.endswith(".json"):
            words = ["transfer", run, "--name", name[len("transfer-") : -len(".json")]]
            return command(*words, config=config) + " --labels LABELS"
        return command("evaluate", run, config=config)
    if top == "export" and len(rel.parts) == 2:
        return command("export", run, "--source", name.split(".")[0], config=config)
    if top == "features" and len(rel.parts) == 2:
        source, _, rest = name.partition(".")
        if source in ("learned", "meta-class"):  # embedded by the run's own model: the config that trained it
            config = run_config(run, "model" if source == "learned" else "meta-class", *_CONFIGS["features"])
        if name.endswith((".faiss", ".faiss.json")):
            column = rest.removesuffix(".json").removesuffix("faiss").removesuffix(".")
            words = ["index", run, "--source", source, *(["--column", column] if column else [])]
            return command(*words, config=config)
        return command("embed", run, "--source", source, config=config)
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


# ---------------------------------------------------------------------------------------------------- fingerprints
FINGERPRINTS = "fingerprints"  # the sidecar key: {file name: {"bytes": size, "sha256": hex digest}}
FINGERPRINTED = ("Parquet", "safetensors", "faiss", "ONNX")  # the kinds checked at open, when a sidecar records one
# (device, inode, size, mtime, ctime) → digest: a file is hashed once a process, and again after any write (which
# moves its ctime, even when the size and the mtime are put back). Not keyed by path: a stage's outputs hashed in
# its temporary folder are not hashed again once that folder is renamed into place (a rename keeps all five)
_VERIFIED: dict[tuple[int, int, int, int, int], str] = {}


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size and sha256 of a whole file: any changed byte shows. The cost is one read of the file, once a process
    (not benchmarked yet: the open of a 2.2 GB index at 423K pays it)."""
    path = Path(path)
    st = path.stat()
    return {"bytes": st.st_size, "sha256": _sha256(path, st)}


def _sha256(path: Path, st: os.stat_result) -> str:
    """The file's sha256, hashed once per file state (:data:`_VERIFIED`): what a writer records and an opener checks."""
    key = _key(st)
    if key not in _VERIFIED:
        with path.open("rb") as fh:
            _VERIFIED[key] = hashlib.file_digest(fh, "sha256").hexdigest()
    return _VERIFIED[key]


def fingerprints(folder: str | os.PathLike[str], *names: str) -> dict[str, Any]:
    """``{"fingerprints": {name: fingerprint}}`` of the files ``names`` in ``folder`` that exist: what a writer
    merges into the sidecar it writes after them."""
    folder = Path(folder)
    return {FINGERPRINTS: {n: file_fingerprint(folder / n) for n in names if (folder / n).is_file()}}


def parquet_fingerprints(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`fingerprints` of every Parquet file a stage wrote into ``folder``: what ingest, factorize and targets
    merge into the summary they write beside them (see :data:`SUMMARIES`)."""
    folder = Path(folder)
    return fingerprints(folder, *sorted(p.name for p in folder.glob("*.parquet")))


def _key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


# The summary a stage writes beside the Parquet files of its folder, which records their fingerprints: ingest's
# stats.json (dataset/, whatever --out named it), factorize's metrics.json, targets' summary.json.
SUMMARIES = ("stats.json", "metrics.json", "summary.json")


def sidecars(path: Path) -> list[Path]:
    """Where a fingerprint of ``path`` is recorded: ``X.faiss.json``, an export's ``X.json``, a feature source's
    ``features/<source>.json`` (its single file or every rank part), a model folder's ``model.json`` (the content
    model's too), a checkpoint's ``position.json``, a stage folder's summary (:data:`SUMMARIES`). The one place
    that maps a file to its sidecar: every check at open and :func:`check_intact` go through it."""
    source = path.name.split(".")[0]
    return [
        path.with_name(path.name + ".json"),
        path.with_suffix(".json"),
        path.with_name(f"{source}.json"),
        path.with_name("model.json"),
        path.with_name("position.json"),
        *(path.with_name(name) for name in SUMMARIES),
    ]


def recorded_fingerprint(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """(sidecar, fingerprint) that a sidecar of ``path`` recorded, or None (written before fingerprints, or by
    something else; a sidecar that cannot be read is left to its own reader to report)."""
    for side in dict.fromkeys(sidecars(path)):
        if side == path or not side.is_file():
            continue
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found = meta.get(FINGERPRINTS, {}).get(path.name) if isinstance(meta, dict) else None
        if isinstance(found, dict):
            return side, found
    return None


def fingerprint_problem(path: Path, side: Path, recorded: dict[str, Any]) -> str | None:
    """Why ``path`` is not the file its sidecar ``side`` recorded, or None when it is."""
    st, size = path.stat(), recorded.get("bytes")
    if st.st_size != size:
        return f"{st.st_size:,} bytes where {side.name} recorded {size:,}" if isinstance(size, int) else "no size"
    if _sha256(path, st) != recorded.get("sha256"):
        return f"its sha256 is not the one {side.name} recorded"
    return None


def verify(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> None:
    """The one check every opener makes (through :func:`reading`): a file whose sidecar recorded a fingerprint must
    still match it, else it is damaged, with the command that rebuilds it. A file without one (written before
    fingerprints) is read as before; indexes and exports without one are rebuilt by their own staleness rule."""
    path = Path(path)
    found = recorded_fingerprint(path)
    if found is not None and (problem := fingerprint_problem(path, *found)) is not None:
        raise damaged(path, problem, run)


def check_intact(path: str | os.PathLike[str], run: str | os.PathLike[str] | None = None) -> None:
    """Refuse a run file that is damaged — not its recorded fingerprint, or a Parquet footer, safetensors header or
    JSON text that does not parse — without loading it: so a damaged input is called damaged, not "newer"."""
    path = Path(path)
    kind = FORMATS.get(path.suffix)
    if kind is None or not path.is_file():
        return
    with reading(path, kind, run) as p:
        if kind == "Parquet":
            import pyarrow.parquet as pq

            pq.read_schema(p)
        elif kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(p), "np") as f:
                f.keys()
        elif kind == "JSON":
            json.loads(p.read_text(encoding="utf-8"))


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
    """Around the load of one run file: missing → :func:`missing`; a file that differs from the fingerprint its
    sidecar recorded, or a load error → :func:`damaged`. A permission error is not damage: it says so, and names
    no rerun."""
    path = Path(path)
    kind = kind or FORMATS.get(path.suffix, path.suffix.lstrip(".") or "file")
    if not path.exists():
        raise missing(path, run)
    if path.is_dir():
        raise UserError(str(path), f"is a folder; expected a {kind} file")
    try:
        if kind in FINGERPRINTED:
            verify(path, run)
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
