"""The content stage at scale, on a planted problem in memory (no run folder, no text model): the Gram matrices built
once equal the row-wise products (dense, sparse, items lacking a block); the search solved from them picks what a
row-wise search picks (each block's λ, every fusion's weights, the joint λs and dropout); each row's interval is a
naive bootstrap of its per-user AUCs; and sampling every user scores exactly what the full protocol scores."""

from __future__ import annotations

import itertools
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from socialfeat.config import load_config
from socialfeat.content import Block, fit_models
from socialfeat.content.gram import Grams
from socialfeat.content.joint import DROPOUTS
from socialfeat.content.stage import fuse, intervals
from socialfeat.measures.coldstart import (
    ColdStartData,
    _truth,
    factor_scores,
    rank_users,
    sampled,
    score_users,
)
from socialfeat.measures.metrics import select_best, standardizer

F = 8
LAMBDAS = [0.1, 1.0, 10.0, 100.0, 1000.0]


def planted(n_items: int = 700, n_users: int = 400, seed: int = 0) -> tuple[ColdStartData, list[Block]]:
    """Users and items in an 8-d taste space; each user's cold interactions are the 5 of 30 random cold items they
    like most. Three blocks see the taste differently: an image-like dense block (a noisy linear image, offset like
    pooled ReLUs), a sparse tags one-hot (a tag per facet, 10% of items untagged) and a numeric block (two noisy
    coordinates, 15% of items without them)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n_items, F)) / math.sqrt(F)
    u = rng.normal(size=(n_users, F)).astype(np.float32)
    split = rng.choice(3, n_items, p=[0.6, 0.2, 0.2])
    cold = np.nonzero(split > 0)[0]
    candidates = cold[rng.integers(0, len(cold), (n_users, 30))]
    taste = np.einsum("uf,ucf->uc", u, v[candidates]) + rng.normal(0, 0.5, candidates.shape)
    liked = np.take_along_axis(candidates, np.argsort(-taste, axis=1)[:, :5], axis=1)
    users, items = np.repeat(np.arange(n_users), 5), liked.ravel()
    train, valid, test = (np.nonzero(split == s)[0] for s in range(3))
    data = ColdStartData(
        item_ids=list(range(n_items)),
        split=np.array(["train", "valid", "test"])[split],
        train=train,
        valid=valid,
        test=test,
        item_factors=(v[train] + rng.normal(0, 0.1, (len(train), F))).astype(np.float32),
        user_factors=u,
        valid_truth=_truth(users, items, valid, n_users, n_items),
        test_truth=_truth(users, items, test, n_users, n_items),
        normalize="none",
    )
    image = (v @ rng.normal(size=(F, 24)) + rng.normal(0, 0.8, (n_items, 24)) + 2.0).astype(np.float32)
    facets = rng.normal(size=(4, F, 10))
    cols = np.stack([f * 10 + np.argmax(v @ facets[f] * 3 + rng.gumbel(size=(n_items, 10)), 1) for f in range(4)], 1)
    tagged = rng.random(n_items) > 0.1
    rows = np.repeat(np.arange(n_items), 4)
    keep = np.repeat(tagged, 4)
    tags = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rows[keep], cols.ravel()[keep])), shape=(n_items, 40))
    has_numeric = rng.random(n_items) > 0.15
    numeric = (v[:, :2] * 2 + rng.normal(0, 0.7, (n_items, 2))).astype(np.float32)
    numeric[~has_numeric] = 0
    blocks = [
        Block("learned", image, np.ones(n_items, bool), {}),
        Block("tags", tags, tagged, {}),
        Block("numeric", numeric, has_numeric, {}),
    ]
    return data, blocks


def settings(*extra: str):  # noqa: ANN201
    return load_config(None, ["content.fusion_step=0.25", "content.image=learned", *extra]).content


# ------------------------------------------------------------------------------------------ the row-wise reference
def standardised_rows(blocks: list[Block], data: ColdStartData) -> dict[str, np.ndarray]:
    """Every item's standardised rows, dense float64 (what the stage never holds): 0 where an item lacks the block."""
    out = {}
    for b in blocks:
        x = b.features.toarray() if sp.issparse(b.features) else b.features
        x = np.asarray(x, np.float64)
        mean, std = standardizer(x[data.train[b.has[data.train]]])
        z = (x - mean) / std
        z[~b.has] = 0
        out[b.name] = z
    return out


def valid_score(v: np.ndarray, data: ColdStartData) -> float:
    return rank_users(factor_scores(data.user_factors, v[data.valid]), data.valid_truth, None, data.valid_users)["auc"]


def rowwise_search(blocks: list[Block], data: ColdStartData, step: float) -> dict[str, object]:
    """The search as the stage did it before its Gram reuse: the warm rows multiplied out for every fit, every item
    predicted for every trial, fusions scored again wherever they recur."""
    z = standardised_rows(blocks, data)
    has = {b.name: b.has for b in blocks}
    y = data.item_factors.astype(np.float64)
    mean_v = y.mean(axis=0)

    def joint_fit(combo: list[str], lams: dict[str, float], p: float) -> np.ndarray:
        """Predicted factors of every item from the joint ridge, fit from the rows (no fallbacks)."""
        keep = 1 - p
        x = np.hstack([z[b][data.train] for b in combo])
        g = keep * keep * (x.T @ x)
        at = np.cumsum([0] + [z[b].shape[1] for b in combo])
        for i, b in enumerate(combo):
            s = slice(at[i], at[i + 1])
            g[s, s] = keep * (x[:, s].T @ x[:, s]) + lams[b] * np.eye(at[i + 1] - at[i])
        w = np.linalg.solve(g, keep * x.T @ (y - mean_v))
        return mean_v + np.hstack([z[b] for b in combo]) @ w

    lambdas, predictions = {}, {}
    for b in blocks:
        fit = b.has[data.train]
        mean = y[fit].mean(axis=0)
        x = z[b.name][data.train][fit]
        scores, preds = [], []
        for lam in LAMBDAS:
            w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ (y[fit] - mean))
            p = mean + z[b.name] @ w
            p[~b.has] = mean
            preds.append(p.astype(np.float32))
            scores.append(valid_score(preds[-1], data))
        best, _ = select_best(LAMBDAS, scores)
        lambdas[b.name], predictions[b.name] = LAMBDAS[best], preds[best]

    def fusion(names: list[str]) -> dict[str, float]:
        def score(w: dict[str, float]) -> float:
            return valid_score(fuse(predictions, has, w, mean_v), data)

        alone = {b: score({b: 1.0}) for b in names}
        weights = {max(names, key=lambda b: alone[b]): 1.0}
        best = max(alone.values())
        while len(weights) < len(names):
            trial = None
            for b in (n for n in names if n not in weights):
                for a in np.arange(step, 1.0, step):
                    w = {k: v * (1 - a) for k, v in weights.items()} | {b: float(a)}
                    s = score(w)
                    if trial is None or s > trial[0]:
                        trial = (s, b, float(a))
            if trial is None or trial[0] <= best:
                break
            best, b, a = trial
            weights = {k: v * (1 - a) for k, v in weights.items()} | {b: a}
        return {b: weights.get(b, 0.0) for b in names}

    def joint(combo: list[str]) -> tuple[dict[str, float], float]:
        grid = sorted(set(LAMBDAS) | {lambdas[b] for b in combo})
        lams, best_p = {b: lambdas[b] for b in combo}, 0.0
        best = valid_score(joint_fit(combo, lams, 0.0), data)
        for p in DROPOUTS[1:]:
            s = valid_score(joint_fit(combo, lams, p), data)
            if s > best:
                best, best_p = s, p
        for _ in range(2):
            changed = False
            for b in combo:
                for lam in grid:
                    if lam != lams[b]:
                        s = valid_score(joint_fit(combo, lams | {b: lam}, best_p), data)
                        if s > best:
                            best, lams, changed = s, lams | {b: lam}, True
            for p in DROPOUTS:
                if p != best_p:
                    s = valid_score(joint_fit(combo, lams, p), data)
                    if s > best:
                        best, best_p, changed = s, p, True
            if not changed:
                break
        return lams, best_p

    names = [b.name for b in blocks]
    combos = [(n,) for n in names] + list(itertools.combinations(names, 2)) + [tuple(names)]
    return {
        "lambdas": lambdas,
        "weights": {c: fusion(list(c)) for c in combos},
        "joint": {c: joint(list(c)) for c in [tuple(names), tuple(names[1:])]},  # the models: with and without image
    }


# ------------------------------------------------------------------------------------------------------- tests
def test_the_grams_are_the_rowwise_products() -> None:
    data, blocks = planted()
    grams = Grams(blocks, data)
    z = standardised_rows(blocks, data)
    y = data.item_factors.astype(np.float64) - data.item_factors.mean(axis=0)
    for a, b in itertools.product(grams.names, repeat=2):
        want = z[a][data.train].T @ z[b][data.train]
        np.testing.assert_allclose(grams.block(a, b), want, atol=2e-3 * max(1.0, np.abs(want).max()) / 100)
    for b in grams.names:
        np.testing.assert_allclose(grams.rhs[b], z[b][data.train].T @ y, atol=1e-3)
        w = np.random.default_rng(1).normal(size=(grams.blocks[b].width, 3))
        np.testing.assert_allclose(grams.blocks[b].project(data.test, w), z[b][data.test] @ w, atol=1e-4)


def test_the_gram_search_picks_what_the_rowwise_search_picked() -> None:
    data, blocks = planted()
    data = sampled(data, 300, 250, seed=0)  # a real sample of both: the choices are made on the valid one
    fitted = fit_models(blocks, data, settings(), LAMBDAS, 10)
    want = rowwise_search(blocks, data, 0.25)
    assert {b: f["lambda"] for b, f in fitted.fits.items()} == want["lambdas"]
    fusions = {tuple(r["sources"]): r["weights"] for r in fitted.rows if r["model"] != "joint"}
    assert set(fusions) == set(want["weights"])
    for combo, weights in want["weights"].items():
        assert fusions[combo] == pytest.approx(weights, abs=1e-9), combo
    joints = {tuple(r["sources"]): (r["lambdas"], r["dropout"]) for r in fitted.rows if r["model"] == "joint"}
    assert joints == want["joint"]
    assert any(d > 0 for _, d in joints.values()) or any(len(set(lams.values())) > 1 for lams, _ in joints.values())


def test_content_rows_intervals_are_a_naive_bootstrap_of_their_per_user_aucs() -> None:
    data, blocks = planted()
    data = sampled(data, 300, 250, seed=0)
    fitted = fit_models(blocks, data, settings(), LAMBDAS, 10)
    rows = fitted.rows
    assert len(fitted.per_user) == len(rows) and all(len(a) == len(data.test_users) for a in fitted.per_user)
    for r, auc in zip(rows, fitted.per_user, strict=True):  # each array is its row's users, in the sample's order
        assert np.nanmean(auc.astype(np.float64)) == pytest.approx(r["auc"], abs=1e-6)
    chosen = rows[fitted.chosen["row"]]
    v = fitted.joint.predict(fitted.chosen["joint"], data.test) if chosen["model"] == "joint" else None
    if v is not None:  # the chosen row's per-user AUCs are evaluate's, user for user
        ranked = score_users(factor_scores(data.user_factors, v), data.test_truth, 10, data.test_users)
        np.testing.assert_allclose(fitted.per_user[fitted.chosen["row"]], ranked.auc, atol=1e-7)
    seed, resamples = 3, 200
    differences = intervals(fitted, None, None, resamples, seed)

    per_user = np.stack(fitted.per_user, axis=1).astype(np.float64)
    rng = np.random.default_rng([seed, 2])  # evaluate's resample seed: the same draws as its rows'
    n = len(per_user)
    means = []
    for _ in range(resamples):
        picks = np.minimum((rng.random(n) * n).astype(np.int64), n - 1)
        means.append(np.nanmean(per_user[picks], axis=0))
    means = np.array(means)
    for j, r in enumerate(rows):  # the users-only interval is the naive bootstrap's; the two-way one is wider
        assert r["auc_ci_users"] == pytest.approx(list(np.percentile(means[:, j], [2.5, 97.5])), abs=2e-6)
        assert r["auc_ci"][1] - r["auc_ci"][0] > r["auc_ci_users"][1] - r["auc_ci_users"][0]
    labels = [d["label"] for d in differences]
    assert labels == ["full model − best without the image"]  # one image source: no learned − ImageNet
    (d,) = differences
    a = next(j for j, r in enumerate(rows) if j == fitted.chosen["row"])
    no_image = [j for j, r in enumerate(rows) if "learned" not in r["sources"]]
    b = max(no_image, key=lambda j: rows[j]["valid_auc"])  # chosen on valid, never on test
    assert d["diff"] == pytest.approx(rows[a]["auc"] - rows[b]["auc"])
    assert d["ci_users"] == pytest.approx(list(np.percentile(means[:, a] - means[:, b], [2.5, 97.5])), abs=2e-6)
    assert d["contains_zero"] == (d["ci"][0] <= 0 <= d["ci"][1])
    assert d["contains_zero_users"] == (d["ci_users"][0] <= 0 <= d["ci_users"][1])
    assert d["a"].startswith("learned + tags + numeric") and "learned" not in d["b"]


def test_learned_against_imagenet_full_models_is_a_difference() -> None:
    data, blocks = planted()
    rng = np.random.default_rng(5)
    imagenet = blocks[0].features + rng.normal(0, 2.0, blocks[0].features.shape).astype(np.float32)
    blocks.insert(1, Block("imagenet", imagenet, np.ones(len(imagenet), bool), {}))
    fitted = fit_models(blocks, sampled(data, 0, 0, 0), settings("content.joint=false"), LAMBDAS, 10)
    differences = intervals(fitted, None, None, 100, 0)
    by_label = {d["label"]: d for d in differences}
    assert set(by_label) == {"full model − best without the image", "learned − ImageNet (full models)"}
    d = by_label["learned − ImageNet (full models)"]
    assert d["a"] == "learned + tags + numeric · late fusion" and d["b"] == "imagenet + tags + numeric · late fusion"
    assert d["ci"][0] <= d["diff"] <= d["ci"][1]


def test_sampling_every_user_scores_what_the_full_protocol_scores() -> None:
    data, blocks = planted()
    cc = settings()
    full = fit_models(blocks, data, cc, LAMBDAS, 10)  # no sample: every eligible user, as before sampling
    everyone = fit_models(blocks, sampled(data, 10**6, 10**6, seed=4), cc, LAMBDAS, 10)
    assert len(full.rows) == len(everyone.rows)
    for a, b in zip(full.rows, everyone.rows, strict=True):
        assert a == b
    for a, b in zip(full.per_user, everyone.per_user, strict=True):
        np.testing.assert_array_equal(a, b)
    fewer = fit_models(blocks, sampled(data, 150, 100, seed=4), cc, LAMBDAS, 10)
    assert {r["users"] for r in fewer.rows} == {150} and {r["users"] for r in full.rows} == {len(full.per_user[0])}


def test_the_lightfm_peer_ranks_the_same_users_and_pairs_with_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LightFM itself is optional: a stand-in with its interface shows what the stage does with it — fit on the
    configured threads, ranked on the test-user sample, bootstrapped with the rows, and differenced."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from socialfeat.content.stage import _peer

    seen: dict[str, object] = {}

    class LightFM:
        def __init__(self, loss: str, no_components: int, random_state: int) -> None:
            self.rng, self.k = np.random.default_rng(random_state), no_components

        def fit(self, matrix: sp.coo_matrix, item_features: sp.csr_matrix, epochs: int, num_threads: int) -> None:
            seen.update(threads=num_threads, shape=matrix.shape, width=item_features.shape[1])
            self.w = self.rng.normal(size=(item_features.shape[1], self.k)).astype(np.float32)
            self.u = self.rng.normal(size=(matrix.shape[0], self.k)).astype(np.float32)

        def get_item_representations(self, features: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros(features.shape[0], np.float32), np.asarray(features @ self.w, np.float32)

        def get_user_representations(self) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros(len(self.u), np.float32), self.u

    monkeypatch.setitem(sys.modules, "lightfm", types.SimpleNamespace(LightFM=LightFM))
    data, blocks = planted()
    data = sampled(data, 300, 250, seed=0)
    (tmp_path / "dataset").mkdir()
    pairs = {"user_idx": np.arange(400) % 400, "item_idx": data.train[np.arange(400) % len(data.train)]}
    pq.write_table(pa.table(pairs), tmp_path / "dataset" / "interactions.parquet")
    config = load_config(None, ["content.lightfm_threads=3", "evaluate.k=10"])
    notes: list[str] = []
    peer, ranked = _peer(tmp_path, config, blocks, data, notes, lambda _m: None)
    assert not notes and peer is not None and ranked is not None
    per_user = ranked.auc
    assert ranked.item_influence is not None and len(ranked.item_influence) == len(data.test)
    assert seen == {"threads": 3, "shape": (400, 700), "width": 42}  # tags one-hot (40) as is, numeric (2)
    assert peer["users"] == len(data.test_users) == len(per_user) and peer["threads"] == 3
    assert np.nanmean(per_user.astype(np.float64)) == pytest.approx(peer["auc"], abs=1e-6)
    fitted = fit_models(blocks, data, settings(), LAMBDAS, 10)
    differences = intervals(fitted, peer, ranked, 100, 0)
    lightfm = next(d for d in differences if d["label"] == "full model − LightFM")
    assert lightfm["b"] == "LightFM (WARP)" and lightfm["ci"] is not None
    assert peer["auc_ci"][0] <= peer["auc"] <= peer["auc_ci"][1]


def test_a_change_to_evaluates_user_sample_reruns_content_and_nothing_else_of_evaluate_does() -> None:
    from socialfeat.pipeline import STAGES, stage_config, stage_hashes

    base = load_config(None, [])
    hashes = stage_hashes(base, STAGES)
    for setting in ("evaluate.users=5000", "evaluate.valid_users=100", "evaluate.bootstrap=10", "evaluate.k=5"):
        changed = stage_hashes(load_config(None, [setting]), STAGES)
        assert changed["content"] != hashes["content"] and changed["index"] == hashes["index"], setting
    same = stage_hashes(load_config(None, ["evaluate.max_queries=7"]), STAGES)
    assert same["content"] == hashes["content"] and same["evaluate"] != hashes["evaluate"]
    assert stage_config(base, "content")["evaluate.users"] == base.evaluate.users


def test_lightfms_item_features_are_the_leading_components_of_a_dense_block_and_a_one_hot_as_is() -> None:
    from socialfeat.content.sources import compact

    rng = np.random.default_rng(2)
    x = (rng.normal(size=(300, 40)) @ np.diag(np.linspace(3, 0.1, 40)) + 5).astype(np.float32)
    got = compact(x, width=4).toarray()
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    want = centred @ vt[:4].T  # the old SVD of the whole centred matrix; each component's sign is arbitrary
    signs = np.sign((got * want).sum(axis=0))
    np.testing.assert_allclose(got * signs, want, atol=2e-3)
    one_hot = sp.random(50, 100, density=0.05, format="csr", random_state=0, dtype=np.float32)
    assert (compact(one_hot) != one_hot).nnz == 0 and compact(x[:, :3]).shape == (300, 3)
