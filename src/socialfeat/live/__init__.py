"""The live catalogue: items added, removed and events logged after the batch run, without a rerun.

``store`` holds them (SQLite, WAL), ``catalogue`` replays them over the batch outputs for every reader, ``foldin``
computes users' and items' vectors from new events, ``embedding`` runs new images through the run's models, and
``tables`` reads the item and event tables ``add`` and ``log`` take.

The names below load on first use: ``ingest`` and ``run`` read the store (``socialfeat.live.store``) without paying
for the models the catalogue imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Added": "catalogue",
    "Live": "catalogue",
    "Logged": "catalogue",
    "Upload": "catalogue",
    "LiveStore": "store",
    "store_path": "store",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'socialfeat.live' has no attribute {name!r}")
    return getattr(importlib.import_module(f"socialfeat.live.{_WHERE[name]}"), name)


__all__ = ["Added", "Live", "LiveStore", "Logged", "Upload", "store_path"]
