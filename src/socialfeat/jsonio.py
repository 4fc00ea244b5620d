"""JSON as the standard defines it: no ``NaN`` or ``Infinity`` in any file socialfeat writes.

Python's ``json`` writes a float NaN as the bare word ``NaN``, which strict parsers (JavaScript, jq, DuckDB's
``read_json``) refuse. A metric that cannot be computed — an AUC over no eligible user — is written as ``null``
instead, and every reader treats ``null`` as "not scored". :func:`dumps` writes with ``allow_nan=False`` after
that replacement, so a non-finite value that slips past it fails loudly instead of writing a broken file.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (Python or numpy) replaced by None, numpy scalars and arrays made
    plain Python values, and tuples made lists (as JSON has them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):  # a numpy scalar or array
        return finite(obj.tolist())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(obj)``, strict: ``allow_nan=False``; other values by ``str``."""
    return json.dumps(finite(obj), allow_nan=False, default=str, **kwargs)


def json_lines(records: list[Any]) -> str:
    """One strict JSON value per line (``metrics.jsonl``)."""
    return "".join(dumps(r) + "\n" for r in records)
