"""The fresh-content evaluation (socialfeat.live.fresh): the pair metric, the audiences and the two-way bootstrap
against naive references, and one small replay through the live catalogue checked against ``Live.rank``."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from socialfeat.config import load_config
from socialfeat.live import Live
from socialfeat.live.fresh import (
    POPULARITY,
    RANDOM,
    Pairs,
    Replay,
    audiences,
    batch_pairs,
    evaluate_fresh,
    pair_metrics,
    replay,
    two_way_means,
    weighted_means,
)
from socialfeat.live.tables import NewEvent, NewItem
from socialfeat.recommend import Recommender


def naive_pair(scores: list[float], target: int, k: int) -> tuple[float, float]:
    """AUC by comparing with every other candidate one by one; recall@k by trying every tie-break order."""
    mine = scores[target]
    others = [s for j, s in enumerate(scores) if j != target and s != -np.inf]
    wins = sum(1.0 if s < mine else 0.5 if s == mine else 0.0 for s in others)
    tied = [j for j, s in enumerate(scores) if s == mine]  # the target among them
    above = sum(1 for s in others if s > mine)
    hits = []
    for order in itertools.permutations(tied):
        rank = above + order.index(target) + 1
        hits.append(rank <= k)
    return wins / len(others), float(np.mean(hits))


@pytest.mark.parametrize("seed", range(6))
def test_pair_metrics_match_a_naive_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, 9).astype(float).tolist()  # few values: many ties
    for j in rng.choice(9, 2, replace=False):
        scores[j] = -np.inf  # hidden: seen, removed or not in the dataset
    target = int(next(j for j in range(9) if scores[j] != -np.inf))
    for k in (1, 2, 3, 5):
        auc, recall = pair_metrics(np.array(scores), target, k)
        ref_auc, ref_recall = naive_pair(scores, target, k)
        assert auc == pytest.approx(ref_auc) and recall == pytest.approx(ref_recall), (scores, target, k)


def test_a_pair_without_another_candidate_is_undefined() -> None:
    auc, recall = pair_metrics(np.array([1.0, -np.inf]), 0, 5)
    assert np.isnan(auc) and np.isnan(recall)
    assert pair_metrics(np.array([0.3, 0.1, 0.2]), 0, 1) == (1.0, 1.0)
    assert pair_metrics(np.array([0.0, 0.1, 0.2]), 0, 1) == (0.0, 0.0)


def test_audiences_match_a_naive_scan_of_each_users_next_events() -> None:
    rng = np.random.default_rng(3)
    items = [NewItem(f"n{j}", "x.png") for j in range(5)]
    arrivals = [(float(10 * j + 5), item) for j, item in enumerate(items)]
    pool = [f"n{j}" for j in range(5)] + ["old1", "old2", "old3"]
    events = []
    for n in range(400):
        t = float(rng.integers(0, 60))
        item = str(rng.choice(pool))
        if item.startswith("n") and t < 10 * int(item[1:]) + 5:
            continue  # no event before its item arrives
        events.append((t, NewEvent(f"u{rng.integers(0, 12)}", item, "view", row=n)))
    plan = Replay(0.0, arrivals, events, Path("."))
    for n_next in (1, 3, 8, 0):
        found = audiences(plan, n_next)
        for arrival, item in plan.arrivals:
            expected = set()
            for user in {e.user_id for _, e in plan.events}:
                mine = [e.item_id for t, e in plan.events if e.user_id == user and t >= arrival]
                window = mine if n_next == 0 else mine[:n_next]
                if item.item_id in window:
                    expected.add(user)
            assert set(found.get(item.item_id, [])) == expected, (n_next, item.item_id)


def test_the_bootstrap_weights_each_pair_by_its_users_and_its_items_draws() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 5, 30), rng.integers(0, 4, 30)
    values = rng.random((30, 2))
    cu, ci = rng.integers(0, 3, (7, 5)), rng.integers(0, 3, (7, 4))
    got = weighted_means(values, users, items, cu, ci)
    for d in range(7):  # naive: every pair repeated (its user's draws) × (its item's draws) times
        repeated = [values[p] for p in range(30) for _ in range(cu[d, users[p]] * ci[d, items[p]])]
        expected = np.mean(repeated, axis=0) if repeated else np.full(2, np.nan)
        np.testing.assert_allclose(got[d], expected)


def test_the_bootstrap_is_paired_and_centred_on_the_pair_mean() -> None:
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 40, 500).astype(str), rng.integers(0, 30, 500).astype(str)
    a = rng.random(500)
    means = two_way_means(np.stack([a, a + 0.25], axis=1), users, items, 400, 0)
    np.testing.assert_allclose(means[:, 1] - means[:, 0], 0.25)  # the same draws for every row
    assert abs(np.nanmean(means[:, 0]) - a.mean()) < 0.02
    assert np.nanstd(means[:, 0]) > 0
    again = two_way_means(np.stack([a, a], axis=1), users, items, 400, 0)
    np.testing.assert_array_equal(again[:, 0], means[:, 0])  # seeded


@pytest.fixture(scope="module")
def fresh_run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("fresh") / "run"
    shutil.copytree(embedded_run, run)
    return run


def small_plan(run: Path, platform: Path) -> Replay:
    """Three new items (platform images under new ids) and events between them by users of the batch."""
    rec = Recommender(run)
    users = [str(u) for u in rec.user_ids[:6]]
    old = [str(i) for i in rec.item_ids[:4]]
    images = sorted((platform / "images").glob("*.png"))[:3]
    arrivals = [(float(t), NewItem(f"fresh{t}", f"images/{p.name}", row=t)) for t, p in enumerate(images, 1)]
    events = []
    for t, item in ((1.2, "fresh1"), (1.5, old[0]), (2.1, "fresh2"), (2.2, "fresh1"), (3.0, "fresh3"), (3.5, old[1])):
        for n, user in enumerate(users[: 4 if item.startswith("fresh") else 6]):
            events.append((t + n / 100, NewEvent(user, item, "like" if n % 2 else "view", row=len(events))))
    return Replay(0.0, arrivals, events, platform)


def test_a_replay_scores_each_new_item_where_live_rank_puts_it(fresh_run: Path, platform: Path) -> None:
    config = load_config(None, [])
    plan = small_plan(fresh_run, platform)
    audience = audiences(plan, 2)
    assert audience["fresh1"] == audience["fresh3"]  # every engaged user's next 2 events hold these
    rec = Recommender(fresh_run, index_log=True)
    pairs = Pairs()
    shutil.rmtree(fresh_run / "live", ignore_errors=True)
    did = replay(Live(config, fresh_run, recommender=rec, create=True), plan, audience, "live", pairs, 3, references=0)
    assert did.logged == sum(1 for t, _ in plan.events if t < 3.0) and did.unknown_users == 0
    assert len(pairs.users) == sum(len(v) for v in audience.values()) == len(pairs.auc[POPULARITY])

    # the reference: the same steps by hand, each pair's AUC and recall from Live.rank's full order
    shutil.rmtree(fresh_run / "live")
    live = Live(config, fresh_run, recommender=rec, create=True)
    expected = []
    for t, item in plan.arrivals:
        live.log([e for s, e in plan.events if t - 1 <= s < t])
        live.add([item], platform)
        for user in audience.get(item.item_id, []):
            ranked = live.rank(user, 10**6)
            mine = next(r["score"] for r in ranked if r["item_id"] == item.item_id)
            others = [r["score"] for r in ranked if r["item_id"] != item.item_id]
            above, ties = sum(s > mine for s in others), sum(s == mine for s in others)
            auc = (len(others) - above - ties / 2) / len(others)
            recall = np.mean([above + j + 1 <= 3 for j in range(ties + 1)])  # where a random tie-break puts it
            expected.append((user, item.item_id, auc, recall))
    assert list(zip(pairs.users, pairs.items, strict=True)) == [(u, i) for u, i, _, _ in expected]
    np.testing.assert_allclose(pairs.auc["live"], [a for _, _, a, _ in expected])
    np.testing.assert_allclose(pairs.recall["live"], [r for _, _, _, r in expected])
    assert all(a == 0.0 or a < 0.5 for a in pairs.auc[POPULARITY])  # a new item has no events yet
    assert all(0.0 <= a <= 1.0 for a in pairs.auc[RANDOM])


def test_the_preloaded_batch_pairs_are_what_live_reads_user_by_user(fresh_run: Path) -> None:
    shutil.rmtree(fresh_run / "live", ignore_errors=True)
    live = Live(load_config(None, []), fresh_run, create=True)
    preloaded = batch_pairs(live)
    assert set(preloaded) == {str(u) for u in live.rec.user_ids}
    for row in range(0, len(live.rec.user_ids), 7):
        rows, weights = live.batch_pairs(row)
        got_rows, got_weights = preloaded[str(live.rec.user_ids[row])]
        np.testing.assert_array_equal(got_rows, rows)
        np.testing.assert_array_equal(got_weights, weights)


def test_evaluate_fresh_writes_every_row_and_the_report_renders_it(fresh_run: Path, platform: Path) -> None:
    from socialfeat.report.fresh import fresh_section
    from socialfeat.report.report import render

    config = load_config(None, [])
    plan = small_plan(fresh_run, platform)
    result = evaluate_fresh(fresh_run, plan, n_next=2, k=3, resamples=50, config=config)
    written = json.loads((fresh_run / "eval" / "fresh.json").read_text())
    names = [r["name"] for r in written["rows"]]
    assert names[0] == "live add (run's rule)" and {"ImageNet image (ridge)", POPULARITY, RANDOM} <= set(names)
    assert written["pairs"] == result["pairs"] > 0 and not (fresh_run / "live").exists()
    for r in written["rows"]:
        lo, hi = r["auc_ci"]
        assert lo <= hi and 0.0 <= r["auc"] <= 1.0
    assert any(d["label"] == "learned − ImageNet" for d in written["differences"])

    section = {"id": "fresh", "title": "Fresh content", "missing": None, **fresh_section(fresh_run)}
    html = render({"run": str(fresh_run), "name": "run", "created": "now", "version": "0", "thumb": 64, "strip": 64,
                   "sections": [section]})  # fmt: skip
    assert "Fresh content" in html and "ImageNet image (ridge)" in html and "learned − ImageNet" in html
    assert f"{written['rows'][0]['auc']:.4f}" in html
