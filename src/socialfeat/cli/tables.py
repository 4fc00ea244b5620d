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
