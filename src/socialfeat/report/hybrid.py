"""The report's "Hybrid cold start" section: what a new item's title, text, tags and numeric columns add to its
image, from the ``content`` section of ``eval/metrics.json`` (``evaluate`` copies the content model's rows there
only when they are on the same split and factors, so the report shows nothing stale). A table of every source
alone, each pair and all together with each test AUC's 95% interval, a sentence per difference the headline states
(saying plainly when its interval contains 0), and a stacked chart: each bar's gain over chance split by source in
proportion to the fusion weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from socialfeat.report import plots
from socialfeat.report.gallery import Missing
from socialfeat.report.sections import cell, difference_text, read_json, table

IMAGE_SOURCES = ("learned", "imagenet")
SOURCES = {  # colour and name per content source, in legend order (the image ones match the evaluation chart)
    "learned": ("#3b6ea5", "learned"),
    "imagenet": ("#d1803a", "ImageNet"),
    "text": ("#7f6aa8", "text"),
    "tags": ("#5a9e6f", "tags"),
    "numeric": ("#c2a83e", "numeric"),
}
UNWEIGHTED = "?"  # a row without fusion weights (one joint fit over its sources): one grey segment
GROUPS = {"single": "alone", "pair": "pairs", "all": "all together"}
NOTE = "content model: "  # how evaluate's notes about the content model begin


def _n(count: Any) -> str:
    return f"{count:,}" if isinstance(count, int) else "?"


def _name(source: str) -> str:
    return SOURCES.get(source, ("", source))[1]


def _weights(row: dict[str, Any], shares: bool = False) -> dict[str, float] | None:
    """The row's fusion weights over its own sources — with ``shares``, a joint fit's variance shares where it has
    no weights — or None when it has none to show."""
    w = row.get("weights")
    if not isinstance(w, dict) and shares:
        w = row.get("shares")
    if not isinstance(w, dict):
        return None
    got = {s: float(w[s]) for s in row["sources"] if isinstance(w.get(s), int | float) and w[s] >= 0}
    return got if sum(got.values()) > 0 else None


def _label(row: dict[str, Any]) -> str:
    """``ImageNet + tags`` (and the variant, when the content stage told rows apart by one)."""
    joined = " + ".join(row["sources"])
    name = str(row.get("name") or joined)
    return name.replace(joined, " + ".join(_name(s) for s in row["sources"]))


def _why_missing(run: Path, m: dict[str, Any] | None) -> str:
    """What to run for the section: fit a content model, or refit one evaluate left out, or evaluate again."""
    if not (run / "content" / "metrics.json").is_file():
        return (
            f"no content model; run `socialfeat content {run}` (a new item's title and text, tags and numeric "
            f"columns beside its image), then `socialfeat evaluate {run}` — or list `content.sources` in the "
            "config and `socialfeat run` does both"
        )
    if m is None:
        return f"no eval/metrics.json; run `socialfeat evaluate {run}` (it includes the content model's rows)"
    note = next((str(n) for n in m.get("notes", []) if str(n).startswith(NOTE)), None)
    if note:
        return f"the evaluation left the content model out: {note.removeprefix(NOTE)}, then `socialfeat evaluate {run}`"
    return f"the evaluation predates the content model; run `socialfeat evaluate {run}` to include its rows"


def hybrid_section(run: Path) -> dict[str, Any]:
    """The table and the stacked chart of the content model's rows, with its notes."""
    path = run / "eval" / "metrics.json"
    m = read_json(path, f"socialfeat evaluate {run}") if path.is_file() else None
    section = (m or {}).get("content")
    if not isinstance(section, dict) or not section.get("rows"):
        raise Missing(_why_missing(run, m))
    k = section.get("k", 20)
    split = section.get("split") or {}
    groups = {g: sorted((r for r in section["rows"] if r.get("group") == g), key=lambda r: -r["auc"]) for g in GROUPS}
    with_ci = any(_is_ci(r.get("auc_ci")) for r in section["rows"])  # once the content stage bootstraps its rows
    body = []
    for g, rows in groups.items():
        for i, r in enumerate(rows):
            w = _weights(r) if len(r["sources"]) > 1 else None
            body.append(
                [
                    cell(GROUPS[g] if i == 0 else ""),
                    cell(_label(r)),
                    cell(" · ".join(f"{_name(s)} {v:.2f}".replace(" 0.00", " 0") for s, v in w.items()) if w else ""),
                    cell(r.get("valid_auc")),
                    cell(r["auc"]),
                    *([_ci_cell(r.get("auc_ci"))] if with_ci else []),
                    cell(r.get(f"recall@{k}")),
                    cell(r.get(f"ndcg@{k}")),
                    cell(r.get("test_items_missing_a_source"), "{:,}"),
                ]
            )
    peer = section.get("peer") if isinstance(section.get("peer"), dict) else None
    ran = peer is not None and isinstance(peer.get("auc"), int | float)
    if ran:
        name = str(peer.get("name", "peer"))
        body.append(
            [{**cell("peer"), "reference": True}, cell(name), cell("")]
            + [cell(None), cell(peer["auc"]), *([_ci_cell(peer.get("auc_ci"))] if with_ci else [])]
            + [cell(peer.get(f"recall@{k}")), cell(peer.get(f"ndcg@{k}")), cell(None)]
        )
    test = split.get("test")
    sample = section.get("sample") if isinstance(section.get("sample"), dict) else {}
    users = f" ({sample['text']})" if sample.get("text") else ""
    resamples = (section.get("bootstrap") or {}).get("resamples")
    caption = (
        f"The content model on the evaluation's {_n(test)} cold test items and users{users}. Late fusion: one ridge "
        "map per "
        "source to the item factors (λ chosen on the valid cold items), fused with weights chosen on valid (forward "
        "selection; a source given weight 0 adds nothing). Joint: one ridge over every source, a λ per source and "
        f"the source dropout chosen on valid. Best test AUC, recall@{k} and NDCG@{k} in bold"
        + ("; the peer (italics) is not a candidate." if ran else ".")
        + (
            f" 95% interval: paired bootstrap over the same users and test items ({resamples:,} resamples), percentiles."
            if with_ci and isinstance(resamples, int)
            else ""
        )
    )
    said = [t for t in (difference_text(d) for d in section.get("differences") or []) if t]
    head = ["", "sources", "fusion weights", "valid AUC", "test AUC", *(["95% interval"] if with_ci else [])]
    head += [f"recall@{k}", f"NDCG@{k}", "missing a source"]
    notes = [str(n) for n in section.get("notes", [])]
    notes += [str(section["intervals"])] if section.get("intervals") else []
    notes += [str(n).removeprefix(NOTE) for n in (m or {}).get("notes", []) if str(n).startswith(NOTE)]
    if peer is not None and not ran and peer.get("skipped"):
        notes = [n for n in notes if not n.startswith("LightFM row skipped")]
        notes.append(f"{peer.get('name', 'the peer')}: not run ({peer['skipped']}).")
    return {
        "table": table(head, body, caption, best={i: "max" for i in (3, 4, 5 + int(with_ci), 6 + int(with_ci))}),
        "differences": (
            "Differences the headline states, paired over the same users: " + "; ".join(said) + "." if said else None
        ),
        "chart": _chart(groups, peer if ran else None),
        "chart_caption": _chart_caption(section, peer if ran else None),
        "notes": notes,
    }


def _is_ci(ci: Any) -> bool:
    return isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)


def _ci_cell(ci: Any) -> dict[str, Any]:
    """A row's 95% interval as text (never a best-value candidate), "–" without one."""
    return cell(f"{ci[0]:.4f}–{ci[1]:.4f}" if _is_ci(ci) else None)


def _chart(groups: dict[str, list[dict[str, Any]]], peer: dict[str, Any] | None) -> str:
    """One bar per row, grouped; length test AUC − 0.5, coloured by source in proportion to the fusion weights;
    the image-only rows in bold and the best of them, and the LightFM peer, as reference lines."""
    bars = []
    for g, rows in groups.items():
        stacks = []
        for r in rows:
            gain = r["auc"] - 0.5
            w = _weights(r, shares=True)
            if w is None:
                segments = [(UNWEIGHTED, gain)]
            else:
                total = sum(w.values())
                segments = [(s, gain * v / total) for s, v in w.items() if v > 0]
            image_only = all(s in IMAGE_SOURCES for s in r["sources"])
            stacks.append(plots.Stack(_label(r), segments, f"{r['auc']:.3f}", bold=image_only))
        bars.append((GROUPS[g], stacks))
    vlines = {}
    image = [r for rows in groups.values() for r in rows if all(s in IMAGE_SOURCES for s in r["sources"])]
    if image:
        best = max(image, key=lambda r: r["auc"])
        vlines[f"best image alone ({_label(best)}, {best['auc']:.3f})"] = best["auc"] - 0.5
    if peer is not None:
        vlines[f"{str(peer.get('name', 'peer')).split(',')[0]} peer ({peer['auc']:.3f})"] = peer["auc"] - 0.5
    colors = {**SOURCES, UNWEIGHTED: ("#b5b5b5", "one joint fit (no shares recorded)")}
    for r in (r for rows in groups.values() for r in rows):
        for s in r["sources"]:
            colors.setdefault(s, (plots.COLORS[(len(colors) + 2) % len(plots.COLORS)], s))
    return plots.stacked_bars(bars, colors, "test AUC − 0.5 (0 = chance; the AUC at the bar's end)", vlines)


def _chart_caption(section: dict[str, Any], peer: dict[str, Any] | None) -> str:
    """What the bars mean, and how many test items lack a source (scored from the sources they have)."""
    test = (section.get("split") or {}).get("test")
    missing = section.get("test_items_missing_a_source")
    if not isinstance(missing, int):
        missing = max((r.get("test_items_missing_a_source") or 0 for r in section["rows"]), default=0)
    text = (
        "Each bar is a row of the table: its gain over chance (test AUC − 0.5), split into one segment per source in "
        "proportion to the fusion weights chosen on valid (a joint fit: each source's share of the variance of its "
        "predictions on the warm items). Bold rows use the image alone; a line marks the best of them"
        + (", another the LightFM peer given the same item features" if peer is not None else "")
        + f". {missing:,} of {_n(test)} test items miss at least one source"
    )
    if missing:
        return text + " of the fullest row; each is scored from the sources it has, their weights renormalised."
    return text + ": every row scores every test item from all of its sources."
