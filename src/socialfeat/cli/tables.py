"""Output shared by several command modules (so that none imports another)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from socialfeat.cli.options import shown


def _pm(p: dict[str, Any] | None) -> str:
    if not p or p.get("mean") is None:
        return "–"
    return f"{p['mean']:.3f}±{p['std']:.3f}"


def fmt(value: Any, digits: int = 3) -> str:
    """A metric with ``digits`` decimals, "–" when there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


def ci_text(ci: Any, digits: int = 3) -> str:
    """``[0.641, 0.668]``: a 95% interval, "–" when there is none."""
    if not _is_ci(ci):
        return "–"
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _is_ci(ci: Any) -> bool:
    return isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)


def _mean(p: dict[str, Any] | None) -> str:
    return "–" if not p or p.get("mean") is None else f"{p['mean']:.3f}"


def transfer_table(result: dict[str, Any]) -> Table:
    """Source × (k-fold accuracy mean ± std, few-shot points), chance below: the seed papers' table."""
    s = result["settings"]
    shots = [str(n) for n in s["few_shot"]]
    classes = result["classes"]
    table = Table(
        title=f"transfer · {shown(result['name'])}: {result['images']['usable']:,} images, {len(classes)} classes "
        f"of '{shown(result['label_column'])}'",
        title_justify="left",
        caption=f"linear probe on L2-normalised features: {s['folds']}-fold accuracy mean ± std (C by "
        f"{s['inner_folds']}-fold inner CV); n/class: mean accuracy with n labels per class, {s['draws']} draws",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("features", no_wrap=True)
    table.add_column(f"{s['folds']}-fold", justify="right", no_wrap=True)
    for k, n in enumerate(shots):
        table.add_column(f"{n}/class" if k == 0 else n, justify="right", no_wrap=True)
    for row in result["rows"]:
        few = row.get("few_shot", {})
        table.add_row(shown(row["name"]), _pm(row["kfold"]), *(_mean(few.get(n)) for n in shots))
    table.add_section()
    table.add_row("chance (majority class)", f"{result['chance']:.3f}", *[""] * len(shots), style="dim")
    return table


def _weight(w: float) -> str:
    """``.75``, ``1``, ``0``: a fusion weight in as few characters as it needs."""
    text = f"{w:.2f}".rstrip("0").rstrip(".")
    return text.removeprefix("0") if text not in ("0", "") else "0"


def sources_with_weights(row: dict[str, Any]) -> str:
    """``imagenet .25 + text 0 + tags .75``: each source of a row with the fusion weight chosen on valid (0: fused
    to no gain); a single source, or a row without weights (one joint fit), just names its sources."""
    weights = row.get("weights")
    sources = [str(s) for s in row["sources"]]
    if len(sources) == 1 or not isinstance(weights, dict):
        return " + ".join(sources)
    return " + ".join(f"{s} {_weight(weights[s])}" if isinstance(weights.get(s), int | float) else s for s in sources)


def _fit(row: dict[str, Any]) -> str:
    """What ``evaluate`` named the row beyond its sources (``joint`` in ``learned + tags · joint``), else ""."""
    joined, name = " + ".join(row["sources"]), str(row.get("name") or "")
    return name.removeprefix(joined).removeprefix(" · ") if name != joined else ""


def _hybrid_scope(section: dict[str, Any]) -> str:
    """``AUC over 20,000 of 309,000 users, seed 0 (choices on 5,000 of 29,000)``: the users the content rows were
    scored on (evaluate's sample); ``× N users`` for a content model written before it stated one."""
    sample = section.get("sample")
    if not isinstance(sample, dict) or not sample.get("text"):
        users = max((r.get("users") or 0 for r in section["rows"]), default=0)
        return f" × {users:,} users"
    text = f"; {sample['text']}"
    valid, of = sample.get("valid_users"), sample.get("valid_of")
    if isinstance(valid, int) and isinstance(of, int) and valid < of:
        text += f" (λ and weights chosen on {valid:,} of {of:,})"
    return text


def hybrid_differences(section: dict[str, Any]) -> list[str]:
    """One line per difference the content rows' headline states, with its interval and whether it contains 0."""
    from socialfeat.measures.bootstrap import describe

    entries = section.get("differences") or []
    return [describe(d) for d in entries if isinstance(d, dict) and isinstance(d.get("diff"), int | float)]


def hybrid_table(section: dict[str, Any]) -> Table:
    """The content model's rows: each source alone, each pair, all together (best test AUC first within each), with
    the fusion weights, each test AUC's 95% interval and the test items that lack one of the row's sources; the
    LightFM peer below."""
    k, split = section.get("k", 20), section.get("split", {})
    with_ci = any(_is_ci(r.get("auc_ci")) for r in section["rows"])
    caption = "late fusion: each source's weight, chosen on valid; missing: test items lacking a source of the row "
    caption += "(scored from the others)"
    if with_ci:
        resamples = (section.get("bootstrap") or {}).get("resamples")
        caption += "; 95% CI: paired bootstrap over the users and test items" + (
            f" ({resamples:,} resamples)" if resamples else ""
        )
    table = Table(
        title=f"hybrid cold start on {split.get('test', 0):,} new items{_hybrid_scope(section)}: the content "
        "model's sources alone, in pairs and together",
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    fits = {id(r): _fit(r) for r in section["rows"]}
    table.add_column("sources (fusion weights)", min_width=32 if not any(fits.values()) else 26, max_width=44)
    if any(fits.values()):  # the content stage fit some sources two ways (late fusion, joint): say which row is which
        table.add_column("fit")
    for name in (
        "valid\nAUC",
        "test\nAUC",
        *(["95% CI"] if with_ci else []),
        f"recall\n@{k}",
        f"NDCG\n@{k}",
        "missing",
    ):
        table.add_column(name, justify="right", no_wrap=name == "95% CI")
    for group in ("single", "pair", "all"):
        rows = sorted((r for r in section["rows"] if r.get("group") == group), key=lambda r: -r["auc"])
        for r in rows:
            missing = r.get("test_items_missing_a_source")
            table.add_row(
                shown(sources_with_weights(r)),
                *([shown(fits[id(r)])] if any(fits.values()) else []),
                fmt(r.get("valid_auc")),
                fmt(r["auc"]),
                *([ci_text(r.get("auc_ci"))] if with_ci else []),
                fmt(r.get(f"recall@{k}")),
                fmt(r.get(f"ndcg@{k}")),
                f"{missing:,}" if isinstance(missing, int) else "–",
            )
        if rows:
            table.add_section()
    peer = section.get("peer")
    if peer:
        name = shown(peer.get("name") or "peer")
        if isinstance(peer.get("auc"), int | float):
            metrics = [fmt(peer["auc"]), *([ci_text(peer.get("auc_ci"))] if with_ci else [])]
            metrics += [fmt(peer.get(f"recall@{k}")), fmt(peer.get(f"ndcg@{k}"))]
            table.add_row(name, *[""] * (len(table.columns) - len(metrics) - 2), *metrics, "", style="dim")
        else:
            table.add_row(f"{name}: skipped", *[""] * (len(table.columns) - 1), style="dim")
    return table
