"""The hybrid cold-start rows of ``evaluate``: what the content model (``socialfeat content``) scored for every item
source alone, each pair and all together, read from ``content/metrics.json`` — not refitted, and not imported from
the content stage (stages share files, not modules).

The rows are trusted only when they are on this evaluation's items and factors: the content stage's train/valid/test
counts equal ours and nothing in ``content/`` is older than ``factors/`` or the features of a source it scored.
Otherwise they are left out with a one-line note saying to rerun ``socialfeat content RUN``, so a stale model never
sits beside fresh image rows. The content stage scores the same seeded user sample as ``evaluate`` and bootstraps its
rows with the same resamples; each row's ``auc_ci`` and the differences its headline states come along, and a
content model scored on another sample keeps its rows with a note that they are not paired with these.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from socialfeat.features import content_older_than

GROUPS = ("single", "pair", "all")  # one source alone, two together, three or more (the full models)
NOTE = "content model: "  # every note of this module starts so (the report quotes it when the section is absent)
VARIANT_KEYS = ("variant", "model")  # a row key naming how its sources were combined (late fusion, joint …)
_RECALL = re.compile(r"^recall@(\d+)$")
NO_INTERVALS = (  # what the section says when content/metrics.json has rows without an interval
    "no 95% intervals for some of these rows, nor for the differences the headline states: content/metrics.json "
    "was written with evaluate.bootstrap = 0 or before the content stage bootstrapped its rows; rerun "
    "`socialfeat content RUN`"
)


def group_of(sources: list[str]) -> str:
    """``single``, ``pair`` or ``all`` (three or more sources: the content stage's full combinations)."""
    return GROUPS[min(len(sources), 3) - 1]


def _row_ok(row: Any) -> bool:
    sources = row.get("sources") if isinstance(row, dict) else None
    return (
        isinstance(sources, list)
        and bool(sources)
        and all(isinstance(s, str) for s in sources)
        and isinstance(row.get("auc"), int | float)
    )


def _variant(row: dict[str, Any]) -> str | None:
    return next((str(row[k]) for k in VARIANT_KEYS if isinstance(row.get(k), str) and row[k]), None)


def _k(rows: list[dict[str, Any]]) -> int | None:
    """The cut-off of the rows' recall@k (the content stage ran with its own evaluate.k)."""
    for row in rows:
        for key in row:
            m = _RECALL.match(str(key))
            if m:
                return int(m.group(1))
    return None


def content_section(
    run: Path, split: dict[str, int], k: int, sample: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """The ``content`` section of ``eval/metrics.json`` and notes; (None, []) for a run without a content model,
    (None, [why]) when its metrics are unreadable or on another split / older factors than this evaluation. With
    ``sample`` (this evaluation's users), a content model scored on other users keeps its rows, with a note that
    they are not paired with the evaluation's."""
    folder = run / "content"
    path = folder / "metrics.json"
    rerun = f"rerun `socialfeat content {run}` to include its rows"
    if not path.is_file():
        return None, []
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(m, dict):
            raise ValueError(f"expected a JSON object, got {type(m).__name__}")
    except (OSError, ValueError) as e:
        return None, [f"{NOTE}content/metrics.json is unreadable ({type(e).__name__}: {e}); {rerun}"]
    theirs = m.get("split") if isinstance(m.get("split"), dict) else {}
    ours = {key: split[key] for key in ("train", "valid", "test")}
    if {key: theirs.get(key) for key in ours} != ours:
        shown = "/".join(str(theirs.get(key, "?")) for key in ours)
        return None, [
            f"{NOTE}fit on another split (train/valid/test {shown} items vs {'/'.join(map(str, ours.values()))} "
            f"here); {rerun}"
        ]
    raw = m.get("rows") if isinstance(m.get("rows"), list) else []
    kept = [r for r in raw if _row_ok(r)]
    older = content_older_than(run, [s for r in kept for s in r["sources"]])
    if older is not None:
        fit_on = "factors" if older == "factors/" else "features"
        return None, [f"{NOTE}content/ is older than {older} (fit on earlier {fit_on}); {rerun}"]
    notes = []
    if len(kept) < len(raw):
        notes.append(f"{NOTE}{len(raw) - len(kept)} row(s) of content/metrics.json without sources or AUC; skipped")
    if not kept:
        return None, [*notes, f"{NOTE}content/metrics.json has no scored rows; {rerun}"]
    combos = Counter(frozenset(r["sources"]) for r in kept)
    rows = []
    for r in kept:
        name = " + ".join(r["sources"])
        if combos[frozenset(r["sources"])] > 1 and _variant(r):  # the same sources fit two ways: say which
            name += f" · {_variant(r)}"
        rows.append({**r, "group": group_of(r["sources"]), "name": str(r.get("name") or name)})
    rows.sort(key=lambda r: (GROUPS.index(r["group"]), -r["auc"]))  # best first within singles, pairs, all
    theirs_k = _k(rows)
    if theirs_k is not None and theirs_k != k:
        notes.append(f"{NOTE}its recall and NDCG are @{theirs_k} (the content stage's evaluate.k), not @{k}")
    peer = m.get("peer") if isinstance(m.get("peer"), dict) else None
    theirs_sample = m.get("sample") if isinstance(m.get("sample"), dict) else None
    if sample is not None and theirs_sample is not None and _users(theirs_sample) != _users(sample):
        notes.append(
            f"{NOTE}scored on another user sample ({theirs_sample.get('text', '?')}; λ on "
            f"{theirs_sample.get('valid_users', '?')} users) than this evaluation ({sample.get('text', '?')}; λ on "
            f"{sample.get('valid_users', '?')} users), so its rows are not paired with these; {rerun}"
        )
    differences = [
        d for d in m.get("differences") or [] if isinstance(d, dict) and isinstance(d.get("diff"), int | float)
    ]
    section = {
        "from": "content/metrics.json",
        "k": theirs_k if theirs_k is not None else k,
        "split": ours,
        "rows": rows,
        "peer": peer,
        "model": m.get("model") if isinstance(m.get("model"), dict) else None,
        "test_items_missing_a_source": max((_int(r.get("test_items_missing_a_source")) for r in rows), default=0),
        "notes": [str(n) for n in m.get("notes", []) if n] if isinstance(m.get("notes"), list) else [],
        "sample": theirs_sample,
        "bootstrap": m.get("bootstrap") if isinstance(m.get("bootstrap"), dict) else None,
        "differences": differences,
        "intervals": None if all(_interval(r.get("auc_ci")) for r in rows) else NO_INTERVALS.replace("RUN", str(run)),
    }
    return section, notes


def _users(sample: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two user samples the same: how many test and valid users, of how many, and the seed."""
    return tuple(sample.get(key) for key in ("users", "of", "valid_users", "valid_of", "seed"))


def _interval(value: Any) -> bool:
    """A [lo, hi] pair of numbers (a row's ``auc_ci``)."""
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0
