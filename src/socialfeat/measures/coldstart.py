"""Cold-start audience prediction: can a feature source tell which users will engage with an image nobody has seen?

Each source maps an item's features to predicted item factors v̂ — by ridge regression fit on the warm (train) items
to their ALS factors, with λ chosen on the valid cold items, or directly when the source is a factor head — and
every user's score for a test cold item is u·v̂. The hidden interactions of the test items are the truth.

Users are ranked on a seeded sample (:func:`sample_users`) when there are more than the config asks for; every row
keeps its per-user AUCs and each test item's influence (:class:`Ranked`), so that a stage can bootstrap intervals
over the same users and items.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from socialfeat.artifacts import read_json, read_table
from socialfeat.errors import UserError
from socialfeat.features import feature_batches, read_features
from socialfeat.measures.metrics import (
    Standardized,
    auc_item_influence,
    auc_per_user,
    mean_or_nan,
    ndcg_at_k,
    recall_at_k,
    ridge_path,
    select_best,
    standardizer,
    top_k,
)

log = logging.getLogger(__name__)

# scores are computed for this many user × item cells at a time (≈ 16 MB of float32 + the sort's work arrays)
CHUNK_CELLS = 4_000_000

ScoreFn = Callable[[np.ndarray], np.ndarray]  # user rows → scores (len(rows) × items)


@dataclass
class ColdStartData:
    """Everything the cold-start protocol needs, aligned by item_idx and user_idx."""

    item_ids: list[Any]  # by item_idx
    split: np.ndarray  # str per item_idx: train | valid | test
    train: np.ndarray  # item_idx of the warm items with factors
    valid: np.ndarray  # item_idx of the valid cold items
    test: np.ndarray  # item_idx of the test cold items
    item_factors: np.ndarray  # len(train) × f, aligned with ``train``
    user_factors: np.ndarray  # n_users × f, by user_idx
    valid_truth: sp.csr_matrix  # users × len(valid), 1 where the hidden log has the pair
    test_truth: sp.csr_matrix  # users × len(test)
    normalize: str  # how targets/ scaled the factors a factor head learned ("l2", "standardize", "none")
    test_users: np.ndarray | None = None  # the users every row is ranked on (None: every eligible user)
    valid_users: np.ndarray | None = None  # the users λ is chosen on (None: every eligible user of the valid items)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _matrix(table: Any, column: str) -> np.ndarray:
    col = table.column(column).combine_chunks()
    return col.flatten().to_numpy().reshape(len(table), col.type.list_size).astype(np.float32)


def load_coldstart(run: Path) -> ColdStartData:
    """Read the factorize outputs of a run; a missing file or a run without cold items is a :class:`UserError`."""
    factors = run / "factors"
    needed = ["item_split.parquet", "item_factors.parquet", "user_factors.parquet", "cold_interactions.parquet"]
    for name in needed:
        if not (factors / name).is_file():
            raise UserError(str(run), f"no factors/{name}; run `socialfeat factorize {run}` first")
    split_t = read_table(factors / "item_split.parquet")
    n_items = len(split_t)
    idx = split_t.column("item_idx").to_numpy()
    item_ids: list[Any] = [None] * n_items
    split = np.empty(n_items, dtype=object)
    for i, item, s in zip(idx, split_t.column("item_id").to_pylist(), split_t.column("split").to_pylist(), strict=True):
        item_ids[int(i)] = item
        split[int(i)] = s
    split = split.astype(str)
    valid, test = np.nonzero(split == "valid")[0], np.nonzero(split == "test")[0]
    if len(test) == 0 or len(valid) == 0:
        raise UserError(
            str(run),
            "the run has no cold valid/test items to evaluate on; factorize with --cold-fraction 0.2 or --cold-items "
            "FILE first",
        )
    item_t = read_table(factors / "item_factors.parquet")
    order = np.argsort(item_t.column("item_idx").to_numpy())
    train = item_t.column("item_idx").to_numpy()[order].astype(np.int64)
    item_factors = _matrix(item_t, "factors")[order]
    user_t = read_table(factors / "user_factors.parquet")
    user_idx = user_t.column("user_idx").to_numpy()
    user_factors = np.zeros((int(user_idx.max()) + 1 if len(user_idx) else 0, item_factors.shape[1]), np.float32)
    user_factors[user_idx] = _matrix(user_t, "factors")
    cold = read_table(factors / "cold_interactions.parquet", columns=["user_idx", "item_idx"])
    users, items = cold.column("user_idx").to_numpy(), cold.column("item_idx").to_numpy()
    n_users = max(len(user_factors), int(users.max()) + 1 if len(users) else 0)
    if n_users > len(user_factors):  # a user seen only with cold items has no factors: scores 0 for every item
        user_factors = np.vstack([user_factors, np.zeros((n_users - len(user_factors), user_factors.shape[1]))])
    normalize = "l2"
    summary = run / "targets" / "summary.json"
    if summary.is_file():
        normalize = read_json(summary, run=run).get("factors", {}).get("normalize", "l2")
    return ColdStartData(
        item_ids=item_ids,
        split=split,
        train=train,
        valid=valid,
        test=test,
        item_factors=item_factors,
        user_factors=user_factors.astype(np.float32),
        valid_truth=_truth(users, items, valid, n_users, n_items),
        test_truth=_truth(users, items, test, n_users, n_items),
        normalize=normalize,
    )


def _truth(users: np.ndarray, items: np.ndarray, cols: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary users × len(cols) matrix of the (user, item) pairs whose item is in ``cols``."""
    position = np.full(n_items, -1, dtype=np.int64)
    position[cols] = np.arange(len(cols))
    keep = position[items] >= 0
    m = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (users[keep], position[items[keep]])), shape=(n_users, len(cols))
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def aligned_features(run: Path, source: str, column: str, data: ColdStartData) -> tuple[np.ndarray, np.ndarray]:
    """(n_items × d matrix by item_idx, bool mask of items that have a vector) for one feature column of
    ``features/<source>.parquet``: how every source (evaluate's rows, the content model's image blocks) meets the
    cold-start protocol's items."""
    position = {str(item): idx for idx, item in enumerate(data.item_ids)}
    features: np.ndarray | None = None
    has = np.zeros(data.n_items, dtype=bool)
    unmatched = 0
    for ids, matrix in feature_batches(run, source, column):  # streamed: the matrix and one batch in memory
        if features is None:
            check_feature_memory(source, data.n_items, matrix.shape[1])
            features = np.zeros((data.n_items, matrix.shape[1]), np.float32)
        rows = np.array([position.get(str(i), -1) for i in ids], dtype=np.int64)
        found = rows >= 0
        unmatched += int((~found).sum())
        features[rows[found]] = matrix[found] if not found.all() else matrix
        has[rows[found]] = True
    if unmatched:
        log.warning("%s: %d feature rows match no item of the run; ignored", source, unmatched)
    if features is None:  # an empty file: its width from the schema
        features = np.zeros((data.n_items, read_features(run, source, column)[1].shape[1]), np.float32)
    return features, has


def check_feature_memory(source: str, n_items: int, width: int) -> None:
    """Refuse a feature matrix that does not fit in memory, before it is allocated: the float32 items × width
    matrix and one standardised copy of it (the ridge's), as assumed here."""
    from socialfeat.resources import check_memory

    check_memory(
        2 * 4 * n_items * width,
        f"features/{source}.parquet",
        f"{n_items:,} items × {width:,} float32 features (and the ridge's standardised copy)",
        "leave this source out (evaluate.sources, content.sources) or use a machine with more memory",
    )


def eligible_users(truth: sp.csr_matrix) -> np.ndarray:
    """Users with at least one positive and one negative among the evaluated items: AUC is defined for them."""
    n_pos = np.diff(truth.indptr)
    return np.nonzero((n_pos > 0) & (n_pos < truth.shape[1]))[0]


def sample_users(truth: sp.csr_matrix, n: int, seed: int | list[int]) -> np.ndarray:
    """A seeded sample of ``n`` eligible users of ``truth`` (sorted; all of them when ``n`` is 0 or not fewer)."""
    users = eligible_users(truth)
    if n and len(users) > n:
        users = np.sort(np.random.default_rng(seed).choice(users, n, replace=False))
    return users


def sampled(data: ColdStartData, users: int, valid_users: int, seed: int) -> ColdStartData:
    """``data`` ranking a seeded sample of ``users`` eligible test users and ``valid_users`` eligible valid users
    (0 = all): the ranking costs users × cold items, so the sample is what keeps a 309K-user catalogue in minutes."""
    return replace(
        data,
        test_users=sample_users(data.test_truth, users, seed),
        valid_users=sample_users(data.valid_truth, valid_users, [seed, 1]),
    )


def user_sample(data: ColdStartData, seed: int) -> dict[str, Any]:
    """What the cold-start numbers are averaged over: the sampled users of all eligible ones, and the seed."""
    users, eligible = len(data.test_users), len(eligible_users(data.test_truth))
    valid, valid_eligible = len(data.valid_users), len(eligible_users(data.valid_truth))
    text = f"AUC over {users:,} of {eligible:,} users" + (f", seed {seed}" if users < eligible else "")
    return {
        "users": users,
        "of": eligible,
        "valid_users": valid,
        "valid_of": valid_eligible,
        "seed": seed,
        "sampled": users < eligible or valid < valid_eligible,
        "text": text,
    }


def _chunks(rows: np.ndarray, n_items: int) -> list[np.ndarray]:
    size = max(1, CHUNK_CELLS // max(n_items, 1))
    return [rows[i : i + size] for i in range(0, len(rows), size)]


@dataclass
class Ranked:
    """Per-user metrics of one row, aligned with ``users`` (recall and NDCG only when ranked with a k)."""

    users: np.ndarray
    auc: np.ndarray
    recall: np.ndarray | None
    ndcg: np.ndarray | None
    k: int | None
    item_influence: np.ndarray | None = None  # by test column: d(mean AUC)/d(item weight), for a two-way bootstrap

    def summary(self) -> dict[str, Any]:
        """Means over the users (a user without a defined metric skipped), and how many users were ranked."""
        result: dict[str, Any] = {"auc": mean_or_nan(self.auc)}
        if self.k is not None:
            result[f"recall@{self.k}"] = mean_or_nan(self.recall)
            result[f"ndcg@{self.k}"] = mean_or_nan(self.ndcg)
        result["users"] = len(self.users)
        return result


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def score_users(
    score: ScoreFn,
    truth: sp.csr_matrix,
    k: int | None,
    users: np.ndarray | None = None,
    influence: bool = False,
) -> Ranked:
    """Per-user AUC (and recall@k, NDCG@k when ``k``) of ``users`` (default: every eligible user), streamed in
    user chunks spread over the cores (the sorts release the GIL; measured 1.7× on 2 cores). BLAS keeps to one
    thread per chunk, so the scores, and the metrics, do not depend on how many workers there are.

    With ``influence``, also each item's first-order effect on the mean AUC (:func:`auc_item_influence`): what a
    bootstrap over the items as well as the users needs, at the cost of one more sort per chunk."""
    from threadpoolctl import threadpool_limits

    users = eligible_users(truth) if users is None else np.asarray(users, dtype=np.int64)
    n_items = truth.shape[1]

    def one(rows: np.ndarray) -> tuple[Any, ...]:
        scores = score(rows)
        positives = truth[rows].toarray() > 0
        extra = auc_item_influence(scores, positives) if influence else None
        if k is None:
            return auc_per_user(scores, positives), None, None, extra
        ranked = top_k(scores, k)
        return auc_per_user(scores, positives), recall_at_k(ranked, positives), ndcg_at_k(ranked, positives), extra

    chunks = _chunks(users, truth.shape[1])
    workers = min(_workers(), len(chunks))
    with threadpool_limits(1, user_api="blas"):  # one BLAS thread per chunk: the same bits however many workers
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(one, chunks))
        else:
            parts = [one(rows) for rows in chunks]

    def joined(i: int) -> np.ndarray:
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros(0)

    item_influence = None
    if influence:
        total, defined = np.zeros(n_items), 0
        for p in parts:
            total += p[3][0]
            defined += p[3][1]
        item_influence = total / defined if defined else total
    return Ranked(
        users, joined(0), joined(1) if k is not None else None, joined(2) if k is not None else None, k, item_influence
    )


def rank_users(score: ScoreFn, truth: sp.csr_matrix, k: int | None, users: np.ndarray | None = None) -> dict[str, Any]:
    """Mean per-user AUC (and recall@k, NDCG@k when ``k``) over ``users`` (default: every eligible user)."""
    return score_users(score, truth, k, users).summary()


def factor_scores(user_factors: np.ndarray, item_vectors: np.ndarray) -> ScoreFn:
    """Scores u·v̂ for the given user rows against every row of ``item_vectors``."""
    v = np.ascontiguousarray(item_vectors, dtype=np.float32).T
    return lambda rows: user_factors[rows] @ v


Features = np.ndarray | sp.csr_matrix  # n × d by item_idx; the metadata one-hot stays sparse


@dataclass
class RidgeMap:
    """A fitted map from one source's features to item factors: standardise, multiply, add the mean factor."""

    mean_x: np.ndarray
    std_x: np.ndarray
    weight: np.ndarray  # d × f
    mean_v: np.ndarray

    def predict(self, features: Features) -> np.ndarray:
        """Predicted factors (float32). Dense rows are standardised a chunk at a time in their own dtype (no float64
        copy of the catalogue); a sparse matrix is never centred (:class:`Standardized`)."""
        if sp.issparse(features):
            z = Standardized(sp.csr_matrix(features), np.asarray(self.mean_x, np.float64), np.asarray(self.std_x))
            return (z.dot(self.weight) + self.mean_v).astype(np.float32)
        x = np.asarray(features)
        dtype = np.result_type(x.dtype, np.float32)
        mean, std = np.asarray(self.mean_x, dtype), np.asarray(self.std_x, dtype)
        weight, mean_v = np.asarray(self.weight, dtype), np.asarray(self.mean_v, dtype)
        out = np.empty((len(x), weight.shape[1]), np.float32)
        step = max(1, CHUNK_CELLS // max(x.shape[1], 1))
        for i in range(0, len(x), step):
            out[i : i + step] = ((x[i : i + step] - mean) / std) @ weight + mean_v
        return out

    def predict_items(self, features: Features, has: np.ndarray) -> np.ndarray:
        """Every item's predicted factors (``features`` by item_idx); an item without features gets the mean
        factor vector (its standardised features taken as 0), so every source ranks the same items."""
        v = self.predict(features)
        v[~np.asarray(has, dtype=bool)] = np.asarray(self.mean_v, np.float32)
        return v


def _standardized_fit(features: Features, fit: np.ndarray) -> tuple[np.ndarray | Standardized, np.ndarray, np.ndarray]:
    """(Z of the fit rows, mean, std): dense rows standardised in place in their copy (float32 stays float32), a
    sparse matrix wrapped, not centred."""
    if sp.issparse(features):
        x = sp.csr_matrix(features)[fit]
        mean_x, std_x = standardizer(x)
        return Standardized(x, mean_x, std_x), mean_x, std_x
    z = np.asarray(features)[fit]  # the one copy: the fit rows
    if z.dtype not in (np.float32, np.float64):
        z = z.astype(np.float32)
    mean_x, std_x = standardizer(z)
    z -= mean_x.astype(z.dtype)
    z /= std_x.astype(z.dtype)
    return z, mean_x, std_x


def fit_ridge_map(
    features: Features, has: np.ndarray, data: ColdStartData, lambdas: list[float]
) -> tuple[RidgeMap, dict[str, Any]]:
    """Ridge from standardised features to centred factors, λ chosen by mean per-user AUC on the valid cold items
    (``features``: n_items × d by item_idx, dense or sparse; ``has`` marks items with features) over
    ``data.valid_users``. Returns the map at the chosen λ and the choice made (λ, valid AUC per λ, items fit on)."""
    fit = data.train[has[data.train]]
    if len(fit) < 2:
        raise UserError("features", f"only {len(fit)} warm items have features; cannot fit the ridge mapping")
    targets = data.item_factors[has[data.train]]
    z_fit, mean_x, std_x = _standardized_fit(features, fit)
    mean_v = targets.mean(axis=0)
    weights = ridge_path(z_fit, targets - mean_v, lambdas)
    del z_fit
    x_valid = features[data.valid]
    valid_aucs = []
    for w in weights:
        v_hat = RidgeMap(mean_x, std_x, w, mean_v).predict_items(x_valid, has[data.valid])  # no features: the mean
        scored = rank_users(factor_scores(data.user_factors, v_hat), data.valid_truth, None, data.valid_users)
        valid_aucs.append(scored["auc"])
    best, valid_auc = select_best(lambdas, valid_aucs)
    info = {
        "lambda": float(lambdas[best]),
        "valid_auc": valid_auc,
        "valid_auc_by_lambda": {str(lam): a for lam, a in zip(lambdas, valid_aucs, strict=True)},
        "fit_items": len(fit),
    }
    return RidgeMap(mean_x, std_x, weights[best], mean_v), info


def ridge_predictions(
    features: Features, has: np.ndarray, data: ColdStartData, lambdas: list[float]
) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`fit_ridge_map`, applied to every item: v̂ by item_idx, an item without features predicted the mean
    factor vector (its standardised features taken as 0), so every source ranks the same test items."""
    ridge, info = fit_ridge_map(features, has, data, lambdas)
    return ridge.predict_items(features, has), info


def head_predictions(head: np.ndarray, has: np.ndarray, data: ColdStartData) -> np.ndarray:
    """A factor head's output as predicted factors, undoing the targets' standardisation when there was one."""
    v = np.zeros((data.n_items, head.shape[1]), np.float32)
    v[has] = head[has]
    if data.normalize == "standardize":
        mean, std = data.item_factors.mean(axis=0), np.maximum(data.item_factors.std(axis=0), 1e-12)
        v[has] = v[has] * std + mean
    return v


def coldstart_scored(
    features: Features,
    has: np.ndarray,
    mapping: str,
    data: ColdStartData,
    lambdas: list[float],
    k: int,
    influence: bool = True,
) -> tuple[dict[str, Any], Ranked]:
    """The cold-start metrics of one source row — ``mapping`` "ridge" (fit, λ on valid) or "head" (direct) — and
    its per-user test metrics on ``data.test_users`` (what the stage bootstraps), with each test item's influence
    when ``influence`` (a bootstrap over the items needs it)."""
    if mapping == "ridge":
        v_hat, info = ridge_predictions(features, has, data, lambdas)
    elif mapping == "head":
        if features.shape[1] != data.item_factors.shape[1]:
            raise ValueError(f"head width {features.shape[1]} is not the factor width {data.item_factors.shape[1]}")
        v_hat = head_predictions(np.asarray(features), has, data)
        valid = rank_users(
            factor_scores(data.user_factors, v_hat[data.valid]), data.valid_truth, None, data.valid_users
        )
        info = {"lambda": None, "valid_auc": valid["auc"]}
    else:
        raise ValueError(f"unknown mapping {mapping!r}")
    ranked = score_users(
        factor_scores(data.user_factors, v_hat[data.test]), data.test_truth, k, data.test_users, influence=influence
    )
    missing = int((~has[data.test]).sum() + (~has[data.valid]).sum())
    return {**ranked.summary(), **info, "cold_items_without_features": missing}, ranked


def coldstart_row(
    features: Features, has: np.ndarray, mapping: str, data: ColdStartData, lambdas: list[float], k: int
) -> dict[str, Any]:
    """The cold-start metrics of one source row (:func:`coldstart_scored` without the per-user arrays)."""
    return coldstart_scored(features, has, mapping, data, lambdas, k, influence=False)[0]


def random_scored(data: ColdStartData, k: int, seed: int, influence: bool = True) -> Ranked:
    """Uniform random scores: the floor every source must beat (AUC 0.5 in expectation)."""
    n = len(data.test)

    def score(rows: np.ndarray) -> np.ndarray:
        # one generator per chunk, seeded by its first user: the same scores however the chunks fall
        rng = np.random.default_rng([seed, int(rows[0]) if len(rows) else 0])
        return rng.random((len(rows), n), dtype=np.float32)

    return score_users(score, data.test_truth, k, data.test_users, influence=influence)


def random_reference(data: ColdStartData, k: int, seed: int) -> dict[str, Any]:
    """:func:`random_scored`'s means."""
    return random_scored(data, k, seed, influence=False).summary()


def popularity_scored(data: ColdStartData, k: int, influence: bool = True) -> Ranked:
    """Test items ranked by their true number of cold interactions, the same list for every user.

    An oracle: it sees the hidden interactions it is scored on. It shows how much of the task popularity alone
    would solve — the ceiling of any predictor that only guesses how popular a new image will be.
    """
    counts = np.asarray(data.test_truth.sum(axis=0), dtype=np.float32).ravel()
    return score_users(
        lambda rows: np.broadcast_to(counts, (len(rows), len(counts))),
        data.test_truth,
        k,
        data.test_users,
        influence=influence,
    )


def popularity_oracle(data: ColdStartData, k: int) -> dict[str, Any]:
    """:func:`popularity_scored`'s means."""
    return popularity_scored(data, k, influence=False).summary()
