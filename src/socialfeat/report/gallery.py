"""The report's image galleries: nearest neighbours of a few query images under two feature sources, and a strip
of images per cluster. Thumbnails are small JPEG data URIs, so the report stays one self-contained file."""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from socialfeat.artifacts import read_json, read_schema, read_table, rerun_command
from socialfeat.config import Config
from socialfeat.data.images import ImageCache, ImageError, ImageRoot, dataset_root, load_image
from socialfeat.data.splits import read_split
from socialfeat.errors import UserError
from socialfeat.index import current_index, exact_search, feature_files, read_ids, read_rows, search

log = logging.getLogger(__name__)

JPEG_QUALITY = 80
SPLIT_ORDER = ("test", "valid")  # cold items first: nobody had engaged with them when the model was trained
CLUSTER_FILES = {"factor-clusters": "factor_clusters.parquet", "engagement": "engagement.parquet"}
CLUSTER_TITLES = {
    "factor-clusters": "audience clusters (k-means of the item factors)",
    "engagement": "engagement clusters (what people say about an item and how they engage with it)",
}


class Missing(Exception):
    """A section's inputs are not there; the message says which command writes them."""


class Thumbnails:
    """Item titles and square JPEG thumbnails (data URIs), decoded once per item.

    Images come from the image root that ingest recorded in dataset/stats.json; when it has moved away, from the
    run's pre-resized image cache (run/cache/images-<size>) instead. An item with neither gets no thumbnail.
    """

    def __init__(self, run: Path, size: int, max_pixels: int = 100_000_000) -> None:
        self.run, self.size, self.max_pixels = run, size, max_pixels
        dataset = run / "dataset"
        table = read_table(dataset / "items.parquet", run=run)
        ids = table.column("item_id").to_pylist()
        images = table.column("image").to_pylist() if "image" in table.column_names else [None] * len(ids)
        titles = table.column("title").to_pylist() if "title" in table.column_names else [None] * len(ids)
        self.images = dict(zip(ids, images, strict=True))
        self.titles = {i: (t if t else str(i)) for i, t in zip(ids, titles, strict=True)}
        self.paths = self._image_root(dataset)  # the check that keeps every path under the root
        self.root = self.paths.root if self.paths is not None else None
        self._cache: ImageCache | None | bool = False  # False: not looked for yet
        self._uris: dict[tuple[Any, int], str | None] = {}

    @staticmethod
    def _image_root(dataset: Path) -> ImageRoot | None:
        try:
            stats = json.loads((dataset / "stats.json").read_text())
            root = dataset_root(dataset, stats) if "image_root" in stats["missing_images"] else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return root if root is not None and root.root.is_dir() else None

    def title(self, item: Any) -> str:
        return self.titles.get(item, str(item))

    def uri(self, item: Any, size: int | None = None) -> str | None:
        """The item's thumbnail (``size`` px, default the report's) as a JPEG data URI, or None when no image of
        it can be read."""
        size = size or self.size
        if (item, size) not in self._uris:
            pixels = self.pixels(item, size)
            self._uris[item, size] = None if pixels is None else _jpeg_uri(pixels)
        return self._uris[item, size]

    def pixels(self, item: Any, size: int) -> np.ndarray | None:
        image = self.images.get(item)
        path = self.paths.resolve(image) if self.paths is not None and image else None
        if path is not None:  # a path outside the image root is never opened
            try:
                return load_image(path, size, self.max_pixels)
            except ImageError as e:
                log.debug("no thumbnail for %s from %s: %s", item, image, e)
        cache = self._open_cache()
        if cache is not None and item in cache.rows:
            pixels = np.asarray(cache.array()[cache.rows[item]])
            return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC))
        return None

    def _open_cache(self) -> ImageCache | None:
        """The run's image cache closest in size above the thumbnail (else the largest), if one is complete."""
        if self._cache is False:
            self._cache = None
            found = []
            for path in (self.run / "cache").glob("images-*"):
                suffix = path.name.removeprefix("images-")
                if suffix.isdigit():
                    found.append((int(suffix), path))
            found.sort(key=lambda sp: (sp[0] < self.size, abs(sp[0] - self.size)))
            for _, path in found:
                try:
                    self._cache = ImageCache.open(path)
                    break
                except Exception as e:  # a partial cache is a reason to try the next one, not to fail
                    log.debug("image cache %s not usable: %s", path, e)
        return self._cache or None


def _jpeg_uri(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def feature_columns(run: Path, source: str) -> list[str]:
    """Vector columns of features/<source>.parquet (or of its first rank part); empty when it is missing."""
    base = run / "features"
    files = [base / f"{source}.parquet"] if (base / f"{source}.parquet").is_file() else []
    files = files or sorted(base.glob(f"{source}.part-*-of-*.parquet"))
    if not files:
        return []
    return [name for name in read_schema(files[0], run=run).names if name != "item_id"]


def choose_queries(candidates: list, splits: dict[Any, str], n: int, seed: int, thumbs: Thumbnails) -> list:
    """``n`` query items with a thumbnail: a seeded draw among the cold test items first, then cold validation
    items, then the rest — the same queries for every feature source."""
    rng = np.random.default_rng(seed)
    order: list = []
    for split in (*SPLIT_ORDER, None):
        group = [i for i in candidates if (splits.get(i) == split if split else splits.get(i) not in SPLIT_ORDER)]
        order.extend(group[j] for j in rng.permutation(len(group)))
    chosen = []
    for item in order[: max(10 * n, 100)]:  # unreadable images are skipped, but not by decoding the catalogue
        if len(chosen) == n:
            break
        if thumbs.uri(item) is not None:
            chosen.append(item)
    return chosen


def neighbour_gallery(
    config: Config, run: Path, thumbs: Thumbnails, sources: list[tuple[str, str, str]]
) -> dict[str, Any]:
    """Query images and their top neighbours by cosine similarity under each (source, column, label) given: the
    queries' own vectors are the only rows read, and their neighbours come from a search (:func:`_nearest`).

    Raises Missing when the first source (the learned features) is not there; a missing later source is noted.
    """
    cfg = config.report
    loaded: list[_Space] = []
    notes = []
    for source, column, label in sources:
        if not feature_columns(run, source):
            message = f"no features/{source}.parquet; make it with: {rerun_command(run, f'features/{source}.parquet')}"
            if not loaded:
                raise Missing(message)
            notes.append(message)
            continue
        files = feature_files(run, source)
        ids = read_ids(run, files)
        loaded.append(_Space(source, column, label, files, ids, {i: r for r, i in enumerate(ids)}))
    common = [i for i in loaded[0].ids if all(i in space.rows for space in loaded[1:])]
    splits = read_split(run)
    queries = choose_queries(common, splits, cfg.gallery_queries, config.seed, thumbs)
    if not queries:
        where = thumbs.root or "the recorded image root"
        raise Missing(f"no item image could be read (from {where} or the run's image cache under {run / 'cache'})")
    k = cfg.gallery_neighbours
    found = [_nearest(config, run, space, queries, k) for space in loaded]
    blocks = []
    for n, q in enumerate(queries):
        rows = []
        for space, near in zip(loaded, found, strict=True):
            neighbours = [_item(thumbs, item, splits, score) for item, score in near[n]]
            rows.append(
                {"source": space.source, "label": space.label, "column": space.column, "neighbours": neighbours}
            )
        blocks.append({**_item(thumbs, q, splits, None), "rows": rows})
    return {"queries": blocks, "k": k, "notes": notes, "sources": [space.label for space in loaded]}


def _nearest(config: Config, run: Path, space: _Space, queries: list, k: int) -> list[list[tuple[Any, float]]]:
    """Each query's k nearest items (id, cosine), itself left out: from the run's index of the column when it is
    current, else by an exact search streamed over the feature file (ties to the earlier row). Only the queries'
    rows are read as vectors, never the whole matrix."""
    rows = [space.rows[q] for q in queries]
    vectors = read_rows(run, space.files, space.column, rows)
    index = current_index(run, space.source, space.column, space.ids, config)
    if index is not None:
        ids, scores = search(index, vectors, k + 1)
        return [
            [(i, s) for i, s in zip(found, cos, strict=True) if i != q][:k]
            for q, found, cos in zip(queries, ids, scores, strict=True)
        ]
    top, cosines = exact_search(run, space.files, space.column, vectors, k + 1)
    return [
        [(space.ids[j], float(s)) for j, s in zip(t, c, strict=True) if j != r][:k]
        for r, t, c in zip(rows, top, cosines, strict=True)
    ]


@dataclass
class _Space:
    """One feature source for the gallery: its files, the item id of each row, and id → row (no vectors)."""

    source: str
    column: str
    label: str
    files: list[Path]
    ids: list
    rows: dict[Any, int]


def _item(thumbs: Thumbnails, item: Any, splits: dict[Any, str], score: float | None) -> dict[str, Any]:
    return {
        "id": str(item),
        "title": thumbs.title(item),
        "uri": thumbs.uri(item),
        "cold": splits.get(item) in SPLIT_ORDER,
        "score": score,
    }


def cluster_gallery(config: Config, run: Path, thumbs: Thumbnails) -> list[dict[str, Any]]:
    """Per clustering in targets/clusters.json: each cluster's size, distinctive words and up to
    ``report.cluster_images`` thumbnails — its listed typical items first, then a seeded draw of its other items."""
    path = run / "targets" / "clusters.json"
    if not path.is_file():
        raise Missing(f"no targets/clusters.json; run `socialfeat targets {run}`")
    described = read_json(path, run=run)
    if not described:
        raise Missing(f"targets/clusters.json describes no clusters; run `socialfeat targets {run}`")
    n = config.report.cluster_images
    size = strip_size(config.report.thumbnail)
    rng = np.random.default_rng(config.seed)
    out = []
    for name, groups in described.items():
        members = _members(run / "targets" / CLUSTER_FILES.get(name, f"{name}.parquet"))
        clusters = []
        for g in groups:
            listed = list(g.get("items", []))
            seen = set(listed)
            others = [i for i in members.get(g["cluster"], []) if i not in seen]
            candidates = listed + [others[j] for j in rng.permutation(len(others))]
            images = []
            for item in candidates[: 3 * n]:  # a few unreadable images may be skipped, not the whole catalogue
                if len(images) == n:
                    break
                if (uri := thumbs.uri(item, size)) is not None:
                    images.append({"id": str(item), "title": thumbs.title(item), "uri": uri})
            clusters.append(
                {
                    "cluster": g["cluster"],
                    "size": g.get("size", len(members.get(g["cluster"], []))),
                    "words": [w["word"] for w in g.get("words", [])][:8],
                    "images": images,
                }
            )
        out.append({"name": name, "title": CLUSTER_TITLES.get(name, name), "clusters": clusters})
    return out


def strip_size(thumbnail: int) -> int:
    """Cluster strips show many images: three quarters of the thumbnail edge keeps the file small."""
    return max(16, thumbnail * 3 // 4)


def _members(path: Path) -> dict[int, list]:
    """cluster → its item ids in file order (masked items, cluster -1, left out); empty if the file is missing."""
    if not path.is_file():
        return {}
    try:
        table = read_table(path, columns=["item_id", "cluster"])
    except UserError as e:  # the gallery still shows the clusters' words: name the file and go on
        log.warning("%s", e)
        return {}
    members: dict[int, list] = {}
    for item, c in zip(table.column("item_id").to_pylist(), table.column("cluster").to_pylist(), strict=True):
        if c is not None and c >= 0:
            members.setdefault(int(c), []).append(item)
    return members
