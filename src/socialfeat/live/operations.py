"""The live commands as functions: what ``socialfeat add``, ``remove`` and ``log`` call (the CLI only parses)."""

from __future__ import annotations

import os
from pathlib import Path

from socialfeat.config import Config
from socialfeat.errors import UserError
from socialfeat.live.catalogue import Added, Live, Logged
from socialfeat.live.tables import read_events, read_items


def _run(run: str | os.PathLike[str]) -> Path:
    run = Path(run)
    if not (run / "factors" / "metrics.json").is_file() or not (run / "dataset" / "items.parquet").is_file():
        raise UserError(str(run), "not a finished run (no factors/ or dataset/); run `socialfeat run` first")
    return run


def add_items(
    config: Config,
    run: str | os.PathLike[str],
    items: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    replace: bool = False,
    k: int | None = None,
) -> list[Added]:
    """Add the items of a table (ingest's item format) to a run's live catalogue; images are found under
    ``image_root``, else beside the table, as ingest finds them."""
    run = _run(run)
    rows = read_items(Path(items), config.ingest)
    root = Path(image_root) if image_root is not None else Path(items).absolute().parent
    if not root.is_dir():
        raise UserError("--image-root", f"'{root}' is not a folder")
    live = Live(config, run)
    return live.add(rows, root, replace=replace, where=str(items), k=k or config.index.k)


def remove_items(config: Config, run: str | os.PathLike[str], ids: list[str]) -> list[str]:
    """Take items out of a run's search and recommendations (they keep their events for the next batch run)."""
    if not ids:
        raise UserError("ID", "give at least one item id")
    return Live(config, _run(run)).remove(ids)


def log_events(config: Config, run: str | os.PathLike[str], events: str | os.PathLike[str]) -> Logged:
    """Store the events of a table (ingest's interaction format) and fold them in at once."""
    run = _run(run)
    rows = read_events(Path(events), config.ingest)
    return Live(config, run).log(rows, where=str(events))
