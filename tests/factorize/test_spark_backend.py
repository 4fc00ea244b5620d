"""Spark MLlib backend: recovers planted structure, shapes/zero rows, λ mapping, ratings hand-over, seeding.

Needs pyspark and Java; one JVM (``local[2]``) is shared by the whole module.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from environment import need, need_module

need_module("pyspark", "the Spark backend needs pyspark: pip install 'socialfeat[spark]'")
need(shutil.which("java"), "the Spark backend needs Java 17 ('java' not on PATH)")

from socialfeat.config import FactorizeConfig  # noqa: E402
from socialfeat.errors import UserError  # noqa: E402
from socialfeat.factorize.spark import MIN_RATING, SparkALS, _write_ratings, spark_reg_param  # noqa: E402

pytestmark = [pytest.mark.spark]

N_USERS, N_ITEMS, GROUPS = 300, 200, 4


def _config(**kwargs) -> FactorizeConfig:
    base = {"backend": "spark", "factors": 8, "iterations": 10, "regularization": 0.05, "spark_master": "local[2]"}
    return FactorizeConfig(**{**base, **kwargs})


def _planted(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Users of group g mostly interact with items of group g; c = 1 + 10·w, w in 1..5."""
    rng = np.random.default_rng(seed)
    user_group = np.arange(N_USERS) % GROUPS
    item_group = np.arange(N_ITEMS) % GROUPS
    rows, cols = [], []
    for user in range(N_USERS):
        own = np.flatnonzero(item_group == user_group[user])
        other = np.flatnonzero(item_group != user_group[user])
        picked = np.concatenate([rng.choice(own, 15, replace=False), rng.choice(other, 2, replace=False)])
        rows.extend([user] * len(picked))
        cols.extend(picked)
    weights = rng.integers(1, 6, len(rows)).astype(np.float32)
    confidence = sp.csr_matrix((1.0 + 10.0 * weights, (rows, cols)), shape=(N_USERS, N_ITEMS), dtype=np.float32)
    return confidence, user_group, item_group


@pytest.fixture(scope="module")
def planted_fit():
    confidence, user_group, item_group = _planted()
    calls = []
    factors = SparkALS(_config(), seed=0).fit(confidence, callback=lambda *args: calls.append(args))
    return confidence, user_group, item_group, factors, calls


def test_recovers_planted_groups(planted_fit):
    confidence, user_group, item_group, factors, _ = planted_fit
    scores = factors.scores(np.arange(N_USERS))
    seen = confidence.toarray() > 0
    wins = 0
    for user in range(N_USERS):
        own = (item_group == user_group[user]) & ~seen[user]
        other = (item_group != user_group[user]) & ~seen[user]
        wins += scores[user, own].mean() > scores[user, other].mean()
    assert wins / N_USERS > 0.9


def test_callback_called_once_at_the_end(planted_fit):
    *_, calls = planted_fit
    assert len(calls) == 1
    iteration, seconds, loss = calls[0]
    assert iteration == 9 and seconds > 0 and loss is None


def test_shapes_dtype_and_zero_rows_for_empty_users_and_items():
    confidence, _, _ = _planted(seed=1)
    keep_users = np.ones(N_USERS, np.float32)
    keep_users[5] = 0  # a user without ratings
    keep_items = np.ones(N_ITEMS, np.float32)
    keep_items[7] = 0  # an item without ratings
    confidence = sp.csr_matrix(sp.diags(keep_users) @ confidence @ sp.diags(keep_items))
    confidence.eliminate_zeros()
    # plus a trailing user and item that appear nowhere in the ratings handed to Spark
    indptr = np.append(confidence.indptr, confidence.nnz)
    confidence = sp.csr_matrix((confidence.data, confidence.indices, indptr), shape=(N_USERS + 1, N_ITEMS + 1))

    factors = SparkALS(_config(factors=6, iterations=3), seed=0).fit(confidence)

    assert factors.users.shape == (N_USERS + 1, 6) and factors.users.dtype == np.float32
    assert factors.items.shape == (N_ITEMS + 1, 6) and factors.items.dtype == np.float32
    for row in (factors.users[5], factors.users[N_USERS], factors.items[7], factors.items[N_ITEMS]):
        assert not row.any()
    assert np.abs(factors.users[:5]).sum(axis=1).min() > 0
    assert np.abs(factors.items[:7]).sum(axis=1).min() > 0


def test_spark_reg_param_is_lambda_over_mean_ratings_per_user():
    # rows with 2, 0 and 4 ratings: 6 ratings over 2 users with ratings → mean 3
    confidence = sp.csr_matrix(np.array([[2, 0, 3, 0], [0, 0, 0, 0], [1, 1, 5, 2]], dtype=np.float32))
    assert spark_reg_param(0.06, confidence) == pytest.approx(0.02)
    assert spark_reg_param(0.06, sp.csr_matrix((3, 4))) == pytest.approx(0.06)


def test_ratings_are_confidence_minus_one_floored_above_zero(tmp_path):
    confidence = sp.csr_matrix(np.array([[1.0, 0, 11.0], [0, 3.5, 0]], dtype=np.float32))
    _, _, folder = _write_ratings(confidence, str(tmp_path))
    table = pq.read_table(folder).sort_by([("user", "ascending"), ("item", "ascending")])
    assert table.column("user").to_pylist() == [0, 0, 1]
    assert table.column("item").to_pylist() == [0, 2, 1]
    ratings = np.asarray(table.column("rating").to_pylist())
    np.testing.assert_allclose(ratings, [MIN_RATING, 10.0, 2.5], rtol=1e-6)
    assert (ratings > 0).all()  # Spark sets p = 0 for ratings ≤ 0


def test_same_seed_gives_the_same_factors(planted_fit):
    confidence, *_, first, _ = planted_fit
    second = SparkALS(_config(), seed=0).fit(confidence)
    # Spark sums the normal equations in shuffle order, so allow float noise rather than bit equality
    np.testing.assert_allclose(second.users, first.users, atol=1e-4)
    np.testing.assert_allclose(second.items, first.items, atol=1e-4)


def test_missing_pyspark_is_a_user_error(monkeypatch):
    for module in ("pyspark", "pyspark.ml.recommendation", "pyspark.sql"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError, match="needs pyspark"):
        SparkALS(_config(), seed=0).fit(sp.csr_matrix(np.eye(3, dtype=np.float32) + 1))
