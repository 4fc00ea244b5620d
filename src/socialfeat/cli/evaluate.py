"""Commands of the evaluate stage: cold-start and retrieval metrics, side by side per source, and the content
model's hybrid rows when the run has one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, err, out
from socialfeat.config import load_config

commands = Commands()


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def results_table(metrics: dict[str, Any]) -> Table:
    """One row per source row (cold-start metrics, retrieval lift, probe accuracies), references below."""
    k = metrics["k"]
    split = metrics["split"]
    probes = list(dict.fromkeys(name for row in metrics["rows"] for name in row.get("probes", {})))
    table = Table(
        title=f"cold start on {split['test']:,} new items × {split['users_evaluated']:,} users; "
        f"ridge fit on {split['train']:,} warm items, λ chosen on {split['valid']:,} valid cold items",
        title_justify="left",
        caption="lift: audience overlap of nearest neighbours ÷ that of random pairs"
        + ("; probe columns: test accuracy with all training labels" if probes else ""),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("source", no_wrap=True)
    table.add_column("dim", justify="right")
    for name in ("AUC", f"recall@{k}", f"NDCG@{k}", "lift"):
        table.add_column(name, justify="right")
    for name in probes:
        table.add_column(name, justify="right")
    for row in metrics["rows"]:
        c, r = row["coldstart"], row.get("retrieval", {})
        accs = [_fmt(row.get("probes", {}).get(name, {}).get("all"), 3) for name in probes]
        table.add_row(
            row["name"],
            f"{row['dim']:,}",
            _fmt(c["auc"]),
            _fmt(c[f"recall@{k}"]),
            _fmt(c[f"ndcg@{k}"]),
            _fmt(r.get("lift"), 2),
            *accs,
        )
    if probes:  # chance per probe, from the first row that has it
        chance = [
            next((_fmt(row["probes"][n]["chance"], 3) for row in metrics["rows"] if n in row.get("probes", {})), "–")
            for n in probes
        ]
        table.add_row("chance (majority class)", "", "", "", "", "", *chance, style="dim")
    table.add_section()
    for ref in metrics["references"]:
        c = ref["coldstart"]
        table.add_row(
            ref["name"], "", _fmt(c["auc"]), _fmt(c[f"recall@{k}"]), _fmt(c[f"ndcg@{k}"]), "", *[""] * len(probes)
        )
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


def hybrid_table(section: dict[str, Any]) -> Table:
    """The content model's rows: each source alone, each pair, all together (best test AUC first within each), with
    the fusion weights and the test items that lack one of the row's sources; the LightFM peer below."""
    k, split = section.get("k", 20), section.get("split", {})
    users = max((r.get("users") or 0 for r in section["rows"]), default=0)
    caption = "late fusion: each source's weight, chosen on valid; missing: test items lacking a source of the row "
    caption += "(scored from the others)"
    table = Table(
        title=f"hybrid cold start on {split.get('test', 0):,} new items × {users:,} users: the content model's "
        "sources alone, in pairs and together",
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
    for name in ("valid\nAUC", "test\nAUC", f"recall\n@{k}", f"NDCG\n@{k}", "missing"):
        table.add_column(name, justify="right")
    for group in ("single", "pair", "all"):
        rows = sorted((r for r in section["rows"] if r.get("group") == group), key=lambda r: -r["auc"])
        for r in rows:
            missing = r.get("test_items_missing_a_source")
            table.add_row(
                sources_with_weights(r),
                *([fits[id(r)]] if any(fits.values()) else []),
                _fmt(r.get("valid_auc")),
                _fmt(r["auc"]),
                _fmt(r.get(f"recall@{k}")),
                _fmt(r.get(f"ndcg@{k}")),
                f"{missing:,}" if isinstance(missing, int) else "–",
            )
        if rows:
            table.add_section()
    peer = section.get("peer")
    if peer:
        name = str(peer.get("name") or "peer")
        if isinstance(peer.get("auc"), int | float):
            metrics = [_fmt(peer["auc"]), _fmt(peer.get(f"recall@{k}")), _fmt(peer.get(f"ndcg@{k}"))]
            table.add_row(name, *[""] * (len(table.columns) - 5), *metrics, "", style="dim")
        else:
            table.add_row(f"{name}: skipped", *[""] * (len(table.columns) - 1), style="dim")
    return table


@commands()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder with factors/ and features/; eval/ is written here.")],
    labels: Annotated[
        Path | None, typer.Option(help="CSV item_id,label… for linear probes (e.g. the simulator's labels.csv).")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            help="Feature source to evaluate (repeatable): learned, imagenet, random, meta-class, metadata [all]."
        ),
    ] = None,
    k: Annotated[int | None, typer.Option("-k", "--k", help="Cut-off of recall@k and NDCG@k [20].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (query sample, probe splits, random scores).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Score every feature source on the cold items: cold-start audience prediction (AUC, recall, NDCG),
    behavioural retrieval (audience overlap of nearest neighbours) and linear probes on known labels."""
    from socialfeat.evaluate.stage import evaluate as run_evaluate

    flags = config_flags(seed=("--seed", seed), evaluate__labels=("--labels", labels), evaluate__k=("-k", k))
    cfg = load_config(config, set_ or [], flags)
    with err.status("evaluating…") as status:
        result = run_evaluate(cfg, run, sources=source, step=lambda msg: status.update(f"{msg}…"))
    out.print(results_table(result.metrics))
    hybrid = result.metrics.get("content")
    if hybrid:
        out.print(hybrid_table(hybrid))
    for note in result.metrics["notes"]:
        out.print(f"note: {note}", highlight=False, soft_wrap=True)
    for note in (hybrid or {}).get("notes", []):
        out.print(f"note (content model): {note}", highlight=False, soft_wrap=True)
    out.print(f"wrote {result.out} in {result.metrics['seconds']:.1f} s", highlight=False)
