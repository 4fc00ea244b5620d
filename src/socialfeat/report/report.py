"""``report``: one self-contained HTML file that shows what a run learned, readable in a minute — the headline
comparison, the data, the factorization, training curves, the evaluation, the hybrid cold start (what an item's
text, tags and numeric columns add to its image), nearest-neighbour and cluster galleries, and the configuration
and versions that produced it.

Each section reads only its own stage's outputs; a section whose inputs are missing says which command writes
them instead of failing the whole report. No external files or URLs: CSS inline, charts and thumbnails as data
URIs, every piece of user data escaped by the template engine.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import pyarrow as pa
from markupsafe import Markup, escape

from socialfeat import __version__
from socialfeat.artifacts import ingest_command, read_json
from socialfeat.atomic import claim_file, write_text
from socialfeat.config import Config, dump_config
from socialfeat.errors import UserError
from socialfeat.freshness import check_current
from socialfeat.report import sections
from socialfeat.report.fresh import fresh_section
from socialfeat.report.gallery import (
    Missing,
    Thumbnails,
    cluster_gallery,
    feature_columns,
    neighbour_gallery,
    strip_size,
)
from socialfeat.report.hybrid import hybrid_section
from socialfeat.runlock import inside, writes_run

log = logging.getLogger(__name__)

GENERATOR = '<meta name="generator" content="socialfeat">'
STAGES = ("dataset", "factors", "targets", "model", "features", "eval")
COLUMN_NAMES = {"features": "pooled", "head_factors": "factors head", "head_factor_clusters": "clusters head"}
TITLES = {
    "summary": "Summary",
    "dataset": "Data set",
    "factorization": "Factorization",
    "training": "Training",
    "evaluation": "Evaluation",
    "hybrid": "Hybrid cold start",
    "fresh": "Fresh content",
    "transfer": "Transfer",
    "neighbours": "Nearest neighbours",
    "clusters": "Clusters",
    "config": "Configuration",
}


@writes_run(lambda a: a["run"] if inside(a["out"], a["run"]) else None)
def report(config: Config, run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write one self-contained HTML report of a run, readable in a minute, atomically.

    Args:
        config: The run's configuration; reads ``report``.
        run: The run folder, holding at least one stage's output.
        out: The ``.html`` file to write; default ``run/report.html``. Only an earlier report is replaced.

    Returns:
        The report's path.

    Raises:
        UserError: No run folder, no stage output, a stale evaluation, or an ``out`` that is not a report.
    """
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise UserError(str(run), "is a file; expected a run folder")
    if not run.is_dir():
        raise UserError(str(run), "no such run folder; run `socialfeat run` (or the stages one by one) first")
    if not any((run / stage).is_dir() for stage in STAGES):
        raise UserError(str(run), f"nothing to report: no stage output here; start with: {ingest_command(run)}")
    check_current(run, ["eval"])  # the evaluation and everything it was made from: no report of stale results
    target = Path(out) if out is not None else run / "report.html"
    claim_file(target, "report", suffixes=(".html", ".htm"), ours=is_report, flag="--out" if out is not None else None)
    html = render(build(config, run))
    write_text(target, html)
    return target


def is_report(path: Path) -> bool:
    """A report this package wrote (its generator tag, or the title every report has had), so ``--out`` may
    replace it; any other file at that path is the user's."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return GENERATOR.encode() in head or b"<title>socialfeat report" in head


def build(config: Config, run: Path) -> dict[str, Any]:
    """Everything the template shows, section by section."""
    thumbs = _LazyThumbnails(run, config)
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "summary": lambda: {**_glance(run), "eval": _part(lambda: sections.evaluation_summary(run))},
        "dataset": lambda: sections.dataset(run),
        "factorization": lambda: sections.factorization(run),
        "training": lambda: sections.training(run),
        "evaluation": lambda: sections.evaluation(run),
        "hybrid": lambda: hybrid_section(run),
        "fresh": lambda: fresh_section(run),
        "transfer": lambda: sections.transfer(run),
        "neighbours": lambda: _neighbours(config, run, thumbs),
        "clusters": lambda: {"clusterings": cluster_gallery(config, run, thumbs.get())},
        "config": lambda: config_section(config, run),
    }
    return {
        "run": str(run),
        "name": run.resolve().name,
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "version": __version__,
        "thumb": config.report.thumbnail,
        "strip": strip_size(config.report.thumbnail),
        "sections": [
            {"id": sid, "title": TITLES[sid], **_part(build_one, TITLES[sid])}
            for sid, build_one in builders.items()
            if sid != "fresh" or (run / "eval" / "fresh.json").is_file()  # a replay's result, only when one was run
        ],
    }


def _part(build_one: Callable[[], dict[str, Any]], title: str = "") -> dict[str, Any]:
    """A section's content, or ``missing`` saying why it is not there: a broken input never sinks the report. A
    damaged file is named, with the command that rewrites it (:mod:`socialfeat.artifacts`), in the warning and
    in the section's place."""
    try:
        return {"missing": None, **build_one()}
    except Missing as e:
        return {"missing": str(e)}
    except UserError as e:
        log.warning("report section %s skipped: %s", repr(title) if title else "", e)
        return {"missing": f"could not read its inputs ({e})"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException) as e:
        log.warning("report section %s skipped: %s: %s", repr(title) if title else "", type(e).__name__, e)
        return {"missing": f"could not read its inputs ({type(e).__name__}: {e})"}


class _LazyThumbnails:
    """The run's thumbnails, opened by the first gallery that needs them (inside its section's error handling)."""

    def __init__(self, run: Path, config: Config) -> None:
        self.run, self.config = run, config
        self.thumbs: Thumbnails | None = None

    def get(self) -> Thumbnails:
        if self.thumbs is None:
            if not (self.run / "dataset" / "items.parquet").is_file():
                raise Missing(f"no dataset/items.parquet (the images); run `{ingest_command(self.run)}`")
            self.thumbs = Thumbnails(self.run, self.config.report.thumbnail, self.config.train.max_pixels)
        return self.thumbs


def _neighbours(config: Config, run: Path, thumbs: _LazyThumbnails) -> dict[str, Any]:
    column, why = _learned_column(run)
    sources = [
        ("learned", column, f"learned ({COLUMN_NAMES.get(column, column)})"),
        ("imagenet", "features", "ImageNet"),
    ]
    return {**neighbour_gallery(config, run, thumbs.get(), sources), "why": why}


def _learned_column(run: Path) -> tuple[str, str]:
    """The learned feature column the gallery searches: the one whose evaluation showed the best retrieval lift,
    else the pooled features (comparable with the ImageNet row below it)."""
    columns = feature_columns(run, "learned")
    path = run / "eval" / "metrics.json"
    if path.is_file():
        try:
            rows = read_json(path).get("rows", [])
        except (UserError, AttributeError):  # the evaluation section names the damaged file
            rows = []
        scored = [
            r
            for r in rows
            if r.get("source") == "learned"
            and r.get("column") in columns
            and isinstance((r.get("retrieval") or {}).get("lift"), int | float)
        ]
        if scored:
            best = max(scored, key=lambda r: r["retrieval"]["lift"])
            return best["column"], f"the learned column with the best retrieval lift in the evaluation ({best['name']})"
    return "features", "the learned model's pooled features"


def _glance(run: Path) -> dict[str, Any]:
    """A few facts for the top of the report, from whichever stages have run."""
    facts: dict[str, str] = {}
    stats_path = run / "dataset" / "stats.json"
    if stats_path.is_file():
        a = _fact_source(stats_path).get("after", {})
        if {"users", "items", "interactions"} <= a.keys():
            facts["data"] = f"{a['users']:,} users, {a['items']:,} items, {a['interactions']:,} interactions"
    metrics_path = run / "factors" / "metrics.json"
    if metrics_path.is_file():
        items = _fact_source(metrics_path).get("items", {})
        cold = items.get("valid", 0) + items.get("test", 0)
        if items.get("train") is not None:
            facts["split"] = f"{items['train']:,} warm items to learn from, {cold:,} cold items held back as new images"
    model_path = run / "model" / "model.json"
    if model_path.is_file():
        meta = _fact_source(model_path)
        heads = ", ".join(meta.get("heads", {}))
        facts["model"] = f"{meta.get('backbone')} from {meta.get('init')} weights, heads: {heads}"
    live = _live_counts(run)
    if live is not None:
        facts["live"] = live
    return {"facts": facts}


def _live_counts(run: Path) -> str | None:
    """What the live store added since the batch run (``socialfeat add``/``log``/``remove``), in one line."""
    from socialfeat.live.store import LiveStore, store_path

    if not store_path(run).is_file():
        return None
    with LiveStore(run) as store:
        c = store.counts()
    return (
        f"{c['items']:,} items added, {c['removed']:,} removed and {c['events']:,} events from {c['users']:,} users "
        f"since the batch run (live store version {c['version']:,})"
    )


def _fact_source(path: Path) -> dict[str, Any]:
    """A JSON file the summary takes a fact from; a damaged one is named in a warning and gives no fact."""
    try:
        data = read_json(path)
    except UserError as e:
        log.warning("report summary: %s", e)
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------------------------------ config
def config_section(config: Config, run: Path) -> dict[str, Any]:
    """The newest stage's resolved config and every stage's provenance (versions, git sha, command)."""
    stages = []
    for stage in STAGES:
        for path, manifest in _manifests(run / stage):
            stages.append({"stage": manifest.get("stage", stage), "path": path, **manifest})
    stages.sort(key=lambda s: str(s.get("created", "")))
    newest = None
    for stage in STAGES[::-1]:
        path = run / stage / "config.yaml"
        if path.is_file() and (newest is None or path.stat().st_mtime > newest.stat().st_mtime):
            newest = path
    if newest is not None:
        yaml_text, source = newest.read_text(), f"{newest.parent.name}/config.yaml"
    else:
        yaml_text, source = dump_config(config), "this command's settings (no stage wrote a config.yaml)"
    rows = [
        [
            sections.cell(s["stage"]),
            sections.cell(str(s.get("created", "")).replace("T", " ")),
            sections.cell((s.get("git_sha") or "–")[:10]),
            {**sections.cell(" ".join(str(a) for a in s.get("command") or [])), "code": True},
        ]
        for s in stages
    ]
    provenance = sections.table(
        ["stage", "created", "git", "command"], rows, "What wrote each output of this run, oldest first."
    )
    return {"yaml": yaml_text, "source": source, "provenance": provenance, "versions": _versions(stages)}


def _manifests(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file, provenance) of a stage folder: manifest.json, or the provenance inside features/<source>.json."""
    found = []
    candidates = [folder / "manifest.json"] if (folder / "manifest.json").is_file() else sorted(folder.glob("*.json"))
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        prov = data if "versions" in data else data.get("provenance")
        if isinstance(prov, dict) and "versions" in prov:
            stage = prov.get("stage", folder.name)
            if folder.name == "features":
                stage = f"{stage} ({path.stem})"
            found.append((f"{folder.name}/{path.name}", {**prov, "stage": stage}))
    return found


def _versions(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Package versions of the newest stage; where an older stage used another version, which one."""
    if not stages:
        return sections.table(["package", "version", "earlier stages"], [], "No stage recorded its versions.")
    newest = stages[-1]["versions"]
    rows = []
    for pkg in dict.fromkeys(p for s in stages for p in s.get("versions", {})):
        others = sorted(
            {
                f"{s['versions'][pkg]} in {s['stage']}"
                for s in stages
                if s["versions"].get(pkg, newest.get(pkg)) != newest.get(pkg)
            }
        )
        rows.append(
            [
                sections.cell(pkg),
                sections.cell(newest.get(pkg, "–")),
                sections.cell("; ".join(others) if others else ""),
            ]
        )
    caption = f"Package versions of the newest stage ({stages[-1]['stage']}); a note where an earlier stage differed."
    return sections.table(["package", "version", "earlier stages"], rows, caption)


# ------------------------------------------------------------------------------------------------ rendering
_CODE = re.compile(r"`([^`]+)`")


def _with_code(text: Any) -> Markup:
    """Escape ``text`` and set `backticked` parts (the commands to run) in <code>."""
    return Markup(_CODE.sub(lambda m: f"<code>{m.group(1)}</code>", str(escape(text))))


def render(context: dict[str, Any]) -> str:
    """The HTML page: the package's Jinja template with autoescape on (titles and tags are user data)."""
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters["code"] = _with_code
    template = env.from_string(files("socialfeat.report").joinpath("template.html.j2").read_text(encoding="utf-8"))
    return template.render(**context)
