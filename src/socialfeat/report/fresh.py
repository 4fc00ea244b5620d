"""The report's "Fresh content" section: how well brand-new items were recommended in a time-ordered replay through
the live catalogue, from ``eval/fresh.json`` (written by ``bench/fresh.py`` through :mod:`socialfeat.live.fresh`).
One row per way of predicting a new item's factors, each with its 95% interval over users and items, and a sentence
per paired difference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from socialfeat.report.sections import cell, difference_text, read_json, table

REFERENCES = ("popularity", "random")  # rows shown for scale, never a best-value candidate


def _ci(ci: Any) -> dict[str, Any]:
    ok = isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)
    return cell(f"{ci[0]:.4f}–{ci[1]:.4f}" if ok else None)


def fresh_section(run: Path) -> dict[str, Any]:
    """The fresh-content table (AUC and recall@k with intervals per row), the differences and the protocol."""
    m = read_json(run / "eval" / "fresh.json", f"python bench/fresh.py … (replays {run})")
    protocol = m.get("protocol") or {}
    k = protocol.get("k", 20)
    body = []
    for r in m.get("rows") or []:
        name = str(r.get("name"))
        first = {**cell(name), "reference": name in REFERENCES}
        body.append(
            [first, cell(r.get("auc")), _ci(r.get("auc_ci")), cell(r.get(f"recall@{k}")), _ci(r.get(f"recall@{k}_ci"))]
        )
    boot = m.get("bootstrap") or {}
    data = m.get("data") or {}
    caption = (
        f"{m.get('pairs', 0):,} (user, new item) pairs: {m.get('items_with_audience', 0):,} of "
        f"{m.get('arrivals', 0):,} new items, {m.get('users', 0):,} users. Each new item is ranked at its arrival "
        f"for each user whose next {protocol.get('n_next', '?')} events include it, against every item that user "
        f"had not engaged with. AUC: the share of those items it beats; recall@{k}: whether it makes the top {k}. "
        f"95% interval: paired bootstrap resampling users and items ({boot.get('resamples', 0):,} resamples). "
        "Popularity and random (italics) are references. Best AUC and recall in bold."
    )
    notes = []
    if data.get("arrival"):
        notes.append(f"Arrivals: {data['arrival']}; cut at {data.get('cut_text', data.get('cut'))}.")
    if m.get("events_skipped"):
        notes.append(f"{m['events_skipped']:,} events on items the batch data set filtered out were not replayed.")
    said = [t for t in (difference_text(d) for d in m.get("differences") or [] if d.get("metric") == "auc") if t]
    head = ["row", "AUC", "95% interval", f"recall@{k}", "95% interval"]
    return {
        "table": table(head, body, caption, best={1: "max", 3: "max"}),
        "differences": "Paired differences in AUC: " + "; ".join(said) + "." if said else None,
        "notes": notes,
    }
