"""What each numeric section of the report shows, as plain data for the template: tables (cells already formatted,
the best value per metric column marked) and charts (PNG data URIs). A section whose inputs are missing raises
``Missing`` with the command that writes them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from socialfeat import artifacts
from socialfeat.report import plots
from socialfeat.report.gallery import Missing

SOURCE_COLORS = {  # shades per source, so several variants of one source stay recognisable as one family
    "learned": ("#3b6ea5", "#6d9bd0", "#a3c3e6", "#23476f"),
    "imagenet": ("#d1803a", "#e9ad75", "#9c5a1f"),
    "random": ("#8c8c8c", "#b5b5b5", "#5e5e5e"),
    "metadata": ("#5a9e6f", "#8cc49d", "#3a6e4a"),
    "meta-class": ("#8e5ea2", "#b48cc6", "#633f73"),
}
SPLIT_NAMES = {"train": "warm items", "valid": "cold validation items", "test": "cold test items"}
SOURCE_LABELS = {
    "learned": "learned",
    "imagenet": "ImageNet",
    "random": "random",
    "metadata": "metadata",
    "meta-class": "meta-class",
}


# ------------------------------------------------------------------------------------------------ tables
def cell(value: Any, fmt: str = "{:.4f}") -> dict[str, Any]:
    """A table cell: numbers right-aligned and formatted, ``None``/NaN shown as a dash."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return {"text": "–" if value is None else str(value), "num": False, "value": None}
    if isinstance(value, float) and math.isnan(value):
        return {"text": "–", "num": True, "value": None}
    return {"text": fmt.format(value), "num": True, "value": value}


def table(head: list[str], rows: list[list[dict[str, Any]]], caption: str, best: dict[int, str] | None = None):
    """A table for the template; ``best`` maps a column index to "max" or "min": those cells are set in bold.

    Rows whose first cell has ``reference`` set (baselines shown for scale) are not candidates for best.
    """
    for col, direction in (best or {}).items():
        values = [r[col]["value"] for r in rows if r[col]["value"] is not None and not r[0].get("reference")]
        if not values:
            continue
        target = max(values) if direction == "max" else min(values)
        for r in rows:
            if r[col]["value"] == target and not r[0].get("reference"):
                r[col]["best"] = True
    numeric = [any(r[i]["num"] for r in rows) for i in range(len(head))]
    return {"head": head, "numeric": numeric, "rows": rows, "caption": caption}


def _count(n: Any, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}" if isinstance(n, int) else f"? {noun}s"


def read_json(path: Path, command: str) -> Any:
    """A stage's JSON output: Missing (naming ``command``) when absent; a damaged file is a UserError naming it and
    its rerun, which the report shows in the section's place."""
    if not path.is_file():
        raise Missing(f"no {path.parent.name}/{path.name}; run `{command}`")
    return artifacts.read_json(path)


# ------------------------------------------------------------------------------------------------ dataset
def dataset(run: Path) -> dict[str, Any]:
    """The data set before and after popularity filtering (the seed paper's table 1), and what was dropped."""
    stats = read_json(run / "dataset" / "stats.json", artifacts.ingest_command(run))
    before, after = stats["before"], stats["after"]
    rows = []

    def row(name: str, b: float, a: float, fmt: str = "{:,}", kept: bool = True) -> None:
        share = cell(a / b, "{:.1%}") if kept and b else cell(None)
        rows.append([{**cell(name), "indent": name.startswith("  ")}, cell(b, fmt), cell(a, fmt), share])

    row("users", before["users"], after["users"])
    row("items", before["items"], after["items"])
    row("interactions", before["interactions"], after["interactions"])
    for event, n in before.get("events", {}).items():
        row(f"  {event}", n, after.get("events", {}).get(event, 0))
    row("user–item pairs", before["pairs"], after["pairs"])
    row("density", before["density"], after["density"], "{:.3%}", kept=False)
    filt = stats.get("filter", {})
    caption = (
        f"Users and items with too few interactions are removed (users < {filt.get('min_user_interactions', '?')}, "
        f"items < {filt.get('min_item_interactions', '?')}), repeatedly until none is left "
        f"({_count(filt.get('rounds'), 'round')}); 'kept' is after ÷ before."
    )
    d = stats.get("dropped", {})
    drops = [
        (d.get("items_missing_image", 0), "items without an image file"),
        (d.get("items_not_in_items_file", 0), "items missing from the items table"),
        (d.get("top_users", 0), "most active users (likely bots or shared accounts)"),
        (d.get("top_items", 0), "most popular items"),
        (d.get("low_users", 0), "users with too few interactions"),
        (d.get("low_items", 0), "items with too few users"),
    ]
    return {
        "table": table(["", "before filtering", "after filtering", "kept"], rows, caption),
        "dropped": [f"{n:,} {what}" for n, what in drops if n],
        "weights": stats.get("event_weights", {}),
    }


# ------------------------------------------------------------------------------------------------ factorization
RANKING = (("recall", "recall"), ("precision", "precision"), ("ndcg", "NDCG"), ("map", "MAP"))
SOURCES = ("model", "popularity", "random")


def factorization(run: Path) -> dict[str, Any]:
    """Held-out ranking of the ALS model against popularity and random, the cold split, and the fit settings."""
    m = read_json(run / "factors" / "metrics.json", f"socialfeat factorize {run}")
    items = m.get("items", {})
    facts = {
        "warm items (trained on)": items.get("train"),
        "cold items, validation": items.get("valid"),
        "cold items, test": items.get("test"),
        "interactions with warm items": m.get("pairs", {}).get("warm"),
        "interactions with cold items (hidden)": m.get("pairs", {}).get("cold"),
    }
    fit = m.get("fit_seconds")
    params = {**m.get("params", {}), "backend": m.get("backend"), "fit": f"{fit:.1f} s" if fit is not None else None}
    out: dict[str, Any] = {
        "facts": {k: f"{v:,}" for k, v in facts.items() if isinstance(v, int)},
        "params": {k: (f"{v:g}" if isinstance(v, float) else str(v)) for k, v in params.items() if v is not None},
        "heldout": None,
        "sweep": None,
    }
    h = m.get("heldout")
    if h:
        k = h.get("k", 20)
        head = ["", *(f"{name}@{k}" for _, name in RANKING), "AUC", "catalogue coverage"]
        rows = []
        for source in SOURCES:
            if source in h:
                r = h[source]
                name = "ALS model" if source == "model" else source
                rows.append(
                    [
                        cell(name),
                        *(cell(r.get(key)) for key, _ in RANKING),
                        cell(r.get("auc")),
                        cell(r.get("coverage"), "{:.1%}"),
                    ]
                )
        users = h.get("model", {}).get("users")
        caption = (
            f"Each user's last interaction{'s' if h.get('held_out_pairs', 0) > (users or 0) else ''} was hidden, the "
            f"model refitted without it, and every unseen item ranked: how often the hidden one lands in the top {k} "
            f"({h.get('held_out_pairs', 0):,} hidden pairs, {users or 0:,} users). Coverage: share of the catalogue "
            "that appears in anyone's top list."
        )
        out["heldout"] = table(head, rows, caption, best={i: "max" for i in range(1, len(head))})
        shown = ("recall", "ndcg", "map", "auc")  # precision@k tells the story of recall@k again
        series = {("ALS model" if s == "model" else s): [h[s].get(key) for key in shown] for s in h if s in SOURCES}
        groups = [f"{dict(RANKING).get(key, 'AUC')}@{k}" if key != "auc" else "AUC" for key in shown]
        out["chart"] = plots.grouped_bars(groups, series, "score (higher is better)", ylim=(0, 1))
    if m.get("sweep"):
        out["sweep"] = _sweep_table(m["sweep"], m.get("sweep_best", {}), h.get("k", 20) if h else 20)
    return out


def _sweep_table(rows: list[dict[str, Any]], best: dict[str, float], k: int) -> dict[str, Any]:
    metrics = {"recall", "precision", "ndcg", "map", "auc", "coverage", "users", "seconds"}
    params = [key for key in rows[0] if key not in metrics]
    body = []
    for r in rows:
        chosen = all(r.get(p) == v for p, v in best.items())
        body.append(
            [
                {**cell(" ".join(f"{p}={r[p]:g}" for p in params)), "chosen": chosen},
                cell(r.get("recall")),
                cell(r.get("ndcg")),
                cell(r.get("auc")),
                cell(r.get("seconds"), "{:.1f}"),
            ]
        )
    caption = (
        "Settings tried on a validation hold-out carved from the training data; the best NDCG was kept (marked ◀)."
    )
    return table(["setting", f"recall@{k}", f"NDCG@{k}", "AUC", "seconds"], body, caption, best={1: "max", 2: "max"})


# ------------------------------------------------------------------------------------------------ training
def training(run: Path) -> dict[str, Any]:
    """Loss curves per target, validation metrics per epoch, and what was trained."""
    model_dir = run / "model"
    meta_path, metrics_path = model_dir / "model.json", model_dir / "metrics.jsonl"
    if not meta_path.is_file() and not metrics_path.is_file():
        raise Missing(f"no model/; run `socialfeat train {run}`")
    out: dict[str, Any] = {"model": None, "chart": None, "epochs": None, "no_win": None}
    if meta_path.is_file():
        meta = artifacts.read_json(meta_path)
        p = meta.get("parameters", {})
        heads = meta.get("heads", {})
        facts = {
            "backbone": meta.get("backbone"),
            "initial weights": meta.get("init"),
            "input size": f"{meta['image_size']} px" if "image_size" in meta else None,
            "heads": ", ".join(f"{t} ({d})" for t, d in heads.items()) or None,
            "fine-tuned": meta.get("finetune"),
            "regression loss": meta.get("regression_loss"),
            "trainable parameters": f"{p['trainable']:,} of {p['total']:,}" if "trainable" in p else None,
            "images": f"{meta['train']:,} training, {meta['valid']:,} validation" if "train" in meta else None,
            "steps": f"{meta['steps']:,} on {meta.get('world', 1)} × {meta.get('device', '?')}"
            if "steps" in meta
            else None,
            "epoch kept": _kept(meta),
        }
        out["model"] = {k: str(v) for k, v in facts.items() if v is not None}
        if meta.get("selection") == "valid-auc" and meta.get("selected_epoch") == 0:
            out["no_win"] = (
                f"No epoch beat the untrained start on valid cold-start AUC ({meta['valid_cold_auc_start']:.4f}): "
                "the model kept is the starting network, so training bought nothing here."
            )
    if metrics_path.is_file():
        epochs = artifacts.read_json_lines(metrics_path)
        if epochs:
            out.update(_curves(epochs))
    return out


def _kept(meta: dict[str, Any]) -> str | None:
    """Which epoch became the model, and why."""
    if meta.get("selection") == "valid-auc":
        return (
            f"{meta['selected_epoch']} (0 = the untrained start), by cold-start AUC on the valid cold items: "
            f"{meta['valid_cold_auc']:.4f} vs {meta['valid_cold_auc_start']:.4f} at the start "
            f"(ridge on {meta['fit_items']:,} warm items)"
        )
    if meta.get("selection") == "last":
        return f"the last ({meta['selected_epoch']})"
    return None


def _curves(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = list(dict.fromkeys(k for e in epochs for k in e if k.startswith(("train_", "valid_"))))
    train_keys = [k for k in keys if k.startswith("train_")]
    valid_keys = [k for k in keys if k.startswith("valid_")]

    def series(key: str) -> list[tuple[float, float]]:
        return [(e["epoch"] + 1, e[key]) for e in epochs if isinstance(e.get(key), int | float)]

    panels = [("training loss (lower is better)", {_label(k): series(k) for k in train_keys})]
    if valid_keys:
        panels.append(("validation (higher is better)", {_label(k): series(k) for k in valid_keys}))
    head = ["epoch", *(_label(k) for k in keys), "images/s", "seconds"]
    rows = [
        [cell(e["epoch"] + 1, "{:d}"), *(cell(e.get(k)) for k in keys), cell(e.get("images_per_s"), "{:,.0f}")]
        + [cell(e.get("seconds"), "{:,.1f}")]
        for e in epochs
    ]
    best = {1 + i: ("min" if k.startswith("train_") else "max") for i, k in enumerate(keys)}
    caption = "Per epoch: the training loss of each head (and their weighted sum), and on held-out warm items the "
    caption += "cosine between predicted and true factors and the top-1 accuracy on pseudo-classes; cold auc is the "
    caption += "selection score (cold-start AUC on the valid cold items), epoch 0 being the untrained start."
    return {"chart": plots.line_panels(panels, "epoch"), "epochs": table(head, rows, caption, best)}


def _label(key: str) -> str:
    """``valid_factor_clusters_top1`` → ``factor clusters top1``; ``train_loss`` → ``total``."""
    rest = key.partition("_")[2]
    return "total" if rest == "loss" else rest.replace("_", " ").replace("-", " ")


# ------------------------------------------------------------------------------------------------ evaluation
def row_colors(rows: list[dict[str, Any]]) -> list[str]:
    """One colour per evaluation row: its source's hue, a new shade for each further variant of that source."""
    used: dict[str, int] = {}
    colors = []
    for r in rows:
        source = str(r.get("source"))
        shades = SOURCE_COLORS.get(source, ("#7f6aa8", "#a796c8", "#5b4a7e"))
        colors.append(shades[used.get(source, 0) % len(shades)])
        used[source] = used.get(source, 0) + 1
    return colors


def _coldstart(row: dict[str, Any]) -> dict[str, Any]:
    return row.get("coldstart") or {}


def _pick(rows: list[dict[str, Any]], source: str) -> dict[str, Any] | None:
    """The row of ``source`` to quote: best validation AUC (model selection without peeking at the test items),
    else best test AUC."""
    mine = [r for r in rows if r.get("source") == source and _coldstart(r).get("auc") is not None]
    if not mine:
        return None
    key = "valid_auc" if all(_coldstart(r).get("valid_auc") is not None for r in mine) else "auc"
    return max(mine, key=lambda r: _coldstart(r)[key])


def _signed(value: float) -> str:
    return f"{value:+.4f}".replace("-", "−")


def difference_text(entry: dict[str, Any]) -> str | None:
    """``learned − ImageNet: +0.0057 (95% interval −0.0021 to +0.0135), which contains 0: not distinguishable from
    noise``; None for an entry that is not a difference."""
    if not isinstance(entry, dict) or not isinstance(entry.get("diff"), int | float):
        return None
    label = str(entry.get("label") or f"{entry.get('a')} − {entry.get('b')}")
    text = f"{label}: {_signed(entry['diff'])}"
    ci = entry.get("ci")
    if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)):
        return text + " (no interval: evaluate.bootstrap = 0)"
    text += f" (95% interval {_signed(ci[0])} to {_signed(ci[1])})"
    if entry.get("contains_zero"):
        return text + ", which contains 0: not distinguishable from noise"
    better = entry.get("a") if entry["diff"] > 0 else entry.get("b")
    return text + f", which excludes 0: {better} is better beyond the bootstrap's noise"


def _differences(m: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in m.get("differences") or [] if difference_text(d)]


def evaluation_summary(run: Path) -> dict[str, Any]:
    """The headline: learned against ImageNet features on cold-start AUC, and one line per feature source."""
    m = read_json(run / "eval" / "metrics.json", f"socialfeat evaluate {run}")
    rows = m.get("rows", [])
    k = m.get("k", 20)
    sources = list(dict.fromkeys(r.get("source", "?") for r in rows))
    picked = [(s, r) for s in sources if (r := _pick(rows, s)) is not None]
    if not picked:
        raise Missing(f"eval/metrics.json has no cold-start results; run `socialfeat evaluate {run}`")
    learned, imagenet = _pick(rows, "learned"), _pick(rows, "imagenet")
    if learned and imagenet:
        a, b = _coldstart(learned)["auc"], _coldstart(imagenet)["auc"]
        headline = f"Learned features: cold-start AUC {a:.2f} vs {b:.2f} for ImageNet features"
        if f"{a:.2f}" == f"{b:.2f}":
            headline = f"Learned features: cold-start AUC {a:.3f} vs {b:.3f} for ImageNet features"
        pair = (learned.get("name"), imagenet.get("name"))
        said = next((d for d in _differences(m) if (d.get("a"), d.get("b")) == pair), None)
        if said is not None and said.get("ci"):
            lo, hi = said["ci"]
            headline += f" (difference {_signed(said['diff'])}, 95% interval {_signed(lo)} to {_signed(hi)}"
            headline += ": not distinguishable from noise)" if said.get("contains_zero") else ")"
    else:
        s, r = max(picked, key=lambda sr: _coldstart(sr[1])["auc"])
        headline = f"Best cold-start AUC: {_coldstart(r)['auc']:.2f} with {SOURCE_LABELS.get(s, s)} features"
    body = []
    for s, r in picked:
        c = _coldstart(r)
        lift = (r.get("retrieval") or {}).get("lift")
        body.append(
            [
                cell(SOURCE_LABELS.get(s, s)),
                cell(r.get("name")),
                cell(c.get("auc")),
                cell(c.get(f"recall@{k}")),
                cell(c.get(f"ndcg@{k}")),
                cell(lift, "{:.2f}×"),
            ]
        )
    for ref in m.get("references", []):
        c = ref.get("coldstart") or {}
        body.append(
            [
                {**cell(ref.get("name")), "reference": True},
                cell(None),
                cell(c.get("auc")),
                cell(c.get(f"recall@{k}")),
                cell(c.get(f"ndcg@{k}")),
                cell(None),
            ]
        )
    caption = (
        "Recommending brand-new images (cold items nobody had engaged with during training) to the users who "
        "later engaged with them, from the image alone. One row per feature source (its best variant by "
        "validation AUC); references in italics are for scale. Retrieval lift: how much more a nearest "
        "neighbour's audience overlaps the query's than a random item's."
    )
    head = ["features", "variant", "cold-start AUC", f"recall@{k}", f"NDCG@{k}", "retrieval lift"]
    return {"headline": headline, "table": table(head, body, caption, best={2: "max", 3: "max", 4: "max", 5: "max"})}


def evaluation(run: Path) -> dict[str, Any]:
    """Every evaluated feature row side by side: cold start, retrieval, probes; plus their charts."""
    m = read_json(run / "eval" / "metrics.json", f"socialfeat evaluate {run}")
    rows, refs, k = m.get("rows", []), m.get("references", []), m.get("k", 20)
    if not rows:
        raise Missing(f"eval/metrics.json lists no feature rows; run `socialfeat evaluate {run}`")
    cold_lift = any("cold_lift" in (r.get("retrieval") or {}) for r in rows)
    with_ci = any(_interval(_coldstart(r).get("auc_ci")) for r in [*rows, *refs])
    body = []
    for r in rows:
        c, rt = _coldstart(r), r.get("retrieval") or {}
        line = [cell(r.get("name")), cell(r.get("mapping")), cell(r.get("dim"), "{:,}")]
        line += [cell(c.get("auc")), *([_ci_cell(c.get("auc_ci"))] if with_ci else [])]
        line += [cell(c.get(f"recall@{k}")), cell(c.get(f"ndcg@{k}"))]
        line += [cell(rt.get("overlap")), cell(rt.get("lift"), "{:.2f}×")]
        body.append(line + ([cell(rt.get("cold_lift"), "{:.2f}×")] if cold_lift else []))
    for ref in refs:
        c = ref.get("coldstart") or {}
        line = [{**cell(ref.get("name")), "reference": True}, cell(None), cell(None)]
        line += [cell(c.get("auc")), *([_ci_cell(c.get("auc_ci"))] if with_ci else [])]
        line += [cell(c.get(f"recall@{k}")), cell(c.get(f"ndcg@{k}"))]
        body.append(line + [cell(None)] * (3 if cold_lift else 2))
    split = m.get("split") or {}
    users = split.get("users_evaluated") or next(
        (_coldstart(r)["users"] for r in rows if _coldstart(r).get("users")), None
    )
    sample = m.get("sample") if isinstance(m.get("sample"), dict) else {}
    who = str(sample["text"]) if sample.get("text") else f"{users:,} users" if isinstance(users, int) else None
    items = [f"{split[key]:,} {name}" for key, name in SPLIT_NAMES.items() if isinstance(split.get(key), int)]
    scope = "; ".join([*([who] if who else []), *([", ".join(items)] if items else [])])
    caption = (
        "Cold start: a mapping from features to user factors (fitted on warm items) scores each cold item for every "
        f"user; AUC, recall@{k} and NDCG@{k} of the users who really engaged with it"
        + (f" ({scope})" if scope else "")
        + ". Retrieval: audience overlap between an item and its nearest neighbours under these features, and its "
        "lift over random pairs"
        + (
            " (cold lift: cold queries among cold items only, where no interaction shaped the factors)"
            if cold_lift
            else ""
        )
        + ". Best value per column in bold; references (italics) excluded."
        + (
            f" 95% interval: paired bootstrap over the same users and test items ({_resamples(m)} resamples), percentiles."
            if with_ci
            else ""
        )
    )
    head = ["features", "mapping", "dim", "cold-start AUC", *(["95% interval"] if with_ci else [])]
    head += [f"recall@{k}", f"NDCG@{k}", "audience overlap", "lift"]
    head += ["cold lift"] if cold_lift else []
    notes = [str(n) for n in m.get("notes", [])]
    notes += [f"{ref['name']}: {ref['note']}" for ref in refs if ref.get("note") and ref.get("name")]
    differences = [difference_text(d) for d in _differences(m)]
    out: dict[str, Any] = {
        "table": table(head, body, caption, best={i: "max" for i in range(3, len(head))}),
        "differences": (
            "Differences the headline states, paired over the same users: " + "; ".join(differences) + "."
            if differences
            else None
        ),
        "notes": notes,
        "auc_chart": None,
        "probes": None,
        "probe_chart": None,
    }
    scored = [r for r in rows if _coldstart(r).get("auc") is not None]
    if scored:
        refs_auc = {
            str(ref.get("name")): (ref.get("coldstart") or {}).get("auc")
            for ref in refs
            if (ref.get("coldstart") or {}).get("auc") is not None
        }
        aucs = [_coldstart(r)["auc"] for r in scored]
        low = min([*aucs, *refs_auc.values(), 0.5])
        out["auc_chart"] = plots.horizontal_bars(
            [str(r.get("name")) for r in scored],
            aucs,
            "cold-start AUC (0.5 = chance)",
            colors=row_colors(scored),
            vlines=refs_auc,
            xlim=(max(0.0, low - 0.05), min(1.0, max([*aucs, *refs_auc.values()]) + 0.06)),
        )
    out.update(_probes(rows))
    return out


def _interval(ci: Any) -> bool:
    return isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci)


def _ci_cell(ci: Any) -> dict[str, Any]:
    """``0.641–0.668``: a row's 95% interval (text: never a best-value candidate)."""
    return cell(f"{ci[0]:.4f}–{ci[1]:.4f}" if _interval(ci) else None)


def _resamples(m: dict[str, Any]) -> str:
    n = (m.get("bootstrap") or {}).get("resamples")
    return f"{n:,}" if isinstance(n, int) else "?"


def _probes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Linear-probe accuracy per label (all labels / a few per class) of every row, with chance for scale."""
    labels: dict[str, dict[str, Any]] = {}
    for r in rows:
        for label, p in (r.get("probes") or {}).items():
            labels.setdefault(label, p)
    if not labels:
        return {}
    head = ["features"]
    for label, p in labels.items():
        chance = p.get("chance")
        suffix = f" (chance {chance:.2f})" if isinstance(chance, int | float) else ""
        head += [f"{label}{suffix}: all", f"{label}: few"]
    body = []
    with_probes = [r for r in rows if r.get("probes")]
    for r in with_probes:
        probes = r["probes"]
        line = [cell(r.get("name"))]
        for label in labels:
            p = probes.get(label) or {}
            line += [cell(p.get("all"), "{:.3f}"), cell(p.get("few"), "{:.3f}")]
        body.append(line)
    caption = (
        "Linear probes: how well a linear classifier on the features predicts known attributes of the images, "
        "trained on all labelled warm items ('all') or on a few per class ('few'), tested on other items."
    )
    chart = plots.grouped_bars(
        list(labels),
        {str(r.get("name")): [(r["probes"].get(label) or {}).get("all") for label in labels] for r in with_probes},
        "probe accuracy (all labels)",
        marks={"chance": [labels[label].get("chance") for label in labels]},
        ylim=(0, 1),
        colors=row_colors(with_probes),
    )
    return {"probes": table(head, body, caption, best={i: "max" for i in range(1, len(head))}), "probe_chart": chart}


# ------------------------------------------------------------------------------------------------ transfer
def _pm(p: dict[str, Any] | None) -> dict[str, Any]:
    """``0.912 ± 0.021`` (the value kept for bold-the-best), or a dash for a skipped point."""
    if not p or not isinstance(p.get("mean"), int | float):
        return cell(None)
    return {**cell(p["mean"], "{:.3f}"), "text": f"{p['mean']:.3f} ± {p.get('std', 0.0):.3f}"}


def transfer(run: Path) -> dict[str, Any]:
    """One table and one few-shot curve per labelled set of ``eval/transfer-*.json``: every feature source side by
    side on images the model never saw (the seed papers' transfer table)."""
    paths = sorted((run / "eval").glob("transfer-*.json"))
    if not paths:
        raise Missing(
            f"no eval/transfer-*.json; run `socialfeat transfer {run} --labels TABLE --image-root DIR` "
            "(or list transfer.sets in the config)"
        )
    out = []
    for path in paths:
        m = artifacts.read_json(path)
        shots = [str(n) for n in m.get("settings", {}).get("few_shot", [])]
        folds = m.get("settings", {}).get("folds", "k")
        rows = m.get("rows", [])
        body = []
        for r in rows:
            few = r.get("few_shot") or {}
            body.append(
                [cell(r.get("name")), cell(r.get("dim"), "{:,}"), _pm(r.get("kfold"))]
                + [_pm(few.get(n)) for n in shots]
            )
        chance = m.get("chance")
        body.append(
            [{**cell("chance (majority class)"), "reference": True}, cell(None), cell(chance, "{:.3f}")]
            + [cell(None)] * len(shots)
        )
        head = ["features", "dim", f"{folds}-fold accuracy", *(f"{n} per class" for n in shots)]
        s = m.get("settings", {})
        classes = m.get("classes", {})
        usable = (m.get("images") or {}).get("usable")
        caption = (
            f"{_count(usable, 'image')} of {len(classes)} classes ('{m.get('label_column')}' of {m.get('labels')}), "
            "none of them seen in training. A logistic regression on L2-normalised features: stratified "
            f"{folds}-fold accuracy (C chosen by {s.get('inner_folds', '?')}-fold inner cross-validation) and with n "
            f"labels per class ({s.get('draws', '?')} seeded draws, tested on the rest); mean ± std. Best in bold."
        )
        series = {
            str(r.get("name")): [
                (int(n), (r.get("few_shot") or {}).get(n, {}).get("mean"))
                for n in shots
                if isinstance((r.get("few_shot") or {}).get(n, {}).get("mean"), int | float)
            ]
            for r in rows
        }
        chart = plots.few_shot_curves(series, row_colors(rows), chance) if any(series.values()) else None
        notes = [str(n) for n in m.get("notes", [])]
        skipped = {n: p["skipped"] for r in rows[:1] for n, p in (r.get("few_shot") or {}).items() if "skipped" in p}
        notes += [f"{n} per class not measured: {why}" for n, why in skipped.items()]
        out.append(
            {
                "name": m.get("name", path.stem.removeprefix("transfer-")),
                "table": table(head, body, caption, best={i: "max" for i in range(2, len(head))}),
                "chart": chart,
                "notes": notes,
            }
        )
    return {"sets": out}
