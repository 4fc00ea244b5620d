"""The live catalogue: items added, removed and events logged after the batch run, without a rerun.

``store`` holds them (SQLite, WAL), ``catalogue`` replays them over the batch outputs for every reader, ``foldin``
computes users' and items' vectors from new events, ``embedding`` runs new images through the run's models, and
``tables`` reads the item and event tables ``add`` and ``log`` take.
"""

from socialfeat.live.catalogue import Added, Live, Logged, Upload
from socialfeat.live.store import LiveStore, store_path

__all__ = ["Added", "Live", "LiveStore", "Logged", "Upload", "store_path"]
