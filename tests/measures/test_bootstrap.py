"""The paired bootstrap against a naive loop over resamples, and the seeded user sample against the full score on a
planted population: what lets evaluate score 20,000 of 309,000 users and still say how sure it is."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from socialfeat.measures import bootstrap
from socialfeat.measures.bootstrap import difference, interval, resampled_means
from socialfeat.measures.coldstart import eligible_users, sample_users


def naive_means(per_user: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """One resample at a time: U uniform doubles → user indices, the NaN-skipping mean of each column, in float64."""
    rng = np.random.default_rng(seed)
    n = len(per_user)
    out = []
    for _ in range(resamples):
        picks = np.minimum((rng.random(n) * n).astype(np.int64), n - 1)
        drawn = per_user[picks].astype(np.float64)
        out.append([np.nanmean(column) if np.isfinite(column).any() else np.nan for column in drawn.T])
    return np.array(out)


@pytest.fixture
def per_user() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.beta(6, 4, size=37)  # an odd number of users, per-user AUCs around 0.6
    a = np.stack([base, base + rng.normal(0.01, 0.02, 37), rng.beta(5, 5, 37)], axis=1).astype(np.float32)
    a[[3, 20], 2] = np.nan  # a metric undefined for two users of one row
    return a


@pytest.mark.parametrize("cells", [bootstrap.CHUNK_CELLS, 100], ids=["one chunk", "chunks of 2 resamples"])
def test_the_bootstrap_equals_a_naive_loop(per_user: np.ndarray, cells: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", cells)  # how the resamples are chunked never changes the draw
    got = resampled_means(per_user, 300, seed=5)
    want = naive_means(per_user, 300, seed=5)
    np.testing.assert_allclose(got, want, atol=2e-6)
    for j in range(per_user.shape[1]):
        assert interval(got[:, j]) == pytest.approx(list(np.percentile(want[:, j], [2.5, 97.5])), abs=2e-6)
    point = np.nanmean(per_user.astype(np.float64), axis=0)
    d = difference(got, point, 1, 0)
    assert d["diff"] == pytest.approx(point[1] - point[0])
    assert d["ci"] == pytest.approx(list(np.percentile(want[:, 1] - want[:, 0], [2.5, 97.5])), abs=2e-6)
    assert d["contains_zero"] == (d["ci"][0] <= 0 <= d["ci"][1])
    assert np.array_equal(resampled_means(per_user, 300, seed=5), got)  # same seed, same intervals
    assert not np.array_equal(resampled_means(per_user, 300, seed=6), got)


def test_pairing_narrows_the_interval_of_a_difference() -> None:
    # two rows that share each user's difficulty: the paired interval of their difference is far narrower than the
    # rows' own intervals, and it excludes 0 although the rows' intervals overlap
    rng = np.random.default_rng(1)
    base = rng.beta(6, 4, size=5000)
    a = np.stack([base, base + 0.004 + rng.normal(0, 0.01, 5000)], axis=1)
    means = resampled_means(a, 1000, seed=0)
    lo0, hi0 = interval(means[:, 0])
    lo1, hi1 = interval(means[:, 1])
    assert lo1 < hi0  # the rows alone: not told apart
    d = difference(means, a.mean(axis=0), 1, 0)
    assert d["ci"][1] - d["ci"][0] < (hi0 - lo0) / 5 and d["contains_zero"] is False and d["diff"] > 0
    assert difference(None, a.mean(axis=0), 1, 0) == {"diff": d["diff"], "ci": None, "contains_zero": None}


def test_resamples_off_or_no_users() -> None:
    assert resampled_means(np.zeros((0, 2)), 10, 0).shape == (10, 2)
    assert np.isnan(resampled_means(np.zeros((0, 2)), 10, 0)).all()
    assert interval(np.array([np.nan])) == [None, None]
    with pytest.raises(ValueError, match="users × rows"):
        resampled_means(np.zeros(3), 10, 0)


def test_a_sample_of_20k_of_200k_planted_users_lands_within_the_interval_of_the_full_score() -> None:
    rng = np.random.default_rng(2)
    n = 200_000
    auc = rng.beta(6, 4, size=n)  # each user's planted AUC for one row
    positives = rng.random(n) < 0.9  # a tenth of the users have no positive: not eligible, never sampled
    truth = sp.csr_matrix(
        (np.ones(int(positives.sum()), np.float32), (np.nonzero(positives)[0], np.zeros(int(positives.sum()), int))),
        shape=(n, 3),
    )
    eligible = eligible_users(truth)
    full = auc[eligible].mean()
    covered = []
    for seed in range(10):
        users = sample_users(truth, 20_000, seed)
        assert len(users) == 20_000 and np.isin(users, eligible).all() and np.all(np.diff(users) > 0)
        lo, hi = interval(resampled_means(auc[users, None], 1000, seed)[:, 0])
        covered.append(lo <= full <= hi)
        assert hi - lo == pytest.approx(2 * 1.96 * auc[eligible].std() / np.sqrt(20_000), rel=0.15)
    assert covered[0] and sum(covered) >= 9  # a 95% interval: the full score inside for (nearly) every seed
    assert np.array_equal(sample_users(truth, 20_000, 0), sample_users(truth, 20_000, 0))
    assert np.array_equal(sample_users(truth, 0, 0), eligible) and np.array_equal(sample_users(truth, n, 0), eligible)
