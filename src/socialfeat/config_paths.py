"""The files a config names, and where a relative one points: a config a user writes is read from the folder the
command runs in (``configs/movielens.yaml`` names ``../shared/...`` from the repository root); a config socialfeat
records (``RUN/config.yaml``, a stage's ``config.yaml``) must name the same files from any folder. ``run`` records
its config with paths relative to the config file and a header saying so; stages record theirs absolute."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

PATH_KEYS = ("ingest.interactions", "ingest.items", "ingest.comments", "ingest.image_root", "split.cold_items",
             "evaluate.labels", "train.weights")  # fmt: skip
SET_PATH_KEYS = ("labels", "image_root")  # of each transfer.sets entry
NAMED_WEIGHTS = ("imagenet", "random")  # train.weights values that are not files
RELATIVE_HEADER = "# written by socialfeat: relative paths below are relative to this file's folder\n"


def map_paths(data: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """``data`` (a config as JSON data; sections may be absent) with ``change`` applied to every file path in it."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        values = data.get(section)
        if isinstance(values, dict) and isinstance(values.get(name), str) and values[name] not in NAMED_WEIGHTS:
            values[name] = change(values[name])
    transfer = data.get("transfer")
    sets = transfer.get("sets") if isinstance(transfer, dict) else None
    for entry in sets if isinstance(sets, list) else []:
        if isinstance(entry, dict):
            entry.update({k: change(entry[k]) for k in SET_PATH_KEYS if isinstance(entry.get(k), str)})
    return data


def absolute(path: str) -> str:
    """A path as the current folder reads it, made absolute."""
    return os.path.abspath(path)


def relative_to(folder: str | os.PathLike[str]) -> Callable[[str], str]:
    """Paths (read from the current folder) rewritten relative to ``folder``."""
    base = os.path.abspath(folder)
    return lambda p: os.path.relpath(os.path.abspath(p), base)


def resolved_from(folder: str | os.PathLike[str]) -> Callable[[str], str]:
    """Paths relative to ``folder`` made absolute: how a recorded config's paths are read."""
    base = Path(folder).absolute()
    return lambda p: os.path.normpath(base / p)
