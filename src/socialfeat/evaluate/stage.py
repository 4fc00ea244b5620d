"""``evaluate``: every feature source of a run on the same cold items — cold-start audience prediction, behavioural
retrieval and linear probes — written to ``run/eval/metrics.json`` with reference rows (random scores, and a
popularity oracle) that bracket what the numbers can mean, and, when the run has a current content model, its
hybrid rows (item sources alone, in pairs and together; see :mod:`socialfeat.evaluate.hybrid`).

Every row is ranked on the same seeded sample of users (``evaluate.users``) and the same test items. A paired
bootstrap over those users and items (``evaluate.bootstrap`` resamples; :mod:`socialfeat.measures.bootstrap`) gives
each row's AUC a 95% interval. Each headline difference (learned against ImageNet, random and metadata features)
gets an interval that says whether it is more than noise. The users-only interval stays beside it as ``ci_users``."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from socialfeat.artifacts import read_schema, rerun_command
from socialfeat.atomic import atomic_dir, write_json, write_text
from socialfeat.config import Config, dump_config, provenance
from socialfeat.data.tags import item_tags, multi_hot_sparse, vocabulary
from socialfeat.errors import UserError
from socialfeat.evaluate.hybrid import content_section
from socialfeat.evaluate.probe import PROBE_C, LabelSet, probe_row, read_labels
from socialfeat.evaluate.retrieval import load_audiences, retrieval_row
from socialfeat.features import SOURCES as EMBED_SOURCES
from socialfeat.freshness import check_current, feature_product
from socialfeat.jsonio import finite
from socialfeat.measures.bootstrap import difference, interval, two_way_means
from socialfeat.measures.bootstrap import settings as bootstrap_settings
from socialfeat.measures.coldstart import (
    aligned_features,
    coldstart_scored,
    load_coldstart,
    popularity_scored,
    random_scored,
    sampled,
    user_sample,
)
from socialfeat.runlock import writes_run

log = logging.getLogger(__name__)

SOURCES = (*EMBED_SOURCES, "metadata")
MAX_TAGS = 4096  # metadata one-hot keeps the most frequent tags; rarer ones cannot be learned from anyway
Step = Callable[[str], None]


@dataclass
class EvaluateResult:
    """Where the evaluation went and what it measured.

    Attributes:
        out: The metrics file, ``RUN/eval/metrics.json``.
        metrics: Per feature source its cold-start AUC, retrieval and probe scores, plus paired differences
            with bootstrap intervals, notes and settings.
    """

    out: Path
    metrics: dict[str, Any]


@dataclass(frozen=True)
class SourceRow:
    """One row of the results table: a feature column of a source and how it becomes predicted factors."""

    name: str
    source: str
    column: str
    mapping: str  # "ridge" (fit on warm items) or "head" (the output is already predicted factors)


def _feature_columns(run: Path, source: str) -> list[str] | None:
    """Vector columns of ``features/<source>.parquet`` (or of its first rank part); None when it does not exist."""
    base = run / "features"
    files = [base / f"{source}.parquet"] if (base / f"{source}.parquet").is_file() else []
    files = files or sorted(base.glob(f"{source}.part-*-of-*.parquet"))
    if not files:
        return None
    return [name for name in read_schema(files[0]).names if name != "item_id"]


def _head_label(column: str) -> str:
    return column.removeprefix("head_").replace("_", " ")


def plan_rows(run: Path, sources: list[str], n_factors: int) -> tuple[list[SourceRow], list[str]]:
    """The rows to evaluate for the requested sources, and notes on those skipped (missing files, no tags)."""
    rows: list[SourceRow] = []
    notes: list[str] = []
    for source in sources:
        if source == "metadata":
            rows.append(SourceRow("metadata", "metadata", "tags", "ridge"))
            continue
        columns = _feature_columns(run, source)
        if columns is None:
            make = rerun_command(run, f"features/{source}.parquet")
            notes.append(f"{source}: no features/{source}.parquet; make it with: {make}")
            continue
        if source != "learned":
            rows.append(SourceRow(source, source, "features", "ridge"))
            continue
        rows.append(SourceRow("learned · pooled", source, "features", "ridge"))
        for column in columns:
            if column == "head_factors":
                if _width(run, source, column) == n_factors:
                    rows.append(SourceRow("learned · factor head", source, column, "head"))
                else:
                    notes.append("learned · factor head: head width differs from the factors'; direct row skipped")
                rows.append(SourceRow("learned · factor head + ridge", source, column, "ridge"))
            elif column.startswith("head_"):
                rows.append(SourceRow(f"learned · {_head_label(column)} head + ridge", source, column, "ridge"))
    return rows, notes


def _width(run: Path, source: str, column: str) -> int:
    base = run / "features"
    path = base / f"{source}.parquet"
    path = path if path.is_file() else sorted(base.glob(f"{source}.part-*-of-*.parquet"))[0]
    return int(read_schema(path).field(column).type.list_size)


def tag_features(run: Path, n_items: int) -> tuple[sp.csr_matrix, int] | None:
    """One-hot item × tag matrix (sparse: n_items × 4,096 dense would be 7 GB at 423K items) from
    dataset/items.parquet (None when there are no tags), and the tag count."""
    tags = item_tags(run)
    if tags is None:
        return None
    n_tags = len({tag for item in tags.values() for tag in item})
    vocab = vocabulary(list(tags.values()), MAX_TAGS)
    if not vocab:
        return None
    rows = [tags.get(i, []) for i in range(n_items)]
    return multi_hot_sparse(rows, vocab)[0], n_tags


def _check_sources(sources: list[str] | None, run: Path | None = None) -> list[str]:
    """The requested sources; by default every one, meta-class only when the run has its features (an optional
    baseline is not a missing file)."""
    default = [s for s in SOURCES if s != "meta-class" or (run and _feature_columns(run, s) is not None)]
    chosen = list(dict.fromkeys(sources or default))
    for s in chosen:
        if s not in SOURCES:
            raise UserError("--source", f"expected one of {', '.join(SOURCES)}, got '{s}'")
    return chosen


HEADLINE = (("imagenet", "ImageNet"), ("random", "random"), ("metadata", "metadata"))


def _best(rows: list[dict[str, Any]], source: str) -> int | None:
    """Index of ``source``'s row to quote: best valid AUC (selection without peeking at the test items); the first
    (``learned · pooled``) when none has one."""
    mine = [i for i, r in enumerate(rows) if r["source"] == source and r["coldstart"].get("auc") is not None]
    with_valid = [i for i in mine if _number(rows[i]["coldstart"].get("valid_auc"))]
    if with_valid:
        return max(with_valid, key=lambda i: rows[i]["coldstart"]["valid_auc"])
    return mine[0] if mine else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def intervals(
    results: list[dict[str, Any]],
    references: list[dict[str, Any]],
    per_user: np.ndarray,
    resamples: int,
    seed: int,
    per_item: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Set each row's and reference's ``auc_ci`` (users and items) and ``auc_ci_users`` from a paired bootstrap
    of ``per_user`` (users × (rows + refs) AUCs) and ``per_item`` (test items × (rows + refs) influences), and
    return the headline differences: learned − ImageNet, learned − random, learned − metadata."""
    entries = [*results, *references]
    means, users = two_way_means(per_user, per_item, resamples, [seed, 2]) if resamples else (None, None)
    for j, entry in enumerate(entries):
        if means is not None and users is not None:
            entry["coldstart"]["auc_ci"] = interval(means[:, j])
            entry["coldstart"]["auc_ci_users"] = interval(users[:, j])
    point = [e["coldstart"]["auc"] for e in entries]
    learned = _best(results, "learned")
    out = []
    for source, label in HEADLINE:
        other = _best(results, source)
        if learned is None or other is None:
            continue
        a, b = results[learned]["name"], results[other]["name"]
        out.append(
            {"a": a, "b": b, "label": f"learned − {label}", **difference(means, point, learned, other, users=users)}
        )
    return out


@writes_run()
def evaluate(
    config: Config,
    run: str | os.PathLike[str],
    sources: list[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    step: Step | None = None,
) -> EvaluateResult:
    """Score every feature source on the same cold items, so that learned and ImageNet features compare fairly.

    Writes ``run/eval``: ``metrics.json``, ``config.yaml`` and ``manifest.json``.

    Args:
        config: The run's configuration; reads ``evaluate`` and ``seed``.
        run: The run folder, holding ``factors/`` and ``features/``.
        sources: Which sources to score; default every one the run has.
        labels: A table of item labels for linear probes; default ``config.evaluate.labels``.
        step: Hears the name of each phase as it starts.

    Returns:
        The metrics file and its content.

    Raises:
        UserError: No run folder, an unknown source, stale or missing features, or a bad λ grid.
    """
    run = Path(run)
    cfg = config.evaluate
    say = step or (lambda _msg: None)
    started = time.perf_counter()
    if not run.is_dir():
        raise UserError(str(run), "run folder not found")
    lambdas = sorted(float(x) for x in cfg.ridge_lambdas)
    if any(not lam > 0 for lam in lambdas):
        raise UserError("evaluate.ridge_lambdas", f"every λ must be > 0, got {cfg.ridge_lambdas}")
    chosen = _check_sources(sources, run)
    # factors/ and each source's features current with what they were made from (content/ keeps its own rule)
    check_current(run, ["factors", *(feature_product(s) for s in chosen if s in EMBED_SOURCES)])
    say("reading factors")
    data = sampled(load_coldstart(run), cfg.users, cfg.valid_users, config.seed)
    sample = user_sample(data, config.seed)
    rows, notes = plan_rows(run, chosen, data.item_factors.shape[1])
    if not any(r.source in EMBED_SOURCES for r in rows) and set(chosen) & set(EMBED_SOURCES):
        missing = [s for s in chosen if s in EMBED_SOURCES]
        names = missing[0] if len(missing) == 1 else "{" + ",".join(missing) + "}"
        raise UserError(
            str(run),
            f"no features/{names}.parquet; make it with: {rerun_command(run, f'features/{missing[0]}.parquet')}",
        )
    label_path = labels if labels is not None else cfg.labels
    label_sets: list[LabelSet] = []
    if label_path is not None:
        label_sets, label_notes = read_labels(Path(label_path), data.item_ids, config.seed)
        notes.extend(label_notes)
    audiences = load_audiences(run, data.n_items, np.isin(data.split, ["valid", "test"]))

    results: list[dict[str, Any]] = []
    per_user: list[np.ndarray] = []  # per-user test AUC of each row, float32, for the bootstrap
    per_item: list[np.ndarray | None] = []  # each test item's influence on each row's AUC, for the bootstrap's items
    boot = cfg.bootstrap > 0  # the items' influences serve the bootstrap alone
    retrieval_cache: dict[tuple[str, str], dict[str, Any]] = {}
    probe_cache: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        t0 = time.perf_counter()
        if row.source == "metadata":
            tagged = tag_features(run, data.n_items)
            if tagged is None:
                notes.append("metadata: the items table has no tags (or genres); row skipped")
                continue
            features, n_tags = tagged
            has = np.ones(data.n_items, dtype=bool)
            if n_tags > features.shape[1]:
                notes.append(f"metadata: the {features.shape[1]:,} most frequent of {n_tags:,} tags one-hot encoded")
        else:
            features, has = aligned_features(run, row.source, row.column, data)
        say(f"{row.name}: cold start")
        entry: dict[str, Any] = {
            "name": row.name,
            "source": row.source,
            "column": row.column,
            "mapping": row.mapping,
            "dim": int(features.shape[1]),
        }
        entry["coldstart"], ranked = coldstart_scored(features, has, row.mapping, data, lambdas, cfg.k, influence=boot)
        per_user.append(ranked.auc.astype(np.float32))
        per_item.append(ranked.item_influence)
        lam = entry["coldstart"].get("lambda")
        if lam is not None and len(lambdas) > 1 and lam in (lambdas[0], lambdas[-1]):
            notes.append(
                f"{row.name}: λ = {lam:g} is at the edge of evaluate.ridge_lambdas; a wider grid may do better"
            )
        key = (row.source, row.column)
        if key not in retrieval_cache:
            say(f"{row.name}: retrieval")
            retrieval_cache[key] = retrieval_row(features, has, audiences, cfg.neighbours, cfg.max_queries, config.seed)
        entry["retrieval"] = retrieval_cache[key]
        if label_sets:
            if key not in probe_cache:
                say(f"{row.name}: probes")
                probe_cache[key] = {
                    ls.name: probe_row(features, has, ls, cfg.few_shot, config.seed) for ls in label_sets
                }
            entry["probes"] = probe_cache[key]
        entry["seconds"] = time.perf_counter() - t0
        del features  # before the next row's matrix is read: one catalogue-sized matrix at a time
        results.append(entry)
        log.info("%s: AUC %.4f (%.1f s)", row.name, entry["coldstart"]["auc"], entry["seconds"])

    if not results:
        raise UserError(str(run), "nothing to evaluate: " + "; ".join(notes))
    say("references")
    random_ranked = random_scored(data, cfg.k, config.seed, influence=boot)
    popular_ranked = popularity_scored(data, cfg.k, influence=boot)
    per_user += [random_ranked.auc.astype(np.float32), popular_ranked.auc.astype(np.float32)]
    per_item += [random_ranked.item_influence, popular_ranked.item_influence]
    references = [
        {
            "name": "random scores",
            "coldstart": random_ranked.summary(),
            "note": "uniform random scores: the floor",
        },
        {
            "name": "popularity (oracle)",
            "oracle": True,
            "coldstart": popular_ranked.summary(),
            "note": "test items ranked by their true number of hidden cold interactions — sees the hidden data; "
            "the ceiling of a predictor that only guesses how popular a new image will be",
        },
    ]
    if cfg.bootstrap:
        say(f"bootstrap ({cfg.bootstrap:,} resamples of {sample['users']:,} users and {len(data.test):,} test items)")
    else:
        say("differences")
    differences = intervals(
        results,
        references,
        np.stack(per_user, axis=1),
        cfg.bootstrap,
        config.seed,
        np.stack(per_item, axis=1) if boot else None,
    )
    split = {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)}
    hybrid, hybrid_notes = content_section(run, split, cfg.k, sample)
    notes.extend(hybrid_notes)
    metrics = {
        "k": cfg.k,
        "split": {**split, "users_evaluated": sample["users"], "users_eligible": sample["of"]},
        "sample": sample,
        "bootstrap": bootstrap_settings(cfg.bootstrap, len(data.test), config.seed),
        "rows": results,
        "references": references,
        "differences": differences,
        **({"content": hybrid} if hybrid is not None else {}),
        "notes": notes,
        "settings": {
            "ridge_lambdas": lambdas,
            "neighbours": cfg.neighbours,
            "max_queries": cfg.max_queries,
            "few_shot": cfg.few_shot,
            "probe_C": PROBE_C,
            "labels": str(label_path) if label_path is not None else None,
            "sources": chosen,
            "users": cfg.users,
            "valid_users": cfg.valid_users,
            "bootstrap": cfg.bootstrap,
        },
        "seconds": time.perf_counter() - started,
    }
    metrics = finite(metrics)  # a metric undefined for a row is null, never NaN
    with atomic_dir(run / "eval", "eval") as tmp:
        for kept in (run / "eval").glob("transfer-*.json"):  # `transfer` writes beside; its results stay current
            shutil.copy2(kept, tmp / kept.name)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "manifest.json", provenance(config, "evaluate"))
        write_text(tmp / "config.yaml", dump_config(config))
    return EvaluateResult(out=run / "eval" / "metrics.json", metrics=metrics)
