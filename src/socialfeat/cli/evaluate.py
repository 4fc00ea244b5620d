"""Commands of the evaluate stage: cold-start and retrieval metrics, side by side per source, and the content
model's hybrid rows when the run has one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, err, limits, out, shown
from socialfeat.cli.tables import ci_text, fmt, hybrid_differences, hybrid_table
from socialfeat.config import load_config

commands = Commands()


def _scope(metrics: dict[str, Any]) -> str:
    """``AUC over 20,000 of 309,000 users, seed 0`` (or every user), and the users λ was chosen on."""
    split, sample = metrics["split"], metrics.get("sample")
    if not sample:
        return f"{split['users_evaluated']:,} users"
    text = sample["text"]
    if sample["valid_users"] < sample["valid_of"]:
        text += f" (λ chosen on {sample['valid_users']:,} of {sample['valid_of']:,})"
    return text


def results_table(metrics: dict[str, Any]) -> Table:
    """One row per source row (cold-start metrics with the AUC's 95% interval, retrieval lift, probe accuracies),
    references below."""
    k = metrics["k"]
    split = metrics["split"]
    probes = list(dict.fromkeys(name for row in metrics["rows"] for name in row.get("probes", {})))
    entries = [*metrics["rows"], *metrics["references"]]
    with_ci = any(e["coldstart"].get("auc_ci") for e in entries)
    resamples = (metrics.get("bootstrap") or {}).get("resamples")
    table = Table(
        title=f"cold start on {split['test']:,} new items; {_scope(metrics)}; ridge fit on {split['train']:,} warm "
        f"items, λ chosen on {split['valid']:,} valid cold items",
        title_justify="left",
        caption="lift: audience overlap of nearest neighbours ÷ that of random pairs"
        + (f"; 95% CI: paired bootstrap over the users and test items ({resamples:,} resamples)" if with_ci else "")
        + ("; probe columns: test accuracy with all training labels" if probes else ""),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("source", no_wrap=True)
    table.add_column("dim", justify="right")
    table.add_column("AUC", justify="right")
    if with_ci:
        table.add_column("95% CI", justify="right", no_wrap=True)
    for name in (f"recall@{k}", f"NDCG@{k}", "lift"):
        table.add_column(name, justify="right")
    for name in probes:
        table.add_column(name, justify="right")
    for row in metrics["rows"]:
        c, r = row["coldstart"], row.get("retrieval", {})
        accs = [fmt(row.get("probes", {}).get(name, {}).get("all"), 3) for name in probes]
        table.add_row(
            shown(row["name"]),
            f"{row['dim']:,}",
            fmt(c["auc"]),
            *([ci_text(c.get("auc_ci"))] if with_ci else []),
            fmt(c[f"recall@{k}"]),
            fmt(c[f"ndcg@{k}"]),
            fmt(r.get("lift"), 2),
            *accs,
        )
    if probes:  # chance per probe, from the first row that has it
        chance = [
            next((fmt(row["probes"][n]["chance"], 3) for row in metrics["rows"] if n in row.get("probes", {})), "–")
            for n in probes
        ]
        table.add_row("chance (majority class)", *[""] * (5 + int(with_ci)), *chance, style="dim")
    table.add_section()
    for ref in metrics["references"]:
        c = ref["coldstart"]
        table.add_row(
            shown(ref["name"]),
            "",
            fmt(c["auc"]),
            *([ci_text(c.get("auc_ci"))] if with_ci else []),
            fmt(c[f"recall@{k}"]),
            fmt(c[f"ndcg@{k}"]),
            "",
            *[""] * len(probes),
        )
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
    k: Annotated[
        int | None, typer.Option("-k", "--k", help="Cut-off of recall@k and NDCG@k [20].", **limits("evaluate.k"))
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (query sample, probe splits, random scores).", **limits("seed"))
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Score every feature source on the cold items: cold-start audience prediction (AUC, recall, NDCG),
    behavioural retrieval (audience overlap of nearest neighbours) and linear probes on known labels."""
    from socialfeat.evaluate.stage import evaluate as run_evaluate
    from socialfeat.measures.bootstrap import describe

    flags = config_flags(seed=("--seed", seed), evaluate__labels=("--labels", labels), evaluate__k=("-k", k))
    cfg = load_config(config, set_ or [], flags)
    with err.status("evaluating…") as status:
        result = run_evaluate(cfg, run, sources=source, step=lambda msg: status.update(f"{shown(msg)}…"))
    out.print(results_table(result.metrics))
    for entry in result.metrics.get("differences", []):
        out.print(shown(describe(entry)), highlight=False, soft_wrap=True)
    hybrid = result.metrics.get("content")
    if hybrid:
        out.print(hybrid_table(hybrid))
        for line in hybrid_differences(hybrid):
            out.print(shown(line), highlight=False, soft_wrap=True)
    for note in result.metrics["notes"]:
        out.print(f"note: {shown(note)}", highlight=False, soft_wrap=True)
    for note in (hybrid or {}).get("notes", []):
        out.print(f"note (content model): {shown(note)}", highlight=False, soft_wrap=True)
    if (hybrid or {}).get("intervals"):
        out.print(f"note (content model): {shown(hybrid['intervals'])}", highlight=False, soft_wrap=True)
    out.print(f"wrote {shown(result.out)} in {result.metrics['seconds']:.1f} s", highlight=False)
