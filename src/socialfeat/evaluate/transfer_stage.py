"""``transfer``: how well each feature source describes labelled images the model never saw — the seed papers'
table (Flickr Style, Wikipaintings, AVA style, Emotion6: learned vs ImageNet features under a linear probe) for a
user's own collections. Every source embeds the set's images (same preprocessing as training, the image cache of
``embed --images``), then ``evaluate.transfer`` probes them; one ``eval/transfer-<name>.json`` per set.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from socialfeat.atomic import write_json
from socialfeat.config import Config, TransferSet, provenance
from socialfeat.data.image_tables import ImageTable, load_image_table, problem_summary
from socialfeat.data.images import ImageCache
from socialfeat.errors import UserError
from socialfeat.evaluate.transfer import check_labels, probe_source
from socialfeat.features import MODEL_DIRS, SOURCES, embed_rows, source_model
from socialfeat.freshness import MODEL_PRODUCTS, check_current
from socialfeat.measures.metrics import majority_rate
from socialfeat.models.heads import FeatureModel, head_key
from socialfeat.runlock import writes_run
from socialfeat.runtime import Dist, default_workers, pick_device, table_cache

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
Step = Callable[[str], None]


@dataclass
class TransferResult:
    """Where the probe results went, one file per labelled set.

    Attributes:
        outs: The files written, ``RUN/eval/transfer-<name>.json``.
        results: Their content, in the same order: classes, chance level, and per source its k-fold and
            few-shot probe accuracy.
    """

    outs: list[Path]
    results: list[dict[str, Any]]


def transfer_path(run: Path, name: str) -> Path:
    return Path(run) / "eval" / f"transfer-{name}.json"


def row_name(source: str, column: str) -> str:
    """``learned · pooled``, ``learned · factor clusters head``, ``meta-class · pooled``, ``imagenet``,
    ``random init``."""
    if source in ("learned", "meta-class"):
        return (
            f"{source} · pooled"
            if column == "features"
            else f"{source} · {column.removeprefix('head_').replace('_', ' ')} head"
        )
    return "random init" if source == "random" else source


def one_set(
    labels: Path,
    image_root: Path | None = None,
    name: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> TransferSet:
    """A set from command-line flags: the name defaults to the table's file name, the root to its folder."""
    labels = Path(labels)
    return TransferSet(
        name=name or (labels.name if labels.is_dir() else labels.stem),
        labels=labels,
        image_root=image_root if image_root is not None else labels if labels.is_dir() else labels.parent,
        image_column=image_column or "image",
        label_column=label_column or "label",
    )


def _check_sets(sets: list[TransferSet]) -> None:
    names = Counter(s.name for s in sets)
    for s in sets:
        if not NAME.fullmatch(s.name):
            raise UserError(f"transfer set '{s.name}'", "a name is letters, digits, '.', '_' and '-' (it names a file)")
        if names[s.name] > 1:
            raise UserError(f"transfer set '{s.name}'", "two labelled sets with the same name; give each its own")


def _check_sources(sources: list[str] | None, config: Config, run: Path) -> list[str]:
    """The requested sources, else the configured ones plus meta-class when the run has that model."""
    default = list(config.transfer.sources)
    if (run / MODEL_DIRS["meta-class"] / "model.json").is_file() and "meta-class" not in default:
        default.append("meta-class")
    chosen = list(dict.fromkeys(sources or default))
    for s in chosen:
        if s not in SOURCES:
            raise UserError("--source", f"expected one of {', '.join(SOURCES)}, got '{s}'")
    return chosen


class _Embedder:
    """Each source's model, loaded once, and each (table, source)'s vectors, computed once: several sets can share
    one table (palette and texture labels of the same images)."""

    def __init__(self, config: Config, run: Path, sources: list[str], say: Step) -> None:
        self.config, self.run, self.say = config, run, say
        self.device = pick_device(config.train.device)  # one process: a probe table is small, transfer does not shard
        self.models: dict[str, tuple[FeatureModel, dict[str, Any]]] = {s: source_model(run, config, s) for s in sources}
        self.caches: dict[tuple[Any, int], ImageCache] = {}
        self.vectors: dict[tuple[Any, str], dict[str, np.ndarray]] = {}
        self.timing: dict[tuple[Any, str], dict[str, float]] = {}

    def size(self, source: str) -> int:
        return int(self.models[source][1].get("image_size", self.config.train.image_size))

    def cache(self, key: Any, table: ImageTable, size: int) -> ImageCache:
        if (key, size) not in self.caches:
            label = f"caching {len(table.images):,} images at {size} px"
            self.caches[key, size] = table_cache(
                self.run, table, size, self.config, progress=lambda d, n: self.say(f"{label} {d:,}/{n:,}")
            )
        return self.caches[key, size]

    def embed(self, key: Any, table: ImageTable, source: str) -> dict[str, np.ndarray]:
        """Vectors of every cached image of the table (rows of the cache), by column name."""
        if (key, source) not in self.vectors:
            cache = self.cache(key, table, self.size(source))
            model = self.models[source][0]
            rows = np.arange(len(cache.item_ids))
            t0 = time.perf_counter()
            out = embed_rows(
                model,
                cache.path,
                rows,
                self.config.embed.batch_size,
                default_workers(self.config.embed.workers, Dist(device=self.device)),
                self.device,
                lambda d, n, rate: self.say(f"embedding {source} {d:,}/{n:,} ({rate:.0f} img/s)"),
            )
            seconds = time.perf_counter() - t0
            vectors = {"features": out.pop("features")}
            vectors.update({f"head_{head_key(t)}": m for t, m in out.items()})
            self.vectors[key, source] = vectors
            self.timing[key, source] = {"seconds": seconds, "images_per_s": len(rows) / max(seconds, 1e-9)}
        return self.vectors[key, source]


@writes_run()
def transfer(
    config: Config,
    run: str | os.PathLike[str],
    sets: list[TransferSet] | None = None,
    sources: list[str] | None = None,
    progress: Step | None = None,
) -> TransferResult:
    """Probe every feature source on labelled images the model never saw, to test whether the features transfer.

    Args:
        config: The run's configuration; reads ``transfer``, ``embed`` and ``train``.
        run: The run folder.
        sets: The labelled image sets; default ``config.transfer.sets``.
        sources: Which sources to probe; default ``config.transfer.sources``, plus meta-class when the run has it.
        progress: Hears the name of each phase as it starts.

    Returns:
        The files written, ``run/eval/transfer-<name>.json`` per set, and their content.

    Raises:
        UserError: No run folder or set, a bad table or label column, an unknown source, or a stale model.
    """
    run = Path(run)
    say = progress or (lambda _msg: None)
    if not run.is_dir():
        raise UserError(str(run), "run folder not found")
    sets = list(sets if sets is not None else config.transfer.sets)
    if not sets:
        raise UserError("--labels", "no labelled set: give --labels TABLE --image-root DIR, or list transfer.sets")
    _check_sets(sets)
    chosen = _check_sources(sources, config, run)
    check_current(run, [MODEL_PRODUCTS[s] for s in chosen if s in MODEL_PRODUCTS])  # no probe of a stale model
    tc = config.transfer
    if any(c <= 0 for c in tc.Cs):
        raise UserError("transfer.Cs", f"every C must be > 0, got {tc.Cs}")
    if any(n < 1 for n in tc.few_shot):
        raise UserError("transfer.few_shot", f"labels per class must be ≥ 1, got {tc.few_shot}")
    tables: dict[Any, ImageTable] = {}
    plans = []
    for s in sets:  # read and check every table before the slow part
        key = (str(Path(s.labels).resolve()), str(Path(s.image_root).resolve()), s.image_column)
        if key not in tables:
            tables[key] = load_image_table(
                Path(s.labels),
                Path(s.image_root),
                s.image_column,
                "--image-column",
                allow_absolute=config.ingest.allow_absolute_images,
            )
        table = tables[key]
        if s.label_column not in table.columns:
            found = ", ".join([table.image_column, *table.columns])
            raise UserError(
                str(s.labels), f"no label column '{s.label_column}' (found: {found}); map it with --label-column"
            )
        plans.append((s, key, table))
    embedder = _Embedder(config, run, chosen, say)
    outs, results = [], []
    for s, key, table in plans:
        t0 = time.perf_counter()
        result = _probe_set(config, run, s, key, table, embedder, chosen, say)
        result["seconds"] = time.perf_counter() - t0
        path = transfer_path(run, s.name)
        write_json(path, {**result, "provenance": provenance(config, "transfer")})
        outs.append(path)
        results.append(result)
    return TransferResult(outs, results)


def _probe_set(
    config: Config,
    run: Path,
    s: TransferSet,
    key: Any,
    table: ImageTable,
    embedder: _Embedder,
    sources: list[str],
    say: Step,
) -> dict[str, Any]:
    tc = config.transfer
    labels = table.columns[s.label_column]
    caches = {src: embedder.cache(key, table, embedder.size(src)) for src in sources}
    usable = set(range(len(table.images)))
    for cache in caches.values():
        usable &= set(cache.item_ids)
    unlabelled = [i for i in usable if labels[i] is None]
    rows = np.array(sorted(i for i in usable if labels[i] is not None), dtype=np.int64)
    y = np.array([labels[i] for i in rows], dtype=str)
    where = f"{s.labels}: column '{s.label_column}'"
    if len(rows) == 0:
        raise UserError(where, "no row has both a usable image and a label")
    check_labels(y, tc.folds, where)
    notes = []
    if unlabelled:
        notes.append(f"{len(unlabelled):,} usable images without a '{s.label_column}' label left out")
    first = next(iter(caches.values()))
    problems = problem_summary(table, first)
    if problems["total"]:
        reasons = ", ".join(f"{n:,} {r}" for r, n in problems["counts"].items())
        notes.append(f"{problems['total']:,} of {len(table.images):,} images could not be used ({reasons})")
    entries = []
    for src in sources:
        vectors = embedder.embed(key, table, src)
        position = caches[src].rows  # input row -> cache row
        idx = np.array([position[i] for i in rows], dtype=np.int64)
        for column, matrix in vectors.items():
            name = row_name(src, column)
            say(f"{s.name}: probing {name}")
            t0 = time.perf_counter()
            probe = probe_source(matrix[idx], y, tc.folds, tc.few_shot, tc.draws, tc.Cs, tc.inner_folds, config.seed)
            edge = [c for c in probe["kfold"]["C"] if len(tc.Cs) > 1 and c in (min(tc.Cs), max(tc.Cs))]
            if edge:
                notes.append(
                    f"{name}: C = {edge[0]:g} is at the edge of transfer.Cs in some folds; a wider grid may do better"
                )
            entries.append(
                {
                    "name": name,
                    "source": src,
                    "column": column,
                    "dim": int(matrix.shape[1]),
                    **probe,
                    "embed": embedder.timing[key, src],
                    "seconds": time.perf_counter() - t0,
                }
            )
            log.info("%s · %s: %.3f ± %.3f", s.name, name, probe["kfold"]["mean"], probe["kfold"]["std"])
    counts = Counter(y.tolist())
    return {
        "name": s.name,
        "labels": str(s.labels),
        "image_root": str(s.image_root),
        "image_column": s.image_column,
        "label_column": s.label_column,
        "images": {"rows": len(table.images), "usable": int(len(rows)), "problems": problems},
        "classes": dict(sorted(counts.items())),
        "chance": majority_rate(y, y),
        "rows": entries,
        "notes": notes,
        "settings": {
            "folds": tc.folds,
            "inner_folds": tc.inner_folds,
            "few_shot": sorted(set(tc.few_shot)),
            "draws": tc.draws,
            "Cs": sorted(tc.Cs),
            "sources": sources,
            "seed": config.seed,
            "features": "L2-normalised per image",
        },
    }
