"""The fresh-content evaluation: how well a brand-new item is recommended, replayed in time order through the
live catalogue (issue 32, point 7; PinCLIP's "fresh content" number).

Protocol. A batch run is trained on the events before a cut T, on the items that arrived before T. Then, in time
order, each item that arrives after T is added (:meth:`Live.add`) and the events between arrivals are logged
(:meth:`Live.log`), so user vectors and earlier new items move as they would live.

Metric. The *audience* of a new item i arriving at time aᵢ: the users whose next N events from aᵢ on (events at or
after aᵢ, in time order) include one on i. Right after i is added — before any of its events is logged — each such
user u is shown the catalogue as :meth:`Live.rank` orders it: every batch and live item, less those u engaged with
before aᵢ, scored u·v. For the pair (u, i):

- AUC = the share of u's other candidate items that score below i (ties count ½);
- recall@k = the chance that i is in u's top k when ties are broken at random: clip((k − g) / (t + 1), 0, 1), with
  g candidates scoring above i and t tied with it (1 or 0 when there are no ties).

A row's figure is the mean over all (user, item) pairs. Its interval is a paired bootstrap that resamples the users
and the items, both with replacement, and weights each pair by how often its user and its item were drawn; every
row uses the same draws, so differences between rows are paired.

Rows differ only in how a new item's factors are predicted until it has ``live.warm_after`` events (then its fold-in
takes over, for every row alike): the run's rule as ``add`` applies it, a ridge map from learned or from ImageNet
image features fit on the batch's warm items (λ chosen on its valid cold items, as ``evaluate`` does), the content
model without the image, and the mean item vector. Popularity (events so far; a new item has none) and random
scores rank the same candidates without a replay of their own.
"""

from __future__ import annotations

import bisect
import csv
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from socialfeat.artifacts import read_table
from socialfeat.atomic import write_json
from socialfeat.config import Config, load_config
from socialfeat.live.catalogue import Live, Predictor
from socialfeat.live.tables import NewEvent, NewItem
from socialfeat.measures.bootstrap import LEVEL, interval, signed
from socialfeat.recommend import Recommender

log = logging.getLogger(__name__)

POPULARITY, RANDOM = "popularity", "random"
CHUNK_CELLS = 4_000_000  # resamples × pairs weighted at once in the bootstrap


@dataclass
class Replay:
    """What happens after the cut, in time order: item arrivals and events (times are any increasing numbers)."""

    cut: float
    arrivals: list[tuple[float, NewItem]]
    events: list[tuple[float, NewEvent]]
    image_root: Path

    def __post_init__(self) -> None:
        self.arrivals.sort(key=lambda a: a[0])
        self.events.sort(key=lambda e: e[0])  # stable: events at one time keep their order


def read_replay(folder: Path, cut: float, image_root: Path) -> Replay:
    """``arrivals.csv`` (item_id, image, title, tags, time) and ``events.csv`` (user_id, item_id, event, timestamp,
    time) of a folder: what bench/fresh.py writes after the cut."""
    with open(folder / "arrivals.csv", newline="", encoding="utf-8") as fh:
        arrivals = [
            (
                float(r["time"]),
                NewItem(r["item_id"], r["image"], r.get("title") or None, None, r.get("tags") or None, row=n),
            )  # fmt: skip
            for n, r in enumerate(csv.DictReader(fh), 1)
        ]
    with open(folder / "events.csv", newline="", encoding="utf-8") as fh:
        events = [
            (float(r["time"]), NewEvent(r["user_id"], r["item_id"], r["event"], None, r.get("timestamp") or None, n))
            for n, r in enumerate(csv.DictReader(fh), 1)
        ]
    return Replay(cut, arrivals, events, image_root)


def audiences(replay: Replay, n_next: int) -> dict[str, list[str]]:
    """Each new item's audience: the users whose next ``n_next`` events from its arrival on include one on it
    (0: any later event), in user order of first appearance."""
    arrival = {item.item_id: t for t, item in replay.arrivals}
    by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for t, e in replay.events:
        by_user[e.user_id].append((t, e.item_id))
    out: dict[str, list[str]] = defaultdict(list)
    for user, events in by_user.items():
        times = [t for t, _ in events]
        first: dict[str, int] = {}
        for pos, (t, item) in enumerate(events):
            if item in arrival and item not in first and t >= arrival[item]:
                first[item] = pos
        for item, pos in first.items():
            start = bisect.bisect_left(times, arrival[item])
            if n_next <= 0 or pos - start < n_next:
                out[item].append(user)
    return dict(out)


def pair_metrics(scores: np.ndarray, target: int, k: int) -> tuple[float, float]:
    """(AUC, recall@k) of the entry ``target`` among the finite entries of ``scores`` (-inf: not a candidate);
    NaN for both when there is no other candidate. See the module docstring."""
    s = np.asarray(scores, dtype=np.float64)
    mine = s[target]
    others = np.isfinite(s)
    others[target] = False
    n = int(others.sum())
    if n == 0 or not np.isfinite(mine):
        return float("nan"), float("nan")
    greater = int((s[others] > mine).sum())
    ties = int((s[others] == mine).sum())
    auc = (n - greater - ties + 0.5 * ties) / n
    recall = min(1.0, max(0.0, (k - greater) / (ties + 1)))
    return auc, recall


@dataclass
class Pairs:
    """Per (user, item) pair of every audience: its AUC and recall@k under each row."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    auc: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    recall: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class ReplayLog:
    """What one replay did: events logged or left out (an item the batch dataset filtered out), users unknown."""

    logged: int = 0
    skipped_events: int = 0
    unknown_users: int = 0
    undefined: int = 0
    predicted_by: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0


def _popularity(live: Live, base: np.ndarray, ids: list[str]) -> np.ndarray:
    """Events so far per candidate: the batch log's count per batch item plus live events, then live items."""
    batch = base.copy()
    block = np.zeros(len(ids))
    for item, count in live.item_counts.items():
        row = live.item_row.get(item)
        if row is not None:
            batch[row] += count
    for n, item in enumerate(ids):
        block[n] = live.item_counts.get(item, 0)
    return np.concatenate([batch, block])


def batch_counts(rec: Recommender) -> np.ndarray:
    """Interactions per batch item in the run's dataset (the popularity a replay starts from)."""
    assert rec._log is not None, "the recommender must index the log (index_log=True)"
    return np.bincount(rec._log[1], minlength=len(rec.item_ids)).astype(np.float64)


def batch_pairs(live: Live) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every batch user's (warm item rows, weights), as :meth:`Live.batch_pairs` reads them one user at a time: a
    replay folds in most users, and one read of the log beats thousands of filtered ones."""
    rec, dataset = live.rec, live.run / "dataset"
    users = read_table(dataset / "users.parquet", columns=["user_id", "user_idx"], run=live.run)
    inter = read_table(dataset / "interactions.parquet", columns=["user_idx", "item_idx", "weight"], run=live.run)
    user_idx = inter.column("user_idx").to_numpy()
    idx = inter.column("item_idx").to_numpy()
    weight = inter.column("weight").to_numpy().astype(np.float32)
    inside = idx < len(rec._idx_to_row)
    rows = np.full(len(idx), -1, dtype=np.int64)
    rows[inside] = rec._idx_to_row[idx[inside]]
    keep = (rows >= 0) & (rows < live.n_warm)
    user_idx, rows, weight = user_idx[keep], rows[keep], weight[keep]
    order = np.argsort(user_idx, kind="stable")  # each user's pairs in the log's order, as the filtered read has them
    user_idx, rows, weight = user_idx[order], rows[order], weight[order]
    starts = np.searchsorted(user_idx, users.column("user_idx").to_numpy(), side="left")
    ends = np.searchsorted(user_idx, users.column("user_idx").to_numpy(), side="right")
    known = {str(u) for u in rec.user_ids}
    return {
        str(u): (rows[a:b], weight[a:b])
        for u, a, b in zip(users.column("user_id").to_pylist(), starts, ends, strict=True)
        if str(u) in known
    }


def replay(
    live: Live,
    plan: Replay,
    audience: dict[str, list[str]],
    name: str,
    pairs: Pairs,
    k: int,
    predict: Predictor | None = None,
    encoders: dict[str, Any] | None = None,
    references: int | None = None,
) -> ReplayLog:
    """Replay ``plan`` through ``live``, adding each new item with ``predict`` (None: the run's rule), and score
    every audience pair under row ``name``; with ``references`` (a seed) also under popularity and random. The
    first replay fills ``pairs.users`` and ``pairs.items``; later ones must meet the same pairs in the same order."""
    t0 = time.perf_counter()
    out = ReplayLog()
    first = not pairs.users
    position = 0
    base = batch_counts(live.rec) if references is not None else None
    rng = np.random.default_rng(references if references is not None else 0)
    n_pair = 0
    n_events = len(plan.events)
    for t, item in plan.arrivals:
        batch: list[NewEvent] = []
        while position < n_events and plan.events[position][0] < t:
            event = plan.events[position][1]
            position += 1
            if live.known_item(event.item_id):
                batch.append(event)
            else:
                out.skipped_events += 1
        if batch:
            live.log(batch)
            out.logged += len(batch)
        (added,) = live.add([item], plan.image_root, k=1, encoders=encoders, predict=predict)
        out.predicted_by[added.predicted_by] += 1
        if references is not None and base is not None:  # counts do not move until the next events are logged
            popularity = _popularity(live, base, live.live_block()[0])
        for user in audience.get(item.item_id, []):
            if live.user_vector(user) is None:
                out.unknown_users += 1
                continue
            scores, _, ids = live.scores(user)
            target = len(live.rec.item_ids) + ids.index(item.item_id)
            auc, recall = pair_metrics(scores, target, k)
            if not np.isfinite(auc):
                out.undefined += 1
                continue
            if first:
                pairs.users.append(user)
                pairs.items.append(item.item_id)
            elif pairs.users[n_pair] != user or pairs.items[n_pair] != item.item_id:
                raise RuntimeError("replays met different pairs: the catalogue is not the same in every replay")
            n_pair += 1
            pairs.auc[name].append(auc)
            pairs.recall[name].append(recall)
            if references is not None and base is not None:
                hidden = ~np.isfinite(scores)
                for ref, values in ((POPULARITY, popularity), (RANDOM, rng.random(len(scores)))):
                    a, r = pair_metrics(np.where(hidden, -np.inf, values), target, k)
                    pairs.auc[ref].append(a)
                    pairs.recall[ref].append(r)
    out.seconds = time.perf_counter() - t0
    return out


def two_way_means(
    values: np.ndarray, users: np.ndarray, items: np.ndarray, resamples: int, seed: int | Sequence[int]
) -> np.ndarray:
    """(resamples × rows) pair means of ``values`` (pairs × rows) when users and items are resampled with
    replacement, independently, and a pair counts (times its user was drawn) × (times its item was drawn); the
    same draws for every row. A resample that keeps no pair is NaN."""
    v = np.asarray(values, dtype=np.float64)
    u_codes = np.unique(users, return_inverse=True)[1]
    i_codes = np.unique(items, return_inverse=True)[1]
    n_u, n_i = int(u_codes.max()) + 1 if len(v) else 0, int(i_codes.max()) + 1 if len(v) else 0
    out = np.full((resamples, v.shape[1] if v.ndim == 2 else 0), np.nan)
    if not len(v) or resamples == 0:
        return out
    rng = np.random.default_rng(seed)
    step = max(1, CHUNK_CELLS // len(v))
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        cu = np.stack([np.bincount(rng.integers(0, n_u, n_u), minlength=n_u) for _ in range(b)])
        ci = np.stack([np.bincount(rng.integers(0, n_i, n_i), minlength=n_i) for _ in range(b)])
        out[start : start + b] = weighted_means(v, u_codes, i_codes, cu, ci)
    return out


def weighted_means(
    values: np.ndarray, u_codes: np.ndarray, i_codes: np.ndarray, user_counts: np.ndarray, item_counts: np.ndarray
) -> np.ndarray:
    """(draws × rows) means of ``values`` (pairs × rows), pair p weighted user_counts[d, u_codes[p]] ×
    item_counts[d, i_codes[p]] in draw d: the mean over the pairs the drawn users and items form, with repeats."""
    w = np.asarray(user_counts, np.float64)[:, u_codes] * np.asarray(item_counts, np.float64)[:, i_codes]
    total = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w @ values) / total, np.nan)


# ---------------------------------------------------------------------------------------------------- predictors
def _ridge_predictor(run: Path, config: Config, source: str) -> tuple[Predictor, dict[str, Any]]:
    """A ridge map from ``source``'s pooled image features to factors, fit as ``evaluate`` fits its rows."""
    from socialfeat.measures.coldstart import aligned_features, fit_ridge_map, load_coldstart, sampled

    ev = config.evaluate
    data = sampled(load_coldstart(run), ev.users, ev.valid_users, config.seed)
    features, has = aligned_features(run, source, "features", data)
    ridge, info = fit_ridge_map(features, has, data, list(ev.ridge_lambdas))

    def predict(items: list[NewItem], outputs: dict[tuple[str, str], np.ndarray]) -> list[tuple[np.ndarray, str]]:
        x = outputs[(source, "features")]
        return [(v, f"{source}-ridge") for v in ridge.predict(x)]

    return predict, {"lambda": info["lambda"], "valid_auc": info["valid_auc"]}


def _mean_predictor(run: Path) -> tuple[Predictor, dict[str, Any]]:
    """Every new item gets the mean factor vector of the batch's warm items: no image, no text."""
    from socialfeat.measures.coldstart import load_coldstart

    mean = load_coldstart(run).item_factors.mean(axis=0).astype(np.float32)
    return (lambda items, _outputs: [(mean, "mean") for _ in items]), {}


def _text_predictor(run: Path) -> tuple[Predictor, dict[str, Any]] | None:
    """The run's content model given the item's title, text and tags but not its image; None without a content
    model that has a non-image source."""
    from socialfeat.content import ContentModel
    from socialfeat.data.tags import split_tags

    if not (run / "content" / "model.json").is_file():
        return None
    model = ContentModel(run)
    rest = [b for b in model.weights if b not in ("learned", "imagenet")]
    if not rest:
        return None
    mean = _mean_predictor(run)[0]

    def predict(items: list[NewItem], outputs: dict[tuple[str, str], np.ndarray]) -> list[tuple[np.ndarray, str]]:
        out = []
        for item in items:
            fields = model.fields
            blocks, _ = model.blocks_for(
                None,
                item.title if "title" in fields else None,
                item.text if "text" in fields else None,
                split_tags(item.tags) if item.tags and "tags" in fields else None,
            )
            if blocks:
                out.append((np.asarray(model.predict(blocks), np.float32), "content-without-image"))
            else:
                out.extend(mean([item], outputs))
        return out

    return predict, {"sources": rest}


def predictors(run: Path, config: Config) -> dict[str, tuple[Predictor | None, dict[str, Any]]]:
    """The rows that replay, by name: (predictor, what was fit)."""
    rows: dict[str, tuple[Predictor | None, dict[str, Any]]] = {"live add (run's rule)": (None, {})}
    rows["learned image (ridge)"] = _ridge_predictor(run, config, "learned")
    rows["ImageNet image (ridge)"] = _ridge_predictor(run, config, "imagenet")
    text = _text_predictor(run)
    if text is not None:
        rows["no image: content model without it"] = text
    rows["no image: mean item vector"] = _mean_predictor(run)
    return rows


DIFFERENCES = (
    ("learned image (ridge)", "ImageNet image (ridge)", "learned − ImageNet"),
    ("live add (run's rule)", "no image: content model without it", "live add − no image (content)"),
    ("live add (run's rule)", "no image: mean item vector", "live add − mean vector"),
    ("learned image (ridge)", "no image: mean item vector", "learned − mean vector"),
    ("live add (run's rule)", POPULARITY, "live add − popularity"),
)


def summarize(pairs: Pairs, k: int, resamples: int, seed: int) -> dict[str, Any]:
    """Rows (means and intervals) and paired differences from the per-pair metrics."""
    names = [n for n in pairs.auc if n not in (POPULARITY, RANDOM)] + [
        n for n in (POPULARITY, RANDOM) if n in pairs.auc
    ]
    users, items = np.array(pairs.users), np.array(pairs.items)
    rows, diffs = [], []
    for metric, table in (("auc", pairs.auc), (f"recall@{k}", pairs.recall)):
        values = np.stack([np.asarray(table[n], dtype=np.float64) for n in names], axis=1)
        point = values.mean(axis=0) if len(values) else np.full(len(names), np.nan)
        means = two_way_means(values, users, items, resamples, [seed, 32])
        for j, name in enumerate(names):
            if metric == "auc":
                rows.append({"name": name})
            rows[j][metric] = float(point[j])
            rows[j][f"{metric}_ci"] = interval(means[:, j]) if resamples else None
        for a, b, label in DIFFERENCES:
            if a in names and b in names:
                ia, ib = names.index(a), names.index(b)
                ci = interval(means[:, ia] - means[:, ib]) if resamples else None
                contains = None if not ci or ci[0] is None else bool(ci[0] <= 0.0 <= ci[1])
                diffs.append({"label": label, "metric": metric, "a": a, "b": b, "diff": float(point[ia] - point[ib]),
                              "ci": ci, "contains_zero": contains})  # fmt: skip
    return {"rows": rows, "differences": diffs}


def evaluate_fresh(
    run: Path,
    plan: Replay,
    n_next: int = 50,
    k: int | None = None,
    resamples: int | None = None,
    data: dict[str, Any] | None = None,
    rows: list[str] | None = None,
    out: Path | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Replay ``plan`` once per row on the finished batch ``run`` (its live store is emptied before each) and
    write ``RUN/eval/fresh.json`` (or ``out``): the rows, intervals, differences and what the replay did."""
    from socialfeat.export import encoder_for
    from socialfeat.live.embedding import run_sources

    t0 = time.perf_counter()
    run = Path(run)
    if config is None:
        config = load_config(run / "config.yaml" if (run / "config.yaml").is_file() else None)
    import torch

    torch.set_num_threads(config.serve.torch_threads)  # a title's text model, one item at a time: as serve runs it
    k = k or config.evaluate.k
    resamples = config.evaluate.bootstrap if resamples is None else resamples
    audience = audiences(plan, n_next)
    found = predictors(run, config)
    wanted = rows or list(found)
    encoders = {s: encoder_for(config, run, s, threads=0) for s in run_sources(config, run)}
    rec = Recommender(run, index_log=True)
    pairs = Pairs()
    pairs_of_users: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    logs: dict[str, dict[str, Any]] = {}
    for n, name in enumerate(wanted):
        predict, fit = found[name]
        shutil.rmtree(run / "live", ignore_errors=True)
        live = Live(config, run, recommender=rec, create=True)
        if pairs_of_users is None:
            pairs_of_users = batch_pairs(live)
        live._batch_pairs = dict(pairs_of_users)  # read once for every replay, not once per user and replay
        did = replay(live, plan, audience, name, pairs, k, predict, encoders, config.seed if n == 0 else None)
        logs[name] = {**fit, "seconds": round(did.seconds, 1), "predicted_by": dict(did.predicted_by)}
        log.info("%s: %d pairs in %.0f s", name, len(pairs.auc[name]), did.seconds)
        if n == 0:
            first = did
    shutil.rmtree(run / "live", ignore_errors=True)
    result: dict[str, Any] = {
        "protocol": {
            "n_next": n_next,
            "k": k,
            "warm_after": config.live.warm_after,
            "text": (
                f"each new item at its arrival, ranked for each user whose next {n_next} events include it, against "
                "every item that user had not engaged with (Live.rank's candidates)"
            ),
        },
        "data": data or {},
        "arrivals": len(plan.arrivals),
        "events_after_cut": len(plan.events),
        "events_logged": first.logged,
        "events_skipped": first.skipped_events,
        "items_with_audience": len(set(pairs.items)),
        "users": len(set(pairs.users)),
        "pairs": len(pairs.users),
        "pairs_unknown_user": first.unknown_users,
        "pairs_undefined": first.undefined,
        "bootstrap": {
            "resamples": resamples,
            "level": LEVEL,
            "paired": True,
            "over": "users and items",
            "seed": config.seed,
        },  # fmt: skip
        **summarize(pairs, k, resamples, config.seed),
        "replays": logs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out or run / "eval" / "fresh.json", result)
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The fresh-content table and its differences as Markdown (bench/RESULTS.md)."""
    k = result["protocol"]["k"]
    key = f"recall@{k}"
    lines = [
        f"{result['pairs']:,} (user, new item) pairs: {result['items_with_audience']:,} of {result['arrivals']:,} "
        f"new items, {result['users']:,} users; N = {result['protocol']['n_next']}, k = {k}; "
        f"{result['bootstrap']['resamples']} bootstrap resamples over users and items.",
        "",
        f"| row | AUC [95% CI] | {key} [95% CI] |",
        "| --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {_with_ci(r['auc'], r.get('auc_ci'))} | {_with_ci(r[key], r.get(key + '_ci'))} |"
        )
    lines += ["", "| paired difference in AUC | value [95% CI] |", "| --- | --- |"]
    for d in (d for d in result["differences"] if d["metric"] == "auc"):  # recall's are in the JSON
        ci = d.get("ci")
        shown = f" [{signed(ci[0])}, {signed(ci[1])}]" if ci and ci[0] is not None else ""
        lines.append(f"| {d['label']} | {signed(d['diff'])}{shown} |")
    return "\n".join(lines)


def _with_ci(value: float, ci: list[float | None] | None) -> str:
    if ci and ci[0] is not None:
        return f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"
    return f"{value:.4f}"
