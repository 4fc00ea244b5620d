"""Popularity filtering on tiny matrices whose right answers are known."""

import numpy as np
import pytest

from socialfeat.config import FilterConfig
from socialfeat.data.filtering import popularity_filter
from socialfeat.errors import UserError


def pairs(edges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    arr = np.array(edges, dtype=np.int32)
    return arr[:, 0], arr[:, 1]


def cfg(**kw: object) -> FilterConfig:
    base = {"min_user_interactions": 1, "min_item_interactions": 1, "drop_top_users": 0.0, "drop_top_items": 0.0}
    return FilterConfig(**{**base, **kw})


def test_min_thresholds_cascade_until_stable() -> None:
    # users 0,1,2 each see items 0,1; user 3 sees items 1,2; item 2 has one user.
    # min_item=2 drops item 2 -> user 3 keeps 1 item -> min_user=2 drops user 3 -> item 1 still has 3 users.
    u, i = pairs([(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 1), (3, 2)])
    r = popularity_filter(u, i, 4, 3, cfg(min_user_interactions=2, min_item_interactions=2))
    assert r.keep_users.tolist() == [True, True, True, False]
    assert r.keep_items.tolist() == [True, True, False]
    assert r.pairs_mask(u, i).tolist() == [True] * 6 + [False, False]
    assert r.dropped == {"top_users": 0, "top_items": 0, "low_users": 1, "low_items": 1}
    assert r.rounds == 3  # item 2, then user 3, then a round that changes nothing


def test_checkerboard_is_already_stable() -> None:
    u, i = pairs([(a, b) for a in range(6) for b in range(6) if (a + b) % 2 == 0])
    r = popularity_filter(u, i, 6, 6, cfg(min_user_interactions=3, min_item_interactions=3))
    assert r.pairs_mask(u, i).all() and r.rounds == 1


def test_top_fraction_and_max_count_drop_the_most_popular() -> None:
    # user 0 sees all 10 items; users 1..9 see 2 items each
    edges = [(0, b) for b in range(10)] + [(a, a) for a in range(1, 10)] + [(a, (a + 1) % 10) for a in range(1, 10)]
    u, i = pairs(edges)
    r = popularity_filter(u, i, 10, 10, cfg(drop_top_users=0.1))
    assert not r.keep_users[0] and r.keep_users[1:].all() and r.dropped["top_users"] == 1
    r = popularity_filter(u, i, 10, 10, cfg(max_user_interactions=5))
    assert not r.keep_users[0] and r.dropped["top_users"] == 1
    r = popularity_filter(u, i, 10, 10, cfg(drop_top_users=0.05))  # floor(0.05 * 10) = 0 users
    assert r.keep_users.all()


def test_top_items_by_max_count() -> None:
    u, i = pairs([(a, 0) for a in range(5)] + [(a, 1) for a in range(2)])
    r = popularity_filter(u, i, 5, 2, cfg(max_item_interactions=3))
    assert r.keep_items.tolist() == [False, True]


def test_filter_that_empties_names_the_threshold() -> None:
    u, i = pairs([(0, 0), (1, 1), (2, 2)])
    with pytest.raises(UserError) as exc:
        popularity_filter(u, i, 3, 3, cfg(min_user_interactions=2))
    assert exc.value.where == "filter.min_user_interactions=2"
    assert "most any user had was 1" in exc.value.message
    with pytest.raises(UserError) as exc:
        popularity_filter(u, i, 3, 3, cfg(min_item_interactions=4))
    assert exc.value.where == "filter.min_item_interactions=4"


def test_matches_naive_reference_on_random_data() -> None:
    rng = np.random.default_rng(0)
    n_u, n_i = 80, 60
    edges = {(int(a), int(b)) for a, b in zip(rng.zipf(1.5, 2000) % n_u, rng.zipf(1.3, 2000) % n_i, strict=True)}
    u, i = pairs(sorted(edges))
    r = popularity_filter(u, i, n_u, n_i, cfg(min_user_interactions=4, min_item_interactions=3))
    # naive: repeatedly delete users/items below the minimum from a set of edges
    kept = set(edges)
    while True:
        uc: dict[int, int] = {}
        ic: dict[int, int] = {}
        for a, b in kept:
            uc[a] = uc.get(a, 0) + 1
            ic[b] = ic.get(b, 0) + 1
        new = {(a, b) for a, b in kept if uc[a] >= 4 and ic[b] >= 3}
        if new == kept:
            break
        kept = new
    got = {(int(a), int(b)) for a, b in zip(u[r.pairs_mask(u, i)], i[r.pairs_mask(u, i)], strict=True)}
    assert got == kept and len(kept) > 0
