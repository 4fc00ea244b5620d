"""Ranking metrics against naive plain-Python references, a hand-computed case, and limiting scorers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from socialfeat.factorize import metrics
from socialfeat.factorize.metrics import (
    auc,
    average_precision_at_k,
    coverage,
    evaluate_ranking,
    hits,
    ndcg_at_k,
    popularity_scores,
    precision_at_k,
    random_scores,
    recall_at_k,
    top_k,
)

# ---------------------------------------------------------------- naive references (loops and sets)


def row_set(matrix: sp.csr_matrix | None, u: int) -> set[int]:
    if matrix is None:
        return set()
    return {int(i) for i in matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]}


def key(score: float) -> float:
    return -math.inf if math.isnan(score) else score


def naive_top_k(scores: list[float], k: int, excluded: set[int]) -> list[int]:
    candidates = [i for i in range(len(scores)) if i not in excluded]
    candidates.sort(key=lambda i: (-key(scores[i]), i))
    best = candidates[:k]
    return best + [-1] * (k - len(best))


def naive_recall(ranked: list[int], relevant: set[int]) -> float:
    if not relevant:
        return math.nan
    return sum(1 for i in ranked if i in relevant) / len(relevant)


def naive_precision(ranked: list[int], relevant: set[int], k: int) -> float:
    return sum(1 for i in ranked if i in relevant) / k


def naive_ndcg(ranked: list[int], relevant: set[int]) -> float:
    if not relevant:
        return math.nan
    dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked) if i in relevant)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), len(ranked))))
    return dcg / idcg


def naive_ap(ranked: list[int], relevant: set[int]) -> float:
    if not relevant:
        return math.nan
    total, found = 0.0, 0
    for r, i in enumerate(ranked):
        if i in relevant:
            found += 1
            total += found / (r + 1)
    return total / min(len(relevant), len(ranked))


def naive_auc(scores: list[float], relevant: set[int], excluded: set[int]) -> float:
    negatives = [i for i in range(len(scores)) if i not in relevant and i not in excluded]
    if not relevant or not negatives:
        return math.nan
    total = 0.0
    for p in relevant:
        for q in negatives:
            sp_, sq = key(scores[p]), key(scores[q])
            total += 1.0 if sp_ > sq else 0.5 if sp_ == sq else 0.0
    return total / (len(relevant) * len(negatives))


def naive_evaluate(scores: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix, k: int, users) -> dict:
    per: dict[str, list[float]] = {m: [] for m in ("recall", "precision", "ndcg", "map", "auc")}
    items: set[int] = set()
    count = 0
    for u in users:
        relevant = row_set(test, u)
        if not relevant:
            continue
        count += 1
        row = [float(x) for x in scores[u]]
        ranked = naive_top_k(row, k, row_set(train, u))
        items |= {i for i in ranked if i >= 0}
        per["recall"].append(naive_recall(ranked, relevant))
        per["precision"].append(naive_precision(ranked, relevant, k))
        per["ndcg"].append(naive_ndcg(ranked, relevant))
        per["map"].append(naive_ap(ranked, relevant))
        per["auc"].append(naive_auc(row, relevant, row_set(train, u)))
    out = {}
    for name, values in per.items():
        values = [v for v in values if not math.isnan(v)]
        out[name] = sum(values) / len(values) if values else math.nan
    out["coverage"] = len(items) / scores.shape[1]
    out["users"] = count
    return out


# ---------------------------------------------------------------- random cases


def random_case(seed: int, n_users: int = 24, n_items: int = 20, dtype=np.float64):
    """Integer-valued scores (many ties), overlapping random train/test, users with no test items,
    users whose train items leave fewer than k (or zero) candidates, and one user with no negatives."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(dtype)
    scores[0] = 1.0  # all tied
    train = rng.random((n_users, n_items)) < 0.2
    test = rng.random((n_users, n_items)) < 0.15
    test[1:4] = False  # no test items
    train[4] = True  # everything excluded: no candidates, no negatives
    train[5] = np.arange(n_items) >= 2  # two candidates
    train[5, 1] = False
    train[6] = rng.random(n_items) < 0.85  # few candidates
    test[7] = ~train[7]  # every non-train item relevant: no negatives
    test[7, 0] = True
    return scores, sp.csr_matrix(train.astype(np.float32)), sp.csr_matrix(test.astype(np.float32))


CASES = [(seed, k) for seed in (0, 1, 2) for k in (1, 3, 7, 25)]


@pytest.mark.parametrize(("seed", "k"), CASES)
def test_metrics_match_naive_reference(seed: int, k: int) -> None:
    scores, train, test = random_case(seed)
    rows = np.arange(scores.shape[0])
    ranked = top_k(scores, k, train, rows)
    expected_ranked = [naive_top_k(list(scores[u]), k, row_set(train, u)) for u in rows]
    np.testing.assert_array_equal(ranked, np.array(expected_ranked))

    h = hits(ranked, test, rows)
    relevant = [row_set(test, u) for u in rows]
    np.testing.assert_array_equal(h, [[i in relevant[u] for i in expected_ranked[u]] for u in rows])
    n_rel = np.array([len(r) for r in relevant])
    ref = expected_ranked
    np.testing.assert_allclose(recall_at_k(h, n_rel), [naive_recall(ref[u], relevant[u]) for u in rows])
    np.testing.assert_allclose(precision_at_k(h, k), [naive_precision(ref[u], relevant[u], k) for u in rows])
    np.testing.assert_allclose(ndcg_at_k(h, n_rel), [naive_ndcg(ref[u], relevant[u]) for u in rows])
    np.testing.assert_allclose(average_precision_at_k(h, n_rel), [naive_ap(ref[u], relevant[u]) for u in rows])
    expected_auc = [naive_auc(list(scores[u]), relevant[u], row_set(train, u)) for u in rows]
    np.testing.assert_allclose(auc(scores, test, train, rows), expected_auc)
    assert coverage(ranked, scores.shape[1]) == len({i for r in ref for i in r if i >= 0}) / scores.shape[1]


@pytest.mark.parametrize("seed", [3, 4])
def test_metrics_on_a_subset_of_rows_in_float32(seed: int) -> None:
    scores, train, test = random_case(seed)
    rows = np.array([9, 2, 4, 5, 9, 0, 11])  # arbitrary order, repeats
    sub = scores[rows].astype(np.float32)
    ranked = top_k(sub, 5, train, rows)
    assert ranked.dtype.kind == "i"
    np.testing.assert_array_equal(ranked, [naive_top_k(list(scores[u]), 5, row_set(train, u)) for u in rows])
    expected_auc = [naive_auc(list(scores[u]), row_set(test, u), row_set(train, u)) for u in rows]
    np.testing.assert_allclose(auc(sub, test, train, rows), expected_auc)
    # without exclusions every item is a candidate / negative
    np.testing.assert_array_equal(top_k(sub, 5), [naive_top_k(list(scores[u]), 5, set()) for u in rows])
    expected_auc = [naive_auc(list(scores[u]), row_set(test, u), set()) for u in rows]
    np.testing.assert_allclose(auc(sub, test, None, rows), expected_auc)


@pytest.mark.parametrize("count_positives", [0, 10**9])
def test_auc_sorting_and_counting_paths_agree(monkeypatch: pytest.MonkeyPatch, count_positives: int) -> None:
    monkeypatch.setattr(metrics, "_COUNT_POSITIVES", count_positives)
    rng = np.random.default_rng(9)
    scores = rng.integers(0, 8, size=(12, 50)).astype(np.float32)
    test = sp.csr_matrix(rng.random((12, 50)) < 0.5)  # many positives per row
    train = sp.csr_matrix(rng.random((12, 50)) < 0.3)
    rows = np.arange(12)
    expected = [naive_auc(list(scores[u]), row_set(test, u), row_set(train, u)) for u in rows]
    np.testing.assert_allclose(auc(scores, test, train, rows), expected)


def test_continuous_scores_with_boundary_ties_match_naive() -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(40, 60))
    scores[:, 10:20] = scores[:, [10]]  # a block of ties that straddles the k-th place in many rows
    scores[3, 7] = np.nan  # NaN ranks like -inf
    scores[4, :5] = -np.inf  # -inf scores are still candidates, unlike excluded items
    dense_excl = rng.random((40, 60)) < 0.5
    dense_excl[4] = np.arange(60) == 0
    excl = sp.csr_matrix(dense_excl)
    rows = np.arange(40)
    for k in (1, 12, 58, 70):
        expected = [naive_top_k(list(scores[u]), k, row_set(excl, u)) for u in rows]
        np.testing.assert_array_equal(top_k(scores, k, excl, rows), expected)


def test_top_k_edge_cases() -> None:
    scores = np.array([[3.0, 3.0, 3.0, 1.0], [0.0, 5.0, -np.inf, 2.0]])
    np.testing.assert_array_equal(top_k(scores, 2), [[0, 1], [1, 3]])
    np.testing.assert_array_equal(top_k(scores, 6), [[0, 1, 2, 3, -1, -1], [1, 3, 0, 2, -1, -1]])
    everything = sp.csr_matrix(np.ones((2, 4)))
    np.testing.assert_array_equal(top_k(scores, 2, everything), [[-1, -1], [-1, -1]])
    # the exclude row is chosen by `rows`: row 0 uses exclude[1] = {1, 3}, row 1 uses exclude[0] = {0}
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]))
    np.testing.assert_array_equal(top_k(scores, 3, exclude, np.array([1, 0])), [[0, 2, -1], [1, 3, 2]])
    with pytest.raises(ValueError):
        top_k(scores, 0)


def test_padding_never_hits_and_counts_as_a_precision_miss() -> None:
    ranked = np.array([[2, -1, -1]])
    relevant = sp.csr_matrix(np.array([[0, 0, 1, 1]]))
    h = hits(ranked, relevant, np.array([0]))
    np.testing.assert_array_equal(h, [[True, False, False]])
    np.testing.assert_allclose(precision_at_k(h, 3), [1 / 3])
    assert coverage(ranked, 4) == 0.25
    assert coverage(np.full((2, 3), -1), 4) == 0.0


# ---------------------------------------------------------------- hand-computed case


def test_hand_computed_case() -> None:
    # user 0: scores .1 .9 .5 .5 .3, train {1}, test {3, 4}
    #   candidates 0(.1) 2(.5) 3(.5) 4(.3) -> ranking 2, 3 (tie -> lower index first), 4, 0; top-2 = [2, 3]
    #   hits [F, T]: recall 1/2, precision 1/2, DCG = 1/log2(3), IDCG = 1 + 1/log2(3) -> nDCG ~ 0.38685
    #   AP = P@2 * 1 / min(2, 2) = (1/2) / 2 = 0.25
    #   AUC: positives 3(.5), 4(.3); negatives 0(.1), 2(.5): (3,0)=1 (3,2)=.5 (4,0)=1 (4,2)=0 -> 2.5/4 = 0.625
    # user 1: scores .4 .2 .8 .6 0, train {2}, test {0}
    #   candidates 0(.4) 1(.2) 3(.6) 4(0) -> ranking 3, 0, 1, 4; top-2 = [3, 0]
    #   hits [F, T]: recall 1, precision 1/2, DCG = 1/log2(3), IDCG = 1 -> nDCG ~ 0.63093; AP = (1/2)/1 = 0.5
    #   AUC: positive 0(.4) vs negatives .2, .6, 0 -> 2/3
    # coverage: items {0, 2, 3} of 5 = 0.6
    scores = np.array([[0.1, 0.9, 0.5, 0.5, 0.3], [0.4, 0.2, 0.8, 0.6, 0.0]])
    train = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [0, 0, 1, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0, 1, 1], [1, 0, 0, 0, 0]], dtype=np.float32))
    rows = np.array([0, 1])
    ranked = top_k(scores, 2, train, rows)
    np.testing.assert_array_equal(ranked, [[2, 3], [3, 0]])
    h = hits(ranked, test, rows)
    n_rel = np.array([2, 1])
    d = 1 / math.log2(3)
    np.testing.assert_allclose(recall_at_k(h, n_rel), [0.5, 1.0])
    np.testing.assert_allclose(precision_at_k(h, 2), [0.5, 0.5])
    np.testing.assert_allclose(ndcg_at_k(h, n_rel), [d / (1 + d), d])
    np.testing.assert_allclose(ndcg_at_k(h, n_rel), [0.386853, 0.630930], atol=1e-6)
    np.testing.assert_allclose(average_precision_at_k(h, n_rel), [0.25, 0.5])
    np.testing.assert_allclose(auc(scores, test, train, rows), [0.625, 2 / 3])
    assert coverage(ranked, 5) == pytest.approx(0.6)

    result = evaluate_ranking(lambda u: scores[u], train, test, k=2)
    expected = {
        "recall": 0.75,
        "precision": 0.5,
        "ndcg": (d / (1 + d) + d) / 2,
        "map": 0.375,
        "auc": (0.625 + 2 / 3) / 2,
        "coverage": 0.6,
        "users": 2,
    }
    assert result == pytest.approx(expected)


# ---------------------------------------------------------------- limiting scorers


def disjoint_case(seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    train = rng.random((30, 40)) < 0.2
    test = (rng.random((30, 40)) < 0.2) & ~train
    test[0] = False
    return sp.csr_matrix(train.astype(np.float32)), sp.csr_matrix(test.astype(np.float32))


@pytest.mark.parametrize("k", [1, 5, 40])
def test_perfect_reversed_and_constant_scorers(k: int) -> None:
    train, test = disjoint_case(6)
    indicator = test.toarray()
    rows = np.flatnonzero(np.diff(test.indptr) > 0)
    n_rel = np.diff(test.indptr)[rows]
    perfect = indicator[rows]
    h = hits(top_k(perfect, k, train, rows), test, rows)
    np.testing.assert_allclose(recall_at_k(h, n_rel), np.minimum(k, n_rel) / n_rel)
    np.testing.assert_allclose(precision_at_k(h, k), np.minimum(k, n_rel) / k)
    np.testing.assert_allclose(ndcg_at_k(h, n_rel), 1.0)
    np.testing.assert_allclose(average_precision_at_k(h, n_rel), 1.0)
    np.testing.assert_allclose(auc(perfect, test, train, rows), 1.0)
    np.testing.assert_allclose(auc(-perfect, test, train, rows), 0.0)
    np.testing.assert_allclose(auc(np.full_like(perfect, 3.0), test, train, rows), 0.5)
    result = evaluate_ranking(lambda u: indicator[u], train, test, k)
    assert result["ndcg"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(1.0)
    assert result["auc"] == pytest.approx(1.0)
    assert result["users"] == len(rows)


def test_auc_is_nan_without_positives_or_negatives() -> None:
    scores = np.zeros((3, 3))
    relevant = sp.csr_matrix(np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0]]))
    exclude = sp.csr_matrix(np.array([[0, 0, 0], [0, 0, 0], [0, 1, 1]]))
    assert np.isnan(auc(scores, relevant, exclude, np.arange(3))).all()
    nan_rows = recall_at_k(np.zeros((1, 2), bool), np.array([0]))
    assert np.isnan(nan_rows).all()


# ---------------------------------------------------------------- evaluate_ranking


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_ranking_matches_naive_and_ignores_batch_size(seed: int) -> None:
    scores, train, test = random_case(seed)
    users = np.array([7, 0, 3, 5, 6, 4, 10, 12, 15, 20, 23, 8])
    expected = naive_evaluate(scores, train, test, 4, users)
    results = [evaluate_ranking(lambda u: scores[u], train, test, 4, users, batch_size=b) for b in (1, 3, 256)]
    for result in results:
        assert result == pytest.approx(expected, nan_ok=True)
        assert result == results[0]
    everyone = evaluate_ranking(lambda u: scores[u], train, test, 4)
    assert everyone == pytest.approx(naive_evaluate(scores, train, test, 4, range(scores.shape[0])))
    assert everyone["users"] == int((np.diff(test.indptr) > 0).sum())


def test_evaluate_ranking_rejects_bad_scores_and_handles_no_users() -> None:
    train, test = disjoint_case(7)
    with pytest.raises(ValueError):
        evaluate_ranking(lambda u: np.zeros((len(u), 3)), train, test, 5)
    empty = evaluate_ranking(lambda u: np.zeros((len(u), 40)), train, test, 5, users=np.array([0]))
    assert empty["users"] == 0 and empty["coverage"] == 0.0 and np.isnan(empty["recall"])


# ---------------------------------------------------------------- baselines


def test_random_scores_do_not_depend_on_batching() -> None:
    fn = random_scores(50, seed=11)
    together = fn(np.array([3, 1, 2]))
    assert together.shape == (3, 50)
    np.testing.assert_array_equal(together[1], fn(np.array([1]))[0])
    np.testing.assert_array_equal(together, random_scores(50, seed=11)(np.array([3, 1, 2])))
    assert not np.array_equal(together, random_scores(50, seed=12)(np.array([3, 1, 2])))
    assert not np.array_equal(together[0], together[1])
    train, test = disjoint_case(8)
    fn40 = random_scores(40, seed=1)
    results = [evaluate_ranking(fn40, train, test, 5, batch_size=b) for b in (1, 3, 256)]
    assert results[0] == results[1] == results[2]
    assert 0.2 < results[0]["auc"] < 0.8


def test_popularity_scores_rank_by_train_counts() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 1, 0, 1], [0, 0, 1, 0, 1], [0, 0, 1, 1, 0], [1, 0, 0, 0, 0]]))
    # counts per item: 2, 0, 3, 1, 2
    fn = popularity_scores(train)
    scores = fn(np.array([0, 2, 3]))
    np.testing.assert_array_equal(scores, np.tile([2.0, 0.0, 3.0, 1.0, 2.0], (3, 1)))
    np.testing.assert_array_equal(top_k(scores[:1], 5), [[2, 0, 4, 3, 1]])
    np.testing.assert_array_equal(top_k(fn(np.array([3])), 3, train, np.array([3])), [[2, 4, 3]])


def test_a_score_functions_own_array_is_ranked_in_place_and_a_view_is_never_touched() -> None:
    """The batch's scores are not copied when they are the score function's fresh float array (NaN set to -inf in
    place), and a function that hands out a view of an array it keeps finds that array as it was."""
    fresh = np.array([[1.0, np.nan], [np.nan, 2.0]], dtype=np.float32)
    assert metrics._as_float_scores(fresh, reuse=True) is fresh
    np.testing.assert_array_equal(fresh, [[1.0, -np.inf], [-np.inf, 2.0]])
    ints = np.array([[1, 2]])
    assert metrics._as_float_scores(ints, reuse=True).dtype == np.float64 and ints.dtype.kind == "i"

    train, test = disjoint_case(8)
    kept = np.random.default_rng(3).random((30, 40))
    kept[:, ::7] = np.nan
    before = kept.copy()
    sliced = evaluate_ranking(lambda u: kept[u[0] : u[0] + 1], train, test, 5, batch_size=1)  # a view: not its own
    np.testing.assert_array_equal(kept, before)
    assert sliced == evaluate_ranking(lambda u: kept[u], train, test, 5, batch_size=3)  # fancy indexing: fresh
