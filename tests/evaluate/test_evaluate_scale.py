"""The paths that let evaluate run at the seed paper's size give the answers of the plain ones: float32 cold start
against a float64 reference, the sparse metadata row against the dense one, top-k by partition against a full sort
(ties included), sparse standardisation and ridge against dense, and sparse nearest neighbours against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata

from socialfeat.evaluate.retrieval import nearest
from socialfeat.measures import metrics
from socialfeat.measures.coldstart import ColdStartData, coldstart_row, sampled
from socialfeat.measures.metrics import Standardized, ridge_path, standardizer, top_k


def full_sort_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The former top_k: a stable full argsort of every row (NaN last, ties to the lower index)."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-s, axis=1, kind="stable")[:, : min(k, s.shape[1])]


def test_top_k_by_partition_equals_the_full_sort_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, rows = int(rng.integers(1, 40)), int(rng.integers(1, 8))
        scores = rng.integers(0, int(rng.integers(1, 6)), (rows, n)).astype(np.float32)  # few values: many ties
        scores[rng.random(scores.shape) < 0.1] = np.nan
        scores[0] = 1.0  # a row that is one tie
        for k in range(1, n + 2):
            assert np.array_equal(top_k(scores, k), full_sort_top_k(scores, k)), (scores, k)
    continuous = rng.normal(size=(50, 3000)).astype(np.float32)
    assert np.array_equal(top_k(continuous, 20), full_sort_top_k(continuous, 20))
    assert top_k(continuous, 20).dtype.kind == "i" and top_k(np.ones((2, 5)), 3).tolist() == [[0, 1, 2]] * 2


@pytest.mark.parametrize("count", [0, 3, 1000], ids=["sorting", "both", "counting"])
def test_auc_by_counting_equals_auc_by_sorting(count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 5, (60, 30)).astype(np.float32)  # ties everywhere
    scores[rng.random(scores.shape) < 0.05] = np.nan  # NaN ranks last
    positives = rng.random(scores.shape) < rng.random((60, 1)) * 0.5
    positives[0], positives[1] = False, True  # no positive, no negative: NaN
    pairs = []
    for s, p in zip(np.where(np.isnan(scores), -np.inf, scores), positives, strict=True):
        pos, neg = s[p], s[~p]
        wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        pairs.append(wins / (len(pos) * len(neg)) if len(pos) and len(neg) else np.nan)
    monkeypatch.setattr(metrics, "COUNT_POSITIVES", count)
    np.testing.assert_allclose(metrics.auc_per_user(scores, positives), pairs, equal_nan=True, rtol=1e-12)


def test_standardizer_float32_chunked_and_sparse(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    x = (rng.random((500, 30)) < 0.1).astype(np.float32) * rng.normal(3.0, 1.0, (500, 30)).astype(np.float32)
    x[:, 4] = 2.0  # constant: std 1
    monkeypatch.setattr(metrics, "CHUNK_CELLS", 300)  # ten rows at a time
    mean, std = standardizer(x)
    want_mean, want_std = x.astype(np.float64).mean(axis=0), x.astype(np.float64).std(axis=0)
    want_std[4] = 1.0
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(std, want_std, rtol=1e-9)
    assert mean.dtype == std.dtype == np.float64
    s_mean, s_std = standardizer(sp.csr_matrix(x))
    np.testing.assert_allclose(s_mean, want_mean, rtol=1e-9)
    np.testing.assert_allclose(s_std, want_std, rtol=1e-6)


@pytest.mark.parametrize("shape", [(300, 40), (30, 200)], ids=["primal", "dual"])
def test_ridge_on_a_standardized_sparse_matrix_equals_the_dense_one(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    n, d = shape
    x = sp.random(n, d, density=0.08, random_state=3, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    mean, std = standardizer(x)
    dense = (x.toarray().astype(np.float64) - mean) / std
    z = Standardized(x, mean, std)
    y = rng.normal(size=(n, 3))
    np.testing.assert_allclose(z.gram(), dense.T @ dense, atol=1e-9)
    np.testing.assert_allclose(z.outer(), dense @ dense.T, atol=1e-9)
    np.testing.assert_allclose(z.t_dot(y), dense.T @ y, atol=1e-9)
    w = rng.normal(size=(d, 3))
    np.testing.assert_allclose(z.dot(w), dense @ w, atol=1e-9)
    for got, want in zip(ridge_path(z, y, [0.1, 10.0]), ridge_path(dense, y, [0.1, 10.0]), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-8)


def test_float32_ridge_builds_its_gram_in_float32() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(400, 20)).astype(np.float32)
    y = rng.normal(size=(400, 4)).astype(np.float32)
    for got, want in zip(
        ridge_path(z, y, [1.0, 100.0]), ridge_path(z.astype(np.float64), y, [1.0, 100.0]), strict=True
    ):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    dual = ridge_path(z[:10], y[:10], [1.0])[0]  # d > n: the dual, z.T @ solution stays float32
    np.testing.assert_allclose(dual, ridge_path(z[:10].astype(np.float64), y[:10], [1.0])[0], rtol=1e-4, atol=1e-6)


def planted(seed: int, n_items: int = 600, n_users: int = 300, f: int = 6) -> tuple[ColdStartData, np.ndarray]:
    """A cold-start problem from a latent model: users like items whose factors they score high."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, f)).astype(np.float32)
    items = rng.normal(size=(n_items, f)).astype(np.float32)
    split = np.array(["train", "valid", "test"])[rng.choice(3, n_items, p=[0.6, 0.2, 0.2])]
    train, valid, test = (np.nonzero(split == s)[0] for s in ("train", "valid", "test"))
    truth = (users @ items.T + rng.normal(0, 1.0, (n_users, n_items))) > 1.5

    def cols(idx: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(truth[:, idx].astype(np.float32))

    data = ColdStartData(
        item_ids=list(range(n_items)),
        split=split,
        train=train,
        valid=valid,
        test=test,
        item_factors=items[train],
        user_factors=users,
        valid_truth=cols(valid),
        test_truth=cols(test),
        normalize="none",
    )
    return data, items


def _auc64(scores: np.ndarray, truth: sp.csr_matrix, users: np.ndarray) -> float:
    """Mean per-user AUC by average ranks (scipy), float64 throughout."""
    pos = truth[users].toarray() > 0
    ranks = rankdata(scores[users], axis=1)
    n_pos = pos.sum(axis=1)
    n_neg = pos.shape[1] - n_pos
    u = (ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2
    return float(np.mean(u / (n_pos * n_neg)))


def float64_reference(features: np.ndarray, data: ColdStartData, lambdas: list[float]) -> dict[str, object]:
    """The cold-start protocol written plainly in float64: standardise, solve ridge per λ, pick λ on valid (ties to
    the stronger λ), score the test items."""
    x = features.astype(np.float64)
    fit = x[data.train]
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    std[std <= 1e-12] = 1.0
    z = (fit - mean) / std
    y = data.item_factors.astype(np.float64)
    y_mean = y.mean(axis=0)
    uf = data.user_factors.astype(np.float64)
    by_lambda = []
    for lam in lambdas:
        w = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ (y - y_mean))
        v = ((x - mean) / std) @ w + y_mean
        by_lambda.append((_auc64(uf @ v[data.valid].T, data.valid_truth, data.valid_users), v))
    best = max(range(len(lambdas)), key=lambda i: (by_lambda[i][0], i))
    v = by_lambda[best][1]
    return {
        "lambda": lambdas[best],
        "valid": [a for a, _ in by_lambda],
        "auc": _auc64(uf @ v[data.test].T, data.test_truth, data.test_users),
    }


def test_float32_coldstart_equals_a_float64_reference() -> None:
    data, items = planted(5)
    data = sampled(data, 150, 100, seed=0)  # and on a seeded sample of the users
    assert len(data.test_users) == 150 and len(data.valid_users) == 100
    rng = np.random.default_rng(6)
    features = (items @ rng.normal(size=(6, 48)) + rng.normal(0, 2.0, (len(items), 48)) + 5.0).astype(np.float32)
    lambdas = [1.0, 30.0, 1000.0, 30000.0]
    got = coldstart_row(features, np.ones(len(items), bool), "ridge", data, lambdas, 10)
    want = float64_reference(features, data, lambdas)
    assert got["lambda"] == want["lambda"] and got["users"] == 150
    assert got["auc"] == pytest.approx(want["auc"], abs=1e-4)
    np.testing.assert_allclose(list(got["valid_auc_by_lambda"].values()), want["valid"], atol=1e-4)


@pytest.mark.parametrize("n_tags", [60, 900], ids=["primal", "dual"])
def test_the_sparse_metadata_row_equals_the_dense_one(n_tags: int) -> None:
    data, items = planted(7, n_items=800)
    rng = np.random.default_rng(8)
    tags = np.zeros((len(items), n_tags), np.float32)
    for i in range(len(items)):  # four random tags each (distinct tag sets: no ties to break differently) …
        tags[i, rng.choice(n_tags, 4, replace=False)] = 1.0
    strongest = np.argsort(-(items @ rng.normal(size=(6, n_tags))), axis=1)[:, :2]  # … and two that follow taste
    tags[np.arange(len(items))[:, None], strongest] = 1.0
    lambdas = [0.1, 3.0, 100.0, 3000.0]
    has = np.ones(len(items), bool)
    dense = coldstart_row(tags.astype(np.float64), has, "ridge", data, lambdas, 10)
    sparse = coldstart_row(sp.csr_matrix(tags), has, "ridge", data, lambdas, 10)
    assert sparse["lambda"] == dense["lambda"] and sparse["auc"] > 0.55
    assert sparse["auc"] == pytest.approx(dense["auc"], abs=1e-6)
    np.testing.assert_allclose(
        list(sparse["valid_auc_by_lambda"].values()), list(dense["valid_auc_by_lambda"].values()), atol=1e-6
    )
    assert sparse[f"recall@{10}"] == pytest.approx(dense["recall@10"], abs=1e-6)


def test_sparse_nearest_neighbours_are_the_brute_force_ones() -> None:
    x = sp.random(200, 30, density=0.1, random_state=10, format="csr", dtype=np.float32)
    x.data[:] = 1.0  # one-hots: many exact ties, broken by the lower index
    queries = np.array([0, 5, 17, 199])
    got = nearest(x, queries, 6)
    dense = x.toarray().astype(np.float64)
    norms = np.linalg.norm(dense, axis=1)
    unit = dense / np.where(norms > 0, norms, 1.0)[:, None]
    for q, row in zip(queries, got, strict=True):
        sims = (unit @ unit[q]).astype(np.float32)
        sims[q] = -np.inf
        assert list(row) == list(np.argsort(-sims, kind="stable")[:6]), q
    assert list(nearest(x[:3], np.array([1]), 5)[0][2:]) == [-1, -1, -1]  # fewer other rows than k: padded


def test_the_sparse_multi_hot_equals_the_dense_one() -> None:
    from socialfeat.data.tags import multi_hot, multi_hot_sparse

    tags = [["war", "comedy"], ["western", "zzz"], [], ["comedy"]]
    vocab = ["comedy", "war", "western"]
    dense, unseen = multi_hot(tags, vocab)
    sparse, sparse_unseen = multi_hot_sparse(tags, vocab)
    assert sp.issparse(sparse) and sparse.dtype == np.float32 and sparse.nnz == 4
    assert np.array_equal(sparse.toarray(), dense) and sparse_unseen == unseen == 1
