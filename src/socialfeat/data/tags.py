"""Item tags (genres, categories): parsing, a vocabulary fixed on one set of items, and multi-hot rows. Shared by
the ``tags`` training target (the seed paper's meta-class) and ``evaluate``'s metadata row."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from socialfeat.artifacts import read_schema, read_table
from socialfeat.errors import UserError


def split_tags(value: Any) -> list[str]:
    """Tags of one item: a list, or a string separated by | , or ; (MovieLens genres arrive as 'Comedy|Romance')."""
    if value is None:
        return []
    parts = value if isinstance(value, list | tuple) else re.split(r"[|,;]", str(value))
    return sorted({str(p).strip().lower() for p in parts if str(p).strip()})


def given_tags(value: str | None, where: str = "--tags") -> list[str] | None:
    """A new item's tags as a person types them, comma separated (``recommend --tags``, the explorer's upload form);
    None when not given. Given but empty is a :class:`UserError`: scoring without them would not be what was asked."""
    if value is None:
        return None
    tags = [t.strip() for t in value.split(",") if t.strip()]
    if not tags:
        raise UserError(where, "no tags given; expected a comma-separated list such as comedy,drama")
    return tags


def item_tags(run: Path) -> dict[int, list[str]] | None:
    """item_idx → tags from ``dataset/items.parquet``; None when the items have no ``tags`` column."""
    path = run / "dataset" / "items.parquet"
    if not path.is_file() or "tags" not in read_schema(path, run=run).names:
        return None
    t = read_table(path, columns=["item_idx", "tags"], run=run)
    pairs = zip(t.column("item_idx").to_pylist(), t.column("tags").to_pylist(), strict=True)
    return {int(i): split_tags(v) for i, v in pairs}


def vocabulary(tags: Sequence[list[str]], limit: int, min_items: int = 1) -> list[str]:
    """The ``limit`` most frequent tags carried by at least ``min_items`` of these items (ties by name)."""
    counts = Counter(tag for item in tags for tag in item)
    ranked = sorted((t for t, c in counts.items() if c >= min_items), key=lambda t: (-counts[t], t))
    return ranked[:limit]


def multi_hot(tags: Sequence[list[str]], vocab: list[str]) -> tuple[np.ndarray, int]:
    """Rows of 0/1 over ``vocab``, and how many tag occurrences fell outside it (counted, then ignored)."""
    column = {tag: c for c, tag in enumerate(vocab)}
    out = np.zeros((len(tags), len(vocab)), np.float32)
    unseen = 0
    for r, item in enumerate(tags):
        for tag in item:
            if tag in column:
                out[r, column[tag]] = 1.0
            else:
                unseen += 1
    return out, unseen


def multi_hot_sparse(tags: Sequence[list[str]], vocab: list[str]) -> tuple[sp.csr_matrix, int]:
    """:func:`multi_hot` as a CSR matrix (float32): a catalogue × 4,096-tag one-hot is mostly zeros."""
    column = {tag: c for c, tag in enumerate(vocab)}
    indptr, indices = [0], []
    unseen = 0
    for item in tags:
        cols = sorted({column[tag] for tag in item if tag in column})
        unseen += sum(tag not in column for tag in item)
        indices.extend(cols)
        indptr.append(len(indices))
    data = np.ones(len(indices), np.float32)
    m = sp.csr_matrix((data, np.asarray(indices, np.int32), np.asarray(indptr, np.int64)), (len(tags), len(vocab)))
    return m, unseen
