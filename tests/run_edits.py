"""Edits a test makes to a run's files as if the stage that owns them had made them: the fingerprint the sidecar
records follows the new bytes, and both files keep their modification times (so no freshness check sees a newer
input). A test that means damage edits the bytes alone (see ``tests/test_fingerprints.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from socialfeat.artifacts import FINGERPRINTS, file_fingerprint, recorded_fingerprint


def keep_time(path: Path, write: Any) -> None:
    """Call ``write()`` (which rewrites ``path``), then put ``path``'s modification time back."""
    st = path.stat()
    write()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def rerecord(path: Path) -> None:
    """Record ``path``'s current bytes in the sidecar that fingerprints it (none: nothing to do)."""
    found = recorded_fingerprint(path)
    if found is None:
        return
    side = found[0]
    meta = json.loads(side.read_text())
    meta[FINGERPRINTS][path.name] = file_fingerprint(path)
    keep_time(side, lambda: side.write_text(json.dumps(meta)))


def rewrite_table(path: Path, table: Any, **kwargs: Any) -> None:
    """``pq.write_table`` over a run's Parquet file, as its stage would have written it."""
    keep_time(path, lambda: pq.write_table(table, path, **kwargs))
    rerecord(path)
