"""The two-way (users and items) bootstrap against the exact pigeonhole bootstrap, and each item's influence against
a numeric derivative: what lets evaluate resample the cold items without ranking every user again."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from socialfeat.measures import bootstrap
from socialfeat.measures.bootstrap import difference, interval, item_shifts, resampled_means, two_way_means
from socialfeat.measures.coldstart import score_users
from socialfeat.measures.metrics import auc_item_influence, auc_per_user


def weighted_auc(scores: np.ndarray, positives: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per row: the AUC with column k counted w_k times (pairs weighted w_i·w_j; ties ½), by brute force."""
    out = np.full(len(scores), np.nan)
    for u, (s, p) in enumerate(zip(scores, positives, strict=True)):
        wp, wn = w[p], w[~p]
        if wp.sum() == 0 or wn.sum() == 0:
            continue
        h = (s[p][:, None] > s[~p][None, :]) + 0.5 * (s[p][:, None] == s[~p][None, :])
        out[u] = wp @ h @ wn / (wp.sum() * wn.sum())
    return out


def planted(n_users: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two sources scoring the same users and items; items differ in how easy they are (a shared item effect),
    so resampling the items widens the interval of a difference."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n_users, 4))
    items = rng.normal(size=(n_items, 4))
    truth = taste @ items.T
    positives = truth > np.quantile(truth, 0.85, axis=1, keepdims=True)
    easy = rng.normal(0, 1.5, n_items)  # source a sees some items far better than source b does
    a = truth + rng.normal(size=truth.shape) * np.exp(-easy)[None, :]
    b = truth + rng.normal(size=truth.shape) * np.exp(easy)[None, :] * 0.6
    return a.astype(np.float32), b.astype(np.float32), positives


@pytest.mark.parametrize("share", [0.15, 0.5, (0.1, 0.6)], ids=["counted", "sorted", "both"])
def test_the_influence_is_the_derivative_of_the_mean_auc(share: float | tuple[float, float]) -> None:
    rng = np.random.default_rng(0)
    n = 48  # up to 16 positives a row is counted, beyond that sorted
    scores = rng.normal(size=(50, n)).round(1).astype(np.float32)  # rounded: ties count ½
    rate = np.where(np.arange(50) % 2, *share) if isinstance(share, tuple) else np.full(50, share)
    positives = rng.random((50, n)) < rate[:, None]
    positives[0] = False  # a user without a positive: left out, as evaluate's mean leaves it out
    positives[1] = True  # nor a negative
    total, defined = auc_item_influence(scores, positives)
    base = weighted_auc(scores, positives, np.ones(n))
    np.testing.assert_allclose(base, auc_per_user(scores, positives), equal_nan=True, atol=1e-12)
    assert defined == int(np.isfinite(base).sum()) <= 48
    eps = 1e-6
    numeric = [
        (np.nansum(weighted_auc(scores, positives, 1 + eps * np.eye(n)[k])) - np.nansum(base)) / eps for k in range(n)
    ]
    np.testing.assert_allclose(total, numeric, atol=1e-5)


def test_score_users_averages_the_influence_over_its_users() -> None:
    a, _, positives = planted(40, 25, seed=1)
    truth = sp.csr_matrix(positives.astype(np.float32))
    ranked = score_users(lambda rows: a[rows], truth, None, influence=True)
    total, defined = auc_item_influence(a, positives)
    np.testing.assert_allclose(ranked.item_influence, total / defined, atol=1e-12)
    assert score_users(lambda rows: a[rows], truth, None).item_influence is None


def test_the_two_way_interval_matches_the_exact_pigeonhole_bootstrap() -> None:
    n_users, n_items, resamples = 120, 80, 400
    a, b, positives = planted(n_users, n_items, seed=2)
    per_user = np.stack([auc_per_user(a, positives), auc_per_user(b, positives)], axis=1)
    per_item = np.stack([auc_item_influence(s, positives)[0] / n_users for s in (a, b)], axis=1)
    means, users = two_way_means(per_user, per_item, resamples, seed=7)
    exact_both, exact_items = [], []
    rng = np.random.default_rng(11)
    for _ in range(resamples):
        w = np.bincount(rng.integers(0, n_items, n_items), minlength=n_items).astype(np.float64)
        c = np.bincount(rng.integers(0, n_users, n_users), minlength=n_users).astype(np.float64)
        diff = weighted_auc(a, positives, w) - weighted_auc(b, positives, w)
        ok = np.isfinite(diff)
        exact_items.append(diff[ok].mean())
        exact_both.append((c[ok] * diff[ok]).sum() / c[ok].sum())
    width = np.diff(interval(means[:, 0] - means[:, 1]))[0]
    exact = np.diff(interval(np.array(exact_both)))[0]
    users_only = np.diff(interval(users[:, 0] - users[:, 1]))[0]
    shifts = item_shifts(per_item, resamples, seed=3)
    items_only = np.diff(interval(shifts[:, 0] - shifts[:, 1]))[0]
    assert width == pytest.approx(exact, rel=0.15)
    assert items_only == pytest.approx(np.diff(interval(np.array(exact_items)))[0], rel=0.15)
    assert users_only < 0.8 * width  # the items carry real spread here: the users-only interval is too narrow


def test_users_only_draws_are_resampled_means_and_items_off_leaves_them() -> None:
    rng = np.random.default_rng(3)
    per_user = rng.beta(6, 4, size=(50, 3)).astype(np.float32)
    per_item = rng.normal(0, 1e-3, size=(20, 3))
    both, users = two_way_means(per_user, per_item, 200, seed=[4, 2])
    np.testing.assert_array_equal(users, resampled_means(per_user, 200, [4, 2]))
    assert not np.allclose(both, users)
    alone, same = two_way_means(per_user, None, 200, seed=[4, 2])
    np.testing.assert_array_equal(alone, users)
    np.testing.assert_array_equal(same, users)
    entry = difference(both, per_user.mean(axis=0), 0, 1, users=users)
    assert entry["ci_users"] == interval(users[:, 0] - users[:, 1])
    assert entry["contains_zero_users"] == (entry["ci_users"][0] <= 0 <= entry["ci_users"][1])
    assert entry["ci"] == interval(both[:, 0] - both[:, 1])


@pytest.mark.parametrize("cells", [bootstrap.CHUNK_CELLS, 50], ids=["one chunk", "chunks"])
def test_item_draws_do_not_depend_on_chunking(cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    per_item = np.random.default_rng(5).normal(size=(30, 2))
    want = item_shifts(per_item, 100, seed=9)
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", cells)
    np.testing.assert_allclose(item_shifts(per_item, 100, seed=9), want, atol=1e-12)
    assert np.abs(want.mean(axis=0)).max() < 3 * np.abs(per_item).sum() / np.sqrt(100)
