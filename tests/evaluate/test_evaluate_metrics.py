"""evaluate metrics against naive references: AUC by pair counting, recall/NDCG by loops, Jaccard by Python sets,
ridge by lstsq and sklearn (primal and dual), λ selection, probe helpers, nearest neighbours, the cold-start
protocol on a problem with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata

from socialfeat.evaluate.probe import PROBE_C, _fit_predict, few_shot_sample
from socialfeat.evaluate.retrieval import nearest, overlap_test
from socialfeat.measures.coldstart import ColdStartData, coldstart_row, popularity_oracle, random_reference
from socialfeat.measures.metrics import (
    accuracy,
    auc_per_user,
    average_ranks,
    jaccard,
    majority_rate,
    mean_or_nan,
    ndcg_at_k,
    recall_at_k,
    ridge_fit,
    ridge_path,
    select_best,
    standardizer,
    top_k,
)


def naive_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    pos = [s for s, p in zip(scores, positives, strict=True) if p]
    neg = [s for s, p in zip(scores, positives, strict=True) if not p]
    if not pos or not neg:
        return math.nan
    total = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return total / (len(pos) * len(neg))


def naive_ranking(scores: np.ndarray, positives: np.ndarray, k: int) -> tuple[float, float]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    n_pos = int(sum(positives))
    if n_pos == 0:
        return math.nan, math.nan
    hits = [bool(positives[i]) for i in order]
    dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(n_pos, k)))
    return sum(hits) / n_pos, dcg / idcg


@pytest.fixture
def ranking_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, (40, 25)).astype(np.float32)  # small integers: many ties
    positives = rng.random((40, 25)) < 0.3
    positives[0] = False  # no positive
    positives[1] = True  # no negative
    scores[2] = 1.0  # all tied
    return scores, positives


def test_auc_matches_pair_counting_with_ties(ranking_case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, positives = ranking_case
    got = auc_per_user(scores, positives)
    want = np.array([naive_auc(s, p) for s, p in zip(scores, positives, strict=True)])
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert got[2] == pytest.approx(0.5)
    np.testing.assert_allclose(got, want, equal_nan=True)
    continuous = np.random.default_rng(1).normal(size=scores.shape)
    want = np.array([naive_auc(s, p) for s, p in zip(continuous, positives, strict=True)])
    np.testing.assert_allclose(auc_per_user(continuous, positives), want, equal_nan=True)


def test_auc_ranks_nan_last_and_checks_shapes() -> None:
    scores = np.array([[np.nan, 0.1, 0.2]])
    assert auc_per_user(scores, np.array([[True, False, False]]))[0] == 0.0
    assert auc_per_user(scores, np.array([[False, True, True]]))[0] == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        auc_per_user(scores, np.array([[True, False]]))


def test_average_ranks_match_scipy(ranking_case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, _ = ranking_case
    np.testing.assert_allclose(average_ranks(scores), rankdata(scores, axis=1))


def test_recall_and_ndcg_match_loops(ranking_case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, positives = ranking_case
    for k in (1, 5, 25, 40):
        ranked = top_k(scores, k)
        assert ranked.shape == (40, min(k, 25))
        want = np.array([naive_ranking(s, p, k) for s, p in zip(scores, positives, strict=True)])
        np.testing.assert_allclose(recall_at_k(ranked, positives), want[:, 0], equal_nan=True)
        np.testing.assert_allclose(ndcg_at_k(ranked, positives), want[:, 1], equal_nan=True)
    assert list(top_k(np.array([[1.0, 3.0, 3.0, np.nan, 2.0]]), 5)[0]) == [1, 2, 4, 0, 3]  # ties: lower index
    with pytest.raises(ValueError):
        top_k(scores, 0)


def test_jaccard_matches_python_sets() -> None:
    rng = np.random.default_rng(2)
    dense = rng.random((30, 50)) < 0.2
    dense[3] = False
    dense[4] = False
    sets = [set(np.nonzero(row)[0]) for row in dense]
    a = rng.integers(0, 30, 200)
    b = rng.integers(0, 30, 200)
    a[:2], b[:2] = 3, 4  # two empty sets: overlap 0, not NaN
    want = [
        len(sets[i] & sets[j]) / len(sets[i] | sets[j]) if sets[i] | sets[j] else 0.0 for i, j in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(jaccard(sp.csr_matrix(dense * 3.0), a, b), want)


@pytest.mark.parametrize("shape", [(60, 8), (12, 40)], ids=["primal", "dual"])
def test_ridge_matches_lstsq_and_sklearn(shape: tuple[int, int]) -> None:
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(3)
    n, d = shape
    z = rng.normal(size=(n, d))
    y = rng.normal(size=(n, 3))
    lambdas = [0.01, 1.0, 50.0]
    path = ridge_path(z, y, lambdas)
    for lam, w in zip(lambdas, path, strict=True):
        augmented = np.vstack([z, np.sqrt(lam) * np.eye(d)])
        want = np.linalg.lstsq(augmented, np.vstack([y, np.zeros((d, 3))]), rcond=None)[0]
        np.testing.assert_allclose(w, want, atol=1e-8)
        np.testing.assert_allclose(w, Ridge(alpha=lam, fit_intercept=False).fit(z, y).coef_.T, atol=1e-6)
    np.testing.assert_allclose(ridge_fit(z, y, 1.0), path[1])
    with pytest.raises(ValueError):
        ridge_path(z, y, [0.0])


def test_select_best_picks_the_best_valid_score() -> None:
    assert select_best([0.1, 1, 10, 100], [0.6, 0.7, 0.65, 0.5]) == (1, 0.7)
    assert select_best([0.1, 1, 10], [0.7, float("nan"), 0.7]) == (2, 0.7)  # tie: the stronger λ
    idx, score = select_best([1, 2], [float("nan"), float("nan")])
    assert idx == 1 and math.isnan(score)


def test_small_helpers() -> None:
    mean, std = standardizer(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert list(mean) == [2.0, 5.0] and list(std) == [1.0, 1.0]  # a constant column keeps std 1
    assert accuracy(["a", "b", "b"], ["a", "b", "c"]) == pytest.approx(2 / 3)
    assert majority_rate(["x", "y", "y"], ["y", "x", "y", "z"]) == 0.5
    assert mean_or_nan(np.array([np.nan, 1.0, 3.0])) == 2.0 and math.isnan(mean_or_nan(np.array([np.nan])))
    labels = np.array(list("aaaaabbbc"))
    pick = few_shot_sample(labels, 2, np.random.default_rng(0))
    assert sorted(labels[pick]) == ["a", "a", "b", "b", "c"]


def test_nearest_is_exact_cosine_without_self() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    queries = np.array([0, 7, 49])
    got = nearest(x, queries, 5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for q, row in zip(queries, got, strict=True):
        sims = unit @ unit[q]
        sims[q] = -np.inf
        assert list(row) == list(np.argsort(-sims)[:5])
    few = nearest(x[:3], np.array([0]), 5)[0]  # fewer other rows than k: padded with -1
    assert set(few[:2]) == {1, 2} and list(few[2:]) == [-1, -1, -1]


def test_overlap_finds_shared_audiences() -> None:
    # two groups of items; items of a group share their users and sit close in feature space
    groups = np.repeat([0, 1], 20)
    feats = np.eye(2)[groups] + np.random.default_rng(5).normal(0, 0.05, (40, 2))
    users = sp.csr_matrix(np.eye(2)[groups].repeat(5, axis=1) > 0)  # group g: users 5g..5g+4
    result = overlap_test(feats, users, np.arange(40), 5, np.random.default_rng(0))
    assert result["overlap"] == 1.0 and 0.3 < result["random_overlap"] < 0.7
    assert result["lift"] == pytest.approx(1.0 / result["random_overlap"]) and result["queries"] == 40


def _toy_coldstart(seed: int = 0) -> tuple[ColdStartData, np.ndarray]:
    """Items whose features are an invertible linear map of their true factors; users like items they score high."""
    rng = np.random.default_rng(seed)
    n_users, n_items, f = 80, 120, 4
    users = rng.normal(size=(n_users, f)).astype(np.float32)
    items = rng.normal(size=(n_items, f)).astype(np.float32)
    split = np.array(["train"] * 60 + ["valid"] * 30 + ["test"] * 30)
    train, valid, test = (np.nonzero(split == s)[0] for s in ("train", "valid", "test"))
    truth = (users @ items.T) > 1.0

    def cols(idx: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(truth[:, idx].astype(np.float32))

    data = ColdStartData(
        item_ids=[f"i{i}" for i in range(n_items)],
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


def test_coldstart_recovers_a_linear_truth() -> None:
    data, items = _toy_coldstart()
    mix = np.random.default_rng(1).normal(size=(4, 6))
    features = (items @ mix).astype(np.float32)
    has = np.ones(len(items), dtype=bool)
    ridge = coldstart_row(features, has, "ridge", data, [1e-3, 1.0, 1e4], 5)
    exact = auc_per_user(data.user_factors @ items[data.test].T, data.test_truth.toarray() > 0)
    assert ridge["auc"] == pytest.approx(mean_or_nan(exact), abs=1e-3) and ridge["auc"] > 0.95
    assert ridge["lambda"] == 1e-3  # the weakest λ fits a noiseless linear map best
    assert ridge["valid_auc"] == max(ridge["valid_auc_by_lambda"].values())
    head = coldstart_row(items, has, "head", data, [1.0], 5)  # the true factors as a head: the exact answer
    assert head["auc"] == pytest.approx(mean_or_nan(exact)) and head["lambda"] is None
    has[data.test[:5]] = False  # items without features are predicted the mean factors, not dropped
    assert coldstart_row(features, has, "ridge", data, [1e-3], 5)["cold_items_without_features"] == 5


def test_references_bracket_the_task() -> None:
    data, _ = _toy_coldstart()
    rand = random_reference(data, 5, seed=0)
    assert abs(rand["auc"] - 0.5) < 0.05 and rand == random_reference(data, 5, seed=0)
    oracle = popularity_oracle(data, 5)
    assert oracle["auc"] > rand["auc"] and oracle["users"] == rand["users"] > 0


def test_probe_in_the_span_of_the_training_rows_equals_the_plain_probe() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 300))  # many more dimensions than training items: the projected path
    y = np.array(list("abc"))[(x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int) + (x[:, 1] > 1)]
    plain = LogisticRegression(C=PROBE_C, max_iter=5000, tol=1e-10).fit(x[:30], y[:30])
    assert list(_fit_predict(x[:30], y[:30], x[30:])) == list(plain.predict(x[30:]))
    assert list(_fit_predict(x[:5], np.array(["z"] * 5), x[30:33])) == ["z", "z", "z"]  # one class: itself
