"""Popularity filtering, as collaborative feature learning does it before factorizing.

The least popular users and items carry too little signal to place in the latent space and the
most popular (bots, front-page items) swamp it. Counts are distinct user–item pairs. The most
popular are dropped once, from the counts before filtering; the minimum thresholds are then applied
repeatedly until stable (a k-core), because dropping a user can push an item under its minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from socialfeat.config import FilterConfig
from socialfeat.errors import UserError


@dataclass
class FilterResult:
    """Which users and items survive, how many pairs each keeps, and why the others did not."""

    keep_users: np.ndarray  # bool per user code
    keep_items: np.ndarray  # bool per item code
    user_counts: np.ndarray  # kept pairs per user code
    item_counts: np.ndarray  # kept pairs per item code
    rounds: int
    dropped: dict[str, int] = field(default_factory=dict)

    def pairs_mask(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True for the pairs that survive."""
        return self.keep_users[users] & self.keep_items[items]


def _top_mask(counts: np.ndarray, fraction: float, max_count: int | None) -> np.ndarray:
    """True for the entries dropped as too popular: the top ``fraction`` and any above ``max_count``."""
    drop = np.zeros(len(counts), dtype=bool)
    present = np.flatnonzero(counts > 0)
    n_top = int(math.floor(fraction * len(present)))
    if n_top > 0:
        order = present[np.argsort(-counts[present], kind="stable")]
        drop[order[:n_top]] = True
    if max_count is not None:
        drop |= counts > max_count
    return drop


def popularity_filter(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    cfg: FilterConfig,
    allowed_items: np.ndarray | None = None,
) -> FilterResult:
    """Filter the pairs ``(users[k], items[k])`` (dense codes) by popularity; see the module docstring.

    ``allowed_items`` (bool per item code) removes items up front, e.g. those without an image.
    The pair arrays are compacted as items and users drop out, so memory stays near the input's size.
    Raises :class:`UserError` naming the threshold that left nothing.
    """
    keep_items = np.ones(n_items, dtype=bool) if allowed_items is None else allowed_items.copy()
    if not keep_items.all():
        mask = keep_items[items]
        users, items = users[mask], items[mask]
    user_counts = np.bincount(users, minlength=n_users)
    item_counts = np.bincount(items, minlength=n_items)
    drop_users = _top_mask(user_counts, cfg.drop_top_users, cfg.max_user_interactions)
    drop_items = _top_mask(item_counts, cfg.drop_top_items, cfg.max_item_interactions)
    dropped = {"top_users": int(drop_users.sum()), "top_items": int(drop_items.sum())}
    keep_users = (user_counts > 0) & ~drop_users
    keep_items &= (item_counts > 0) & ~drop_items

    rounds = 0
    low_users = low_items = 0
    bad_u, bad_i = np.zeros(n_users, dtype=bool), np.zeros(n_items, dtype=bool)  # what the last round dropped
    while True:
        mask = keep_users[users] & keep_items[items]
        if not mask.all():
            users, items = users[mask], items[mask]
        if len(users) == 0:
            if rounds == 0:
                which = "filter.drop_top_users" if drop_users.any() else "filter.drop_top_items"
                raise UserError(which, "dropping the most popular left no interactions; lower it")
            _raise_empty(cfg, user_counts, item_counts, bad_u, bad_i)
        rounds += 1
        user_counts = np.bincount(users, minlength=n_users)
        item_counts = np.bincount(items, minlength=n_items)
        bad_u = keep_users & (user_counts < cfg.min_user_interactions)
        bad_i = keep_items & (item_counts < cfg.min_item_interactions)
        if not bad_u.any() and not bad_i.any():
            break
        if rounds >= cfg.max_rounds:
            raise UserError(
                f"filter.max_rounds={cfg.max_rounds}", "filtering did not settle in that many rounds; raise it"
            )
        low_users += int(bad_u.sum())
        low_items += int(bad_i.sum())
        keep_users &= ~bad_u
        keep_items &= ~bad_i
    dropped.update(low_users=low_users, low_items=low_items)
    return FilterResult(keep_users, keep_items, user_counts, item_counts, rounds, dropped)


def _raise_empty(
    cfg: FilterConfig, u_count: np.ndarray, i_count: np.ndarray, bad_u: np.ndarray, bad_i: np.ndarray
) -> None:
    """Name the threshold that emptied the data set, with the largest count that was seen."""
    if bad_u.any() and (not bad_i.any() or bad_u.sum() >= bad_i.sum()):
        raise UserError(
            f"filter.min_user_interactions={cfg.min_user_interactions}",
            f"no user keeps that many interactions (the most any user had was {int(u_count.max())}); lower it",
        )
    raise UserError(
        f"filter.min_item_interactions={cfg.min_item_interactions}",
        f"no item keeps that many interactions (the most any item had was {int(i_count.max())}); lower it",
    )
