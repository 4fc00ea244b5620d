"""Output shared by several command modules (so that none imports another)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table


def _pm(p: dict[str, Any] | None) -> str:
    if not p or p.get("mean") is None:
        return "–"
    return f"{p['mean']:.3f}±{p['std']:.3f}"


def _mean(p: dict[str, Any] | None) -> str:
    return "–" if not p or p.get("mean") is None else f"{p['mean']:.3f}"


def transfer_table(result: dict[str, Any]) -> Table:
    """Source × (k-fold accuracy mean ± std, few-shot points), chance below: the seed papers' table."""
    s = result["settings"]
    shots = [str(n) for n in s["few_shot"]]
    classes = result["classes"]
    table = Table(
        title=f"transfer · {result['name']}: {result['images']['usable']:,} images, {len(classes)} classes of "
        f"'{result['label_column']}'",
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
        table.add_row(row["name"], _pm(row["kfold"]), *(_mean(few.get(n)) for n in shots))
    table.add_section()
    table.add_row("chance (majority class)", f"{result['chance']:.3f}", *[""] * len(shots), style="dim")
    return table


def content_table(m: dict[str, Any]) -> Table:
    """The content model's rows: each source alone, each pair, the full models, and the LightFM peer."""
    table = Table(
        title="cold-start AUC by item content (ridge per source, late fusion, weights on valid)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name, justify in (("sources", "left"), ("weights", "left"), ("valid AUC", "right"), ("test AUC", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in m["rows"]:
        weights = ", ".join(f"{b} {w:.2f}" for b, w in r["weights"].items() if w > 0)
        table.add_row(" + ".join(r["sources"]), weights, f"{r['valid_auc']:.4f}", f"{r['auc']:.4f}")
    peer = m.get("peer")
    if peer:
        auc = f"{peer['auc']:.4f}" if "auc" in peer else f"skipped: {peer.get('skipped')}"
        table.add_row(peer["name"], "", "", auc)
    return table
