"""What a run's stages write, and whether what a stage reads is current: one rule for ``run`` and for a stage
called by hand — nothing is used that is older than what it was made from (no input newer than its oldest output,
by the size and mtime stamps of :func:`fingerprint`).

A run holds *products*: ``dataset``, ``factors``, ``targets``, ``model``, ``meta-class``, ``features/<source>``,
``content`` and ``eval``. :func:`made_from` says which products each one is made from. ``run`` records the
stamps of what each stage wrote and reruns a stage whose inputs are newer (see :mod:`socialfeat.pipeline`); a stage
called by hand calls :func:`check_current` on the products it reads before any work, so it refuses to build on a
product older than what *that* was made from — a re-ingested ``dataset/`` under old ``factors/``, say — with one
line naming the stage to rerun (:func:`socialfeat.artifacts.rerun_command`: the command that rewrites just that
product, safe to run as printed). Only files are statted; a missing product is not stale (the stage's own
"no X; run Y first" names it). ``content/`` keeps its own rule (:func:`socialfeat.features.content_older_than`):
``evaluate`` and ``recommend`` leave a stale content model out with a note instead of refusing.

Stages import this module (it sits a floor below them, beside ``config``), and so does the pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from socialfeat.artifacts import check_intact, rerun_command
from socialfeat.config import Config
from socialfeat.errors import UserError

EMBED_SOURCES = ("learned", "imagenet", "random")  # what the pipeline's embed stage writes (+ meta-class)
SOURCES = (*EMBED_SOURCES, "meta-class")  # every image feature source
MODEL_PRODUCTS = {"learned": "model", "meta-class": "meta-class"}  # sources embedded by a model trained in the run
FEATURES = "features/"

# Products made from fixed others; features/<source> and eval are below (made_from).
_MADE_FROM: dict[str, tuple[str, ...]] = {
    "dataset": (),  # from the logs the user gives ingest: outside the run
    "factors": ("dataset",),
    "targets": ("factors", "dataset"),
    "model": ("targets", "factors", "dataset"),
    "meta-class": ("targets", "factors", "dataset"),
}
_SINCE = {  # what happened to a product that is newer than something made from it
    "dataset": "re-ingested since",
    "factors": "factorized again since",
    "targets": "rebuilt since",
    "model": "retrained since",
    "meta-class": "retrained since",
}


def feature_product(source: str) -> str:
    return f"{FEATURES}{source}"


def made_from(product: str) -> tuple[str, ...]:
    """The products ``product`` is made from: features from the dataset's images through the source's model (when
    the run trained it); the evaluation from factors and every source's features; the others as ``_MADE_FROM``."""
    if product.startswith(FEATURES):
        model = MODEL_PRODUCTS.get(product.removeprefix(FEATURES))
        return (model, "dataset") if model else ("dataset",)
    if product == "eval":
        return ("factors", "dataset", *(feature_product(s) for s in SOURCES))
    return _MADE_FROM.get(product, ())


def product_paths(run: Path, product: str) -> list[Path]:
    """The files and folders of a product (folders count with every file inside): a feature source's single file
    or its rank parts, with its summary; the evaluation's own files (``transfer`` writes beside them)."""
    run = Path(run)
    if product.startswith(FEATURES):
        source = product.removeprefix(FEATURES)
        base = run / "features"
        single = base / f"{source}.parquet"
        parts = [single] if single.is_file() else sorted(base.glob(f"{source}.part-*-of-*.parquet"))
        return [*(parts or [single]), base / f"{source}.json"]
    if product == "eval":
        return [run / "eval" / f for f in ("metrics.json", "manifest.json", "config.yaml")]
    return [run / product]


def fingerprint(run: Path, paths: list[Path]) -> dict[str, list[int]]:
    """``relative path → [bytes, mtime_ns]`` of every file of ``paths`` that exists."""
    found: dict[str, list[int]] = {}
    for path in paths:
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in members:
            try:
                st = p.stat()
            except OSError:
                continue
            found[os.path.relpath(p, run)] = [st.st_size, st.st_mtime_ns]
    return found


def newer_input(outputs: dict[str, list[int]], inputs: dict[str, list[int]]) -> str | None:
    """The first input (a :func:`fingerprint` key) newer than the oldest output, or None: the caching rule."""
    if not outputs:
        return None
    oldest = min(stamp[1] for stamp in outputs.values())
    return next((rel for rel, (_, mtime) in inputs.items() if mtime > oldest), None)


def _depth(product: str) -> int:
    inputs = made_from(product)
    return 1 + max(map(_depth, inputs)) if inputs else 0


def upstream(products: Iterable[str]) -> list[str]:
    """``products`` and everything they are made from, the earliest first (so a check names the first stale one)."""
    seen: set[str] = set()
    todo = list(products)
    while todo:
        product = todo.pop()
        if product not in seen:
            seen.add(product)
            todo.extend(made_from(product))
    return sorted(seen, key=lambda p: (_depth(p), p))


def _name(product: str) -> str:
    """A product as a message names it: ``dataset/``, ``features/learned.parquet``."""
    return f"{product}.parquet" if product.startswith(FEATURES) else f"{product}/"


def stale_product(run: Path, products: Iterable[str]) -> tuple[str, str] | None:
    """(product, what it is older than) for the earliest of ``products`` and their upstream that is older than a
    product it is made from; None when all are current. Missing products are skipped."""
    run = Path(run)
    stamps: dict[str, dict[str, list[int]]] = {}

    def stamp(product: str) -> dict[str, list[int]]:
        if product not in stamps:
            stamps[product] = fingerprint(run, product_paths(run, product))
        return stamps[product]

    for product in upstream(products):
        if not stamp(product):
            continue
        for source in made_from(product):
            if newer_input(stamp(product), stamp(source)) is not None:
                return product, source
    return None


def check_current(run: str | os.PathLike[str], products: Iterable[str]) -> None:
    """Refuse (one line naming the stage to rerun) when a product a stage reads — or one it was made from, and so
    on up — is older than what it was made from: e.g. ``runs/x/factors: made from an older dataset/
    (re-ingested since); rerun: socialfeat factorize runs/x``. Stat only: cheap enough for every call."""
    run = Path(run)
    found = stale_product(run, products)
    if found is None:
        return
    product, source = found
    for path in product_paths(run, source):  # a damaged file is newer too: call it damaged, not rewritten
        for member in sorted(path.rglob("*")) if path.is_dir() else [path]:
            check_intact(member, run)
    since = _SINCE.get(source, "re-embedded since" if source.startswith(FEATURES) else "rewritten since")
    rel = _name(product).rstrip("/")
    command = rerun_command(run, "eval/metrics.json" if product == "eval" else rel)
    rerun = f"; rerun: {command}" if command else ""
    raise UserError(str(run / rel), f"made from an older {_name(source)} ({since}){rerun}")


def check_inputs(run: str | os.PathLike[str], product: str) -> None:
    """:func:`check_current` on what the stage that writes ``product`` reads (not on ``product``: that stage is
    about to rewrite it)."""
    check_current(run, made_from(product))


# ---------------------------------------------------------------------------------------------- pipeline stages
def embed_sources(config: Config) -> tuple[str, ...]:
    """What the embed stage writes: learned, ImageNet and random init, and the meta-class baseline when trained."""
    return (*EMBED_SOURCES, "meta-class") if config.train.meta_class else EMBED_SOURCES


def stage_products(config: Config, stage: str) -> list[str]:
    """The products a pipeline stage writes; empty for the stages whose outputs are not products (simulate,
    index, transfer, report)."""
    if stage == "train":
        return ["model", "meta-class"] if config.train.meta_class else ["model"]
    if stage == "embed":
        return [feature_product(s) for s in embed_sources(config)]
    products = {"ingest": "dataset", "factorize": "factors", "targets": "targets", "content": "content"}
    return [products[stage]] if stage in products else (["eval"] if stage == "evaluate" else [])
