"""Paired bootstrap over users: how sure a mean per-user AUC is, and whether two sources differ beyond noise.

Every row (feature source, reference) is scored on the same users, so one resample of the users serves every row:
a difference between two rows is taken within each resample (paired), which removes the users' shared difficulty
from its spread. Intervals are the 2.5th and 97.5th percentiles of the resampled means.

Resample b draws U users with replacement as ⌊U·u⌋ of U uniform doubles taken in order from one seeded generator,
so the draw does not depend on how the resamples are chunked; the draws become counts (a bincount per resample) and
all resampled means are one float32 product (resamples × users) @ (users × rows) per chunk — no Python loop over the
resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

LEVEL = 0.95
CHUNK_CELLS = 4_000_000  # resamples × users drawn at once (≈ 32 MB of doubles, the same again of counts)


def resampled_means(per_user: np.ndarray, resamples: int, seed: int | Sequence[int]) -> np.ndarray:
    """(resamples × rows) means of ``per_user`` (users × rows) over resampled users, the same resample for every
    row; a NaN entry (a metric undefined for that user) is left out of its row's mean."""
    a = np.asarray(per_user, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"per_user must be users × rows, got shape {a.shape}")
    n_users, n_rows = a.shape
    out = np.full((resamples, n_rows), np.nan)
    if n_users == 0 or resamples == 0:
        return out
    finite = np.isfinite(a)
    values = np.where(finite, a, np.float32(0))
    weights = None if finite.all() else finite.astype(np.float32)
    rng = np.random.default_rng(seed)
    step = max(1, CHUNK_CELLS // n_users)
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        picks = (rng.random((b, n_users)) * n_users).astype(np.int64)
        np.minimum(picks, n_users - 1, out=picks)  # u·U rounds up to U only for u within an ulp of 1
        picks += (np.arange(b) * n_users)[:, None]
        counts = np.bincount(picks.ravel(), minlength=b * n_users).reshape(b, n_users).astype(np.float32)
        totals = counts @ values
        if weights is None:
            out[start : start + b] = totals / n_users
        else:
            n = counts @ weights
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start : start + b] = np.where(n > 0, totals / np.maximum(n, 1), np.nan)
    return out


def interval(samples: np.ndarray, level: float = LEVEL) -> list[float | None]:
    """[lo, hi]: the percentile interval of the finite ``samples``; [None, None] when there are none."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return [None, None]
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(s, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def difference(means: np.ndarray, point: Sequence[float], a: int, b: int, level: float = LEVEL) -> dict[str, Any]:
    """Row ``a`` − row ``b``: the difference of their point estimates, its paired percentile interval from the
    resampled ``means`` (resamples × rows; None when there are none), and whether that interval contains 0."""
    diff = float(point[a]) - float(point[b])
    if means is None or not len(means):
        return {"diff": diff, "ci": None, "contains_zero": None}
    ci = interval(means[:, a] - means[:, b], level)
    contains = None if ci[0] is None else bool(ci[0] <= 0.0 <= ci[1])
    return {"diff": diff, "ci": ci, "contains_zero": contains}


def verdict(entry: dict[str, Any]) -> str:
    """One plain sentence on a difference: whether its interval contains 0."""
    if entry.get("contains_zero") is None:
        return "no interval (evaluate.bootstrap = 0)"
    if entry["contains_zero"]:
        return "the interval contains 0: not distinguishable from noise"
    better = entry["a"] if entry["diff"] > 0 else entry["b"]
    return f"the interval excludes 0: {better} is better beyond the bootstrap's noise"


def signed(value: float | None, digits: int = 4) -> str:
    """``+0.0057`` / ``−0.0021`` (a true minus sign), "–" for none."""
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}"
    return text.replace("-", "−")


def describe(entry: dict[str, Any]) -> str:
    """``learned − ImageNet: +0.0057 [−0.0021, +0.0135] — the interval contains 0: not distinguishable from
    noise``: how the CLI and the report state a difference."""
    ci = entry.get("ci")
    shown = f" [{signed(ci[0])}, {signed(ci[1])}]" if ci and ci[0] is not None else ""
    return f"{entry.get('label', entry['a'] + ' − ' + entry['b'])}: {signed(entry['diff'])}{shown} — {verdict(entry)}"
