"""Paired bootstrap over users and items: how sure a mean per-user AUC is, and whether two sources differ beyond noise.

Every row (feature source, reference) is scored on the same users and the same test items, so one resample serves
every row: a difference between two rows is taken within each resample (paired), which removes the shared
difficulty of the users and of the items from its spread. Intervals are the 2.5th and 97.5th percentiles of the
resampled means.

A cold-start claim generalises over new items as well as users, so the interval a stage reports resamples both
(:func:`two_way_means`), as a pigeonhole bootstrap does. The users are resampled exactly. The items move each mean
by the first-order term Σ_k (w_k − 1)·ψ_k, where w_k is how often item k was drawn and ψ_k its influence on the
mean AUC (:func:`socialfeat.measures.metrics.auc_item_influence`). So no resample ranks a user again, and the cost
is one matrix product per chunk of resamples. tests/measures/test_bootstrap.py checks the result against the exact
pigeonhole bootstrap. The users-only interval is reported beside it.

Resample b draws U users with replacement as ⌊U·u⌋ of U uniform doubles taken in order from one seeded generator,
so the draw does not depend on how the resamples are chunked; the draws become counts (a bincount per resample) and
all resampled means are one float32 product (resamples × users) @ (users × rows) per chunk — no Python loop over the
resamples. Items are drawn the same way from a second generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

LEVEL = 0.95
OVER = (
    "paired; users resampled exactly, test items by each item's first-order influence on the mean AUC; "
    "ci_users resamples the users alone"
)
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
        counts = _counts(rng, b, n_users)
        totals = counts @ values
        if weights is None:
            out[start : start + b] = totals / n_users
        else:
            n = counts @ weights
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start : start + b] = np.where(n > 0, totals / np.maximum(n, 1), np.nan)
    return out


def settings(resamples: int, items: int, seed: int) -> dict[str, Any]:
    """What a stage's metrics.json says of its bootstrap: how many resamples, at what level, over what."""
    return {
        "resamples": resamples,
        "level": LEVEL,
        "paired": True,
        "over": "users and items",
        "items": items,
        "method": OVER,
        "seed": seed,
    }


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """(b × n) float32 counts of b resamples of n units with replacement, each as ⌊n·u⌋ of n uniform doubles."""
    picks = (rng.random((b, n)) * n).astype(np.int64)
    np.minimum(picks, n - 1, out=picks)  # u·n rounds up to n only for u within an ulp of 1
    picks += (np.arange(b) * n)[:, None]
    return np.bincount(picks.ravel(), minlength=b * n).reshape(b, n).astype(np.float32)


def item_shifts(per_item: np.ndarray, resamples: int, seed: int | Sequence[int]) -> np.ndarray:
    """(resamples × rows) first-order moves of each row's mean when the items are resampled: Σ_k (w_k − 1)·ψ_k,
    with ``per_item`` the items × rows influences ψ and w the resample's counts, the same for every row."""
    psi = np.nan_to_num(np.asarray(per_item, dtype=np.float64))
    if psi.ndim != 2:
        raise ValueError(f"per_item must be items × rows, got shape {psi.shape}")
    n_items, n_rows = psi.shape
    out = np.zeros((resamples, n_rows))
    if n_items == 0 or resamples == 0:
        return out
    rng = np.random.default_rng(seed)
    step = max(1, CHUNK_CELLS // n_items)
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        out[start : start + b] = (_counts(rng, b, n_items) - 1.0).astype(np.float64) @ psi
    return out


def _seeds(seed: int | Sequence[int]) -> tuple[list[int], list[int]]:
    base = [seed] if isinstance(seed, int | np.integer) else list(seed)
    return base, [*base, 1]


def two_way_means(
    per_user: np.ndarray, per_item: np.ndarray | None, resamples: int, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(two-way, users only): (resamples × rows) means of ``per_user`` (users × rows) over resampled users, and
    the same means moved by :func:`item_shifts` of ``per_item`` (items × rows) for the items. The users' draws are
    those of :func:`resampled_means` with ``seed``, so the users-only interval does not change when items join;
    without ``per_item`` both are the users-only means."""
    user_seed, item_seed = _seeds(seed)
    users = resampled_means(per_user, resamples, user_seed)
    if per_item is None:
        return users, users
    return users + item_shifts(per_item, resamples, item_seed), users


def interval(samples: np.ndarray, level: float = LEVEL) -> list[float | None]:
    """[lo, hi]: the percentile interval of the finite ``samples``; [None, None] when there are none."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return [None, None]
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(s, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def difference(
    means: np.ndarray | None,
    point: Sequence[float],
    a: int,
    b: int,
    level: float = LEVEL,
    users: np.ndarray | None = None,
) -> dict[str, Any]:
    """Row ``a`` − row ``b``: the difference of their point estimates, its paired percentile interval from the
    resampled ``means`` (resamples × rows; None when there are none), and whether that interval contains 0. With
    ``users`` (the users-only means of a two-way bootstrap), ``ci_users`` and ``contains_zero_users`` too."""
    diff = float(point[a]) - float(point[b])
    if means is None or not len(means):
        return {"diff": diff, "ci": None, "contains_zero": None}
    out = {"diff": diff, **_ci(means[:, a] - means[:, b], level)}
    if users is not None:
        out |= {f"{k}_users": v for k, v in _ci(users[:, a] - users[:, b], level).items()}
    return out


def _ci(samples: np.ndarray, level: float) -> dict[str, Any]:
    ci = interval(samples, level)
    return {"ci": ci, "contains_zero": None if ci[0] is None else bool(ci[0] <= 0.0 <= ci[1])}


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
