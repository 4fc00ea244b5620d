"""Held-out data for honest metrics: cold items (never trained on) and per-user leave-k-out.

Random choices come from a hash of (seed, ids), not from a generator walked in row order, so the
same seed gives the same split however the dataset's rows happen to be ordered.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from socialfeat.config import SplitConfig
from socialfeat.data.contract import check_id_column, open_table, quote
from socialfeat.errors import UserError

SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = range(3)


def hash_keys(*arrays: np.ndarray, seed: int = 0) -> np.ndarray:
    """Uniform pseudo-random uint64 per position, a function of the values only (splitmix64 mixing)."""
    with np.errstate(over="ignore"):
        h = np.full(len(arrays[0]), np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1), dtype=np.uint64)
        for a in arrays:
            h ^= (
                np.asarray(a).astype(np.uint64)
                + np.uint64(0x9E3779B97F4A7C15)
                + (h << np.uint64(6))
                + (h >> np.uint64(2))
            )
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
    return h


def uniform(*arrays: np.ndarray, seed: int = 0) -> np.ndarray:
    """Floats in [0, 1) from :func:`hash_keys`."""
    return (hash_keys(*arrays, seed=seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def item_splits(item_ids: list[object], cfg: SplitConfig, seed: int) -> tuple[np.ndarray, dict[str, int]]:
    """Split code per item index (TRAIN, VALID or TEST) from ``cfg.cold_items`` or ``cfg.cold_fraction``.

    Returns the codes and counts to report (including file rows that match no item).
    """
    n = len(item_ids)
    codes = np.zeros(n, dtype=np.int8)
    info: dict[str, int] = {}
    if cfg.cold_items is not None:
        codes, info = _splits_from_file(cfg.cold_items, item_ids)
    elif cfg.cold_fraction > 0:
        idx = np.arange(n)
        cold = uniform(idx, seed=seed) < cfg.cold_fraction
        valid = uniform(idx, seed=seed + 1) < cfg.cold_valid_share
        codes[cold & valid] = VALID
        codes[cold & ~valid] = TEST
    info.update({name: int((codes == code).sum()) for code, name in enumerate(SPLITS)})
    return codes, info


def _splits_from_file(path: Path, item_ids: list[object]) -> tuple[np.ndarray, dict[str, int]]:
    con = duckdb.connect()
    try:
        t = open_table(con, path, None, "split_src")
        lacking = [c for c in ("item_id", "split") if c not in t.columns]
        if lacking:  # no flag maps these columns: the file's header must name them
            raise UserError(
                str(path),
                f"no column {' or '.join(repr(c) for c in lacking)} (found: {', '.join(t.columns) or 'none'}); "
                "a split file (split.cold_items, --cold-items) has the columns item_id and split (train, valid or "
                "test): rename its header",
            )
        check_id_column(con, t, "item_id")  # ids as their literal text, as ingest read them
        rows = con.execute(
            f"SELECT CAST({quote('item_id')} AS VARCHAR), CAST({quote('split')} AS VARCHAR) FROM {t.view}"
        ).fetchall()
    finally:
        con.close()
    lookup = {str(item): idx for idx, item in enumerate(item_ids)}
    codes = np.zeros(len(item_ids), dtype=np.int8)
    unknown = 0
    for row_number, (item, split) in enumerate(rows, start=1):
        if split not in SPLITS:
            raise UserError(str(path), f"row {t.line(row_number)}: split {split!r}; expected one of train, valid, test")
        idx = lookup.get(str(item))
        if idx is None:
            unknown += 1
            continue
        codes[idx] = SPLITS.index(split)
    listed = len(rows) - unknown
    if listed == 0:
        raise UserError(str(path), "no item id in this file is in the dataset; is it the split of another data set?")
    return codes, {"file_rows_not_in_dataset": unknown, "items_not_in_file": len(item_ids) - listed}


def leave_k_out(
    users: np.ndarray, items: np.ndarray, times: np.ndarray | None, cfg: SplitConfig, seed: int
) -> np.ndarray:
    """Mask of the pairs held out: per user the ``leave_out`` latest (by ``times``; ties and missing
    times broken at random), only for users who keep at least ``min_train`` pairs for training.

    Memory is a sort key and its order (two 64-bit arrays), whatever the number of pairs.
    """
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=bool)
    random_key = hash_keys(users, items, seed=seed)
    if times is None:  # one packed key: user in the high 32 bits, randomness in the low 32
        key = (users.astype(np.uint64) << np.uint64(32)) | (random_key >> np.uint64(32))
        del random_key
        order = np.argsort(key)
        del key
    else:
        order = np.lexsort((random_key, -times.astype(np.int64), users))
        del random_key
    counts = np.bincount(users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    eligible = np.flatnonzero(counts >= cfg.leave_out + cfg.min_train)
    positions = (starts[eligible][:, None] + np.arange(cfg.leave_out)[None, :]).ravel()
    held = np.zeros(n, dtype=bool)
    held[order[positions]] = True
    return held


def read_split(run: Path) -> dict[object, str]:
    """item id → train | valid | test as factorize wrote it (valid and test are the cold items); empty before
    factorize has run."""
    from socialfeat.artifacts import read_table

    path = Path(run) / "factors" / "item_split.parquet"
    if not path.is_file():
        return {}
    table = read_table(path, columns=["item_id", "split"], run=run)
    return dict(zip(table.column("item_id").to_pylist(), table.column("split").to_pylist(), strict=True))
