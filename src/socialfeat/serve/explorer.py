"""What the web explorer answers from: a run's items, faiss indexes, models, factors and content model, loaded once at
start-up so that a request only searches and ranks — the text encoder excepted: it loads on the first upload that
brings a title or text, so browsing and plain uploads never pay for it. Plain Python (no web framework), so the API
is a thin layer over it and everything here is testable without a server.

Requests name items and users by id only; ids are looked up in the run's own tables, so no request value ever
reaches the file system.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import yaml
from PIL import Image

from socialfeat.artifacts import read_schema, read_table
from socialfeat.config import Config
from socialfeat.data.images import ImageError, decode_image, load_image
from socialfeat.data.splits import read_split
from socialfeat.data.tags import given_tags
from socialfeat.errors import UserError
from socialfeat.export import Inference, encoder_for
from socialfeat.features import Encoder
from socialfeat.index import ItemIndex, column_of, load_index, model_outputs
from socialfeat.live.tables import NewItem
from socialfeat.recommend import FACTORS, Recommender, content_score
from socialfeat.report.gallery import Thumbnails
from socialfeat.serve.errors import BadField, BadImage, NotFound
from socialfeat.serve.live import LiveView
from socialfeat.serve.search import SubstringIndex

if TYPE_CHECKING:
    from socialfeat.content import ContentModel

log = logging.getLogger(__name__)

SOURCES = ("learned", "imagenet")  # what the explorer compares; random init is a floor for the report, not a view
SPLIT_NAMES = {"train": "warm", "valid": "cold", "test": "cold"}
JPEG_QUALITY = 85
NO_CONTENT_MODEL = "this run has no content model; make one with `socialfeat content RUN`, then restart the explorer"


@dataclass
class Space:
    """One feature source: its index, the row of each item in it, and the model that embeds new images into it."""

    name: str
    column: str
    index: ItemIndex
    rows: dict[str, int]
    encoder: Encoder  # the PyTorch model or its ONNX export (``serve.runtime``)
    runtime: str
    image_size: int

    def vector(self, row: int) -> np.ndarray:
        """The indexed vector of one row, from the index itself: exact for flat and HNSW indexes, decoded from its
        code for IVF-PQ — as approximate as that index's search, and no float matrix of the catalogue is held."""
        return self.index.index.reconstruct(row)


class Explorer:
    """A run, ready to answer: item pages, neighbours by id or by image, audiences and recommendations."""

    def __init__(self, config: Config, run: str | Path) -> None:
        self.config, self.run = config, Path(run)
        self.run_name = _run_name(self.run)
        items_path = self.run / "dataset" / "items.parquet"
        if not items_path.is_file():
            raise UserError(str(self.run), "not a run folder (no dataset/items.parquet); run `socialfeat run` first")
        t0 = time.perf_counter()
        faiss.omp_set_num_threads(1)  # one query per request: threads only fight the other requests for cores
        self._load_items(items_path)
        self.spaces = {s: self._load_space(s) for s in SOURCES if self._has_features(s)}
        if not self.spaces:
            raise UserError(str(self.run), f"no features; run `socialfeat embed {self.run} --source learned` first")
        self.recommender, self.no_audience = self._load_recommender()
        self.rec_rows = {str(i): r for r, i in enumerate(self.recommender.item_ids)} if self.recommender else {}
        user_ids = self.recommender.user_ids if self.recommender else []
        self.user_search = SubstringIndex(str(u).lower() for u in user_ids)  # /api/users: built once
        self.content = self._load_content()
        self.thumbs = Thumbnails(self.run, 160, config.train.max_pixels)
        encoders = {s: Inference(sp.encoder, sp.image_size, sp.runtime, {}) for s, sp in self.spaces.items()}
        dims = {s: sp.index.index.d for s, sp in self.spaces.items()}
        self.live = LiveView(config, self.run, self.recommender, encoders, dims, self.row_of, self.no_audience)
        self.load_seconds = time.perf_counter() - t0
        log.info("explorer ready: %d items, sources %s, %.1f s", len(self.keys), list(self.spaces), self.load_seconds)

    # ----------------------------------------------------------------------------------------------- loading
    def _load_items(self, path: Path) -> None:
        """Items as the pages show them, plus what filters them without a loop per request: a substring index of
        the lowercase id and title, and the rows of each split."""
        names = read_schema(path).names
        table = read_table(path, columns=[c for c in ("item_id", "title", "tags", "n_users") if c in names])
        ids = table.column("item_id").to_pylist()
        n = len(ids)

        def column(name: str) -> list:
            return table.column(name).to_pylist() if name in table.column_names else [None] * n

        self.ids = ids
        self.keys = [str(i) for i in ids]
        self.row_of = {k: r for r, k in enumerate(self.keys)}
        self.titles = [t or k for t, k in zip(column("title"), self.keys, strict=True)]
        self.tags = column("tags")  # as stored ("a|b"); split into a list when an item is shown
        self.n_users = [int(v) if v is not None else None for v in column("n_users")]
        splits = read_split(self.run) if (self.run / "factors" / "item_split.parquet").is_file() else {}
        self.split = [SPLIT_NAMES.get(splits.get(i, ""), None) for i in ids]
        self.split_counts = Counter(self.split)
        split = np.array([s or "" for s in self.split], dtype=object)
        self.split_rows = {s: np.flatnonzero(split == s) for s in ("warm", "cold")}
        self.is_split = {s: split == s for s in ("warm", "cold")}
        self.title_search = SubstringIndex(f"{k}\n{t}".lower() for k, t in zip(self.keys, self.titles, strict=True))

    def _has_features(self, source: str) -> bool:
        base = self.run / "features"
        return (base / f"{source}.parquet").is_file() or any(base.glob(f"{source}.part-*-of-*.parquet"))

    def _load_space(self, source: str) -> Space:
        column = "features"
        index = load_index(self.run, source, column, self.config)
        found = encoder_for(self.config, self.run, source, threads=self.config.serve.torch_threads)
        encoder, size, runtime = found.encoder, found.image_size, found.runtime
        if isinstance(index.index, faiss.IndexIVF):
            index.index.make_direct_map()  # so a known item's vector is decoded from its code (Space.vector)
        rows = {str(i): r for r, i in enumerate(index.ids)}
        return Space(source, column, index, rows, encoder, runtime, size)

    def _load_recommender(self) -> tuple[Recommender | None, str | None]:
        """User factors, item vectors and who engaged with what (read once, as arrays); without them the explorer
        still browses, but predicts no audience."""
        try:
            return Recommender(self.run, index_log=True), None
        except UserError as e:
            log.warning("no audiences or recommendations: %s", e)
            return None, str(e)

    def _load_content(self) -> ContentModel | None:
        """The run's content model (small: a ridge map per source), or None when ``socialfeat content`` has not
        made one; the text encoder it may need is not loaded here."""
        if not (self.run / "content" / "model.json").is_file():
            return None
        from socialfeat.content import ContentModel

        return ContentModel(self.run)

    # ----------------------------------------------------------------------------------------------- answers
    def content_info(self, vocabulary: bool = False) -> dict[str, Any]:
        """What the page needs to offer the optional fields: the sources and their fusion weights, the fields
        read, the size of the tag vocabulary (and, for suggestions, the vocabulary itself)."""
        model = self.content
        if model is None:
            return {"present": False, "kind": None, "sources": [], "weights": None, "fields": [], "tag_vocabulary": 0,
                    "note": NO_CONTENT_MODEL}  # fmt: skip
        vocab = model.vocabulary or []
        out: dict[str, Any] = {
            "present": True,
            "kind": model.kind,
            "sources": list(model.weights),
            "weights": _rounded(model.shares(list(model.weights))),
            "fit_on": list(model.meta["blocks"]),
            "image_source": model.image_source,
            "fields": model.fields,
            "tag_vocabulary": len(vocab),
            "note": None if self.recommender is not None else self.no_audience,
        }
        if vocabulary:
            out["vocabulary"] = vocab
        return out

    def health(self) -> dict[str, Any]:
        live = self.live.health()
        hidden = self.live.hidden_rows()
        return {
            "status": "ok",
            "run": self.run_name,
            "items": len(self.keys) - (0 if hidden is None else int(hidden.sum())) + live["items"],
            "warm": self.split_counts.get("warm", 0),
            "cold": self.split_counts.get("cold", 0),
            "users": len(self.recommender.user_ids) if self.recommender else 0,
            "sources": {
                s: {
                    "kind": sp.index.meta.get("kind"),
                    "dimension": sp.index.index.d,
                    "image_size": sp.image_size,
                    "runtime": sp.runtime,
                }
                for s, sp in self.spaces.items()
            },
            "runtime": "+".join(sorted({sp.runtime for sp in self.spaces.values()})),
            "audience": self.recommender is not None,
            "audience_note": self.no_audience,
            "content": self.content_info(),
            "max_upload_bytes": self.config.serve.max_upload_bytes,
            "max_pixels": self.config.serve.max_pixels,
            "max_k": self.config.serve.max_k,
            "load_seconds": round(self.load_seconds, 2),
            "live": live,
        }

    def row(self, item_id: str) -> int:
        """The row of a batch item still in the catalogue."""
        row = self.row_of.get(item_id)
        if row is None or self.live.is_removed(item_id):
            raise NotFound(f"unknown item '{item_id}'" if row is None else f"item '{item_id}' was removed")
        return row

    def item_page(self, item_id: str, k: int) -> dict[str, Any]:
        """One item, batch or live, with the users it is predicted to reach when it is cold or live."""
        self.live.sync()
        found = self.live.item(item_id)
        if found is not None:
            return {**found, "predicted_audience": self.live.item_audience(item_id, k)}
        return {**self.item(self.row(item_id)), "predicted_audience": self.predicted_audience(item_id, k)}

    def item(self, row: int) -> dict[str, Any]:
        tags = self.tags[row]
        return {
            "id": self.keys[row],
            "title": self.titles[row],
            "tags": [t.strip() for t in tags.split("|") if t.strip()] if tags else [],
            "split": self.split[row],
            "n_users": self.n_users[row],
        }

    def items(self, query: str = "", split: str = "all", offset: int = 0, limit: int = 60) -> dict[str, Any]:
        """A page of items whose id or title contains ``query`` (case-insensitive), optionally warm, cold or live
        only: live items first (newest first), then the batch in catalogue order, removed ones left out. The
        substring indexes and the split's rows answer it, and only the page is materialised."""
        q = query.strip().lower()
        live = self.live.find(q) if split in ("all", "live") else []
        rows: np.ndarray | range = range(0)
        if split != "live":
            rows = range(len(self.keys))
            if q:
                rows = self.title_search.find(q)
                if split in self.is_split:
                    rows = rows[self.is_split[split][rows]]
            elif split in self.split_rows:
                rows = self.split_rows[split]
            hidden = self.live.hidden_rows()
            if hidden is not None:
                rows = np.asarray(rows)[~hidden[rows]]
        shown = [self.live.item(i) for i in live[offset : offset + limit]]
        start = max(0, offset - len(live))
        shown += [self.item(int(r)) for r in rows[start : start + limit - len(shown)]]
        return {"total": len(live) + len(rows), "offset": offset, "items": [i for i in shown if i is not None]}

    def space(self, source: str) -> Space:
        if source not in self.spaces:
            raise NotFound(f"this run has no {source} features; run `socialfeat embed RUN --source {source}`")
        return self.spaces[source]

    def _ranked(self, ids: list, scores: list[float]) -> list[dict[str, Any]]:
        out = []
        for rank, (item, score) in enumerate(zip(ids, scores, strict=True), start=1):
            row = self.row_of.get(str(item))
            info = self.item(row) if row is not None else self.live.item(str(item))
            info = info or {"id": str(item), "title": str(item)}
            out.append({"rank": rank, "score": round(float(score), 5), **info})
        return out

    def similar(self, item_id: str, source: str, k: int) -> list[dict[str, Any]]:
        """The k items nearest to a known item (batch or live) under one source, the item itself left out."""
        self.live.sync()
        space = self.space(source)
        query = self.live.vector(item_id, source)
        exclude: Any = item_id
        if query is None:
            self.row(item_id)
            index_row = space.rows.get(item_id)
            if index_row is None:
                raise NotFound(f"item '{item_id}' has no {source} features (its image could not be read)")
            query, exclude = space.vector(index_row), space.index.ids[index_row]
        return self._ranked(*self.live.nearest(source, space.index, query, k, exclude))

    def predicted_audience(self, item_id: str, k: int) -> list[dict[str, Any]] | None:
        """For a cold item: the users its predicted factors reach (what the platform would do on upload day)."""
        row = self.row(item_id)
        if self.recommender is None or self.split[row] != "cold" or "learned" not in self.spaces:
            return None
        r = self.rec_rows.get(self.keys[row])
        return None if r is None else self.live.audience(self.recommender.vectors[r], k)

    def upload(
        self,
        data: bytes,
        k: int,
        sources: list[str],
        title: str | None = None,
        text: str | None = None,
        tags: str | None = None,
    ) -> dict[str, Any]:
        """A new image (bytes from the network): decoded defensively, then neighbours under each requested source
        and the users predicted to engage with it — from the learned model's factors head, or, when a title, text
        or tags (comma separated) come with it, from the run's content model fusing them with the image's features
        (``content`` then says which sources scored it, and notes what was ignored). ``steps`` says where the time
        went (ms): decode and resize (once per image size, shared by the sources), forward and search per source,
        the content model, and the audience."""
        t0 = time.perf_counter()
        described = title is not None or text is not None or tags is not None
        tag_list = self._check_fields(title, text, tags) if described else None  # before any decoding
        spaces = [self.space(s) for s in dict.fromkeys(sources)]
        pixels: dict[int, np.ndarray] = {}
        steps: dict[str, float] = {}
        for sp in spaces:
            self._decode(data, sp.image_size, pixels, steps)
        similar: dict[str, list[dict[str, Any]]] = {}
        outputs: dict[str, dict[str, np.ndarray]] = {}
        audience = None
        for sp in spaces:
            t = time.perf_counter()
            outputs[sp.name] = model_outputs(sp.encoder, pixels[sp.image_size])
            steps[f"forward {sp.name}"] = _ms(t)
            t = time.perf_counter()
            vector = column_of(outputs[sp.name], sp.column)
            similar[sp.name] = self._ranked(*self.live.nearest(sp.name, sp.index, vector, k))
            steps[f"search {sp.name}"] = _ms(t)
            if not described and sp.name == "learned" and self.recommender is not None and FACTORS in outputs[sp.name]:
                t = time.perf_counter()
                audience = self.live.audience(outputs[sp.name][FACTORS], k)
                steps["audience"] = _ms(t)
        content = None
        if described:
            audience, content = self._content_audience(data, k, title, text, tag_list, outputs, pixels, steps)
        note = None
        if audience is None:
            note = self.no_audience or "the audience comes from the learned model; ask for source=learned"
        out = {"similar": similar, "audience": audience, "audience_note": note}
        if content is not None:
            out["content"] = content
        return out | {"ms": _ms(t0), "steps": steps}

    def new_item(self, item_id: str, title: str | None, text: str | None, tags: str | None) -> NewItem:
        """An added item's fields as ``socialfeat add`` reads them from a table: tags separated by , | or ;, and
        empty fields left out."""
        for name, value in (("item_id", item_id), ("title", title), ("text", text), ("tags", tags)):
            if value is not None and "\x00" in value:
                raise BadField(name, "holds a NUL character")
        if not item_id.strip():
            raise BadField("item_id", "empty; give the new item's id")
        tag_list = [t.strip() for t in re.split(r"[|,;]", tags or "") if t.strip()]
        return NewItem(item_id, "upload", title or None, text or None, "|".join(tag_list) or None, row=1)

    def add_item(self, data: bytes, item: NewItem, replace: bool, k: int) -> dict[str, Any]:
        """Add one uploaded item to the live catalogue; the image is decoded first under the explorer's limits
        (``serve.max_pixels``), so a bad one is the same 400 as on ``/api/upload`` and nothing is written."""
        self._decode(data, min(sp.image_size for sp in self.spaces.values()), {}, {})
        return self.live.add(item, data, replace, k)

    def _decode(self, data: bytes, size: int, pixels: dict[int, np.ndarray], steps: dict[str, float]) -> None:
        """The upload decoded and resized to ``size`` into ``pixels``, once per size."""
        if size in pixels:
            return
        limit = self.config.serve.max_pixels
        t = time.perf_counter()
        try:
            pixels[size] = decode_image(io.BytesIO(data), size, limit)
        except ImageError as e:
            raise BadImage(_image_message(e, limit)) from None
        steps[f"decode {size}px"] = _ms(t)

    def _check_fields(self, title: str | None, text: str | None, tags: str | None) -> list[str] | None:
        """What can be told before decoding anything: is there a content model and an audience to predict, are the
        tags a list, and can the model read every field given."""
        field = next(f for f, v in (("title", title), ("text", text), ("tags", tags)) if v is not None)
        if self.content is None:
            raise BadField(field, NO_CONTENT_MODEL)
        if self.recommender is None:
            raise BadField(field, f"no audience to predict: {self.no_audience}")
        try:
            tag_list = given_tags(tags, "tags")
            self.content.check(title, text, tag_list)  # a field the model cannot read: refused before decoding
        except UserError as e:
            raise BadField(e.where, e.message) from None
        return tag_list

    def _content_audience(
        self,
        data: bytes,
        k: int,
        title: str | None,
        text: str | None,
        tags: list[str] | None,
        outputs: dict[str, dict[str, np.ndarray]],
        pixels: dict[int, np.ndarray],
        steps: dict[str, float],
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The audience from the content model over the image's features for its image source — the ones this
        upload already computed when that source was searched, else one more forward pass — and the fields."""
        model, rec = self.content, self.recommender
        assert model is not None and rec is not None  # checked by _check_fields
        notes: list[str] = []
        features = None
        source = model.image_source
        if source is not None:
            if source not in outputs and source in self.spaces:  # not searched: embedded for the content model only
                sp = self.spaces[source]
                self._decode(data, sp.image_size, pixels, steps)
                t = time.perf_counter()
                outputs[source] = model_outputs(sp.encoder, pixels[sp.image_size])
                steps[f"forward {source}"] = _ms(t)
            if source in outputs:
                features = outputs[source]["features"]
            else:
                notes.append(f"{source}: this run has no {source} model to embed the image; scored without it")
        t = time.perf_counter()
        try:
            score = content_score(model, features, title, text, tags)
        except UserError as e:
            raise BadField(e.where, e.message) from None
        steps["content"] = _ms(t)
        t = time.perf_counter()
        audience = self.live.audience(score.factors, k)
        steps["audience"] = _ms(t)
        return audience, {"model": model.kind, "sources": score.sources, "weights": _rounded(score.weights),
                          "notes": notes + score.notes}  # fmt: skip

    def recommendations(self, user_id: str, k: int, include_seen: bool) -> list[dict[str, Any]]:
        """Items for a user (one first seen in live events too), batch and live together, removed ones never."""
        if self.recommender is None:
            raise NotFound(f"no recommendations: {self.no_audience}")
        ranked = self.live.rank(user_id, k, include_seen)
        rows = self._ranked([r["item_id"] for r in ranked], [r["score"] for r in ranked])
        for row, r in zip(rows, ranked, strict=True):
            factors = ("folded" if r["live"] else "true") if r["warm"] else "predicted"
            row.update(factors=factors, seen=r["seen"], live=r["live"])
        return rows

    def users(self, query: str = "", limit: int = 20) -> list[str]:
        """The first ``limit`` user ids containing ``query`` (case-insensitive), for the page's suggestions: the
        batch's users, then those first seen in live events."""
        if self.recommender is None:
            return []
        q = query.strip().lower()
        rows = self.user_search.find(q)[:limit]
        found = [str(self.recommender.user_ids[r]) for r in rows]
        if len(found) < limit:
            found += [u for u in self.live.new_users() if q in u.lower()][: limit - len(found)]
        return found

    def thumbnail_tag(self, item_id: str) -> str:
        """What a cached thumbnail of this item depends on: its image's sha256 for a live item (it may be replaced),
        empty for a batch one; NotFound for an unknown or removed item."""
        self.live.sync()
        found = self.live.image(item_id)
        if found is not None:
            return found[1]
        self.row(item_id)
        return ""

    def thumbnail(self, item_id: str, size: int) -> bytes:
        """A square JPEG of an item, from the run's own image table or live store (never from a path given in a
        request)."""
        found = self.live.image(item_id)
        if found is not None:
            try:
                pixels: np.ndarray | None = load_image(found[0], size, self.config.train.max_pixels)
            except ImageError:
                pixels = None
        else:
            row = self.row(item_id)
            pixels = self.thumbs.pixels(self.ids[row], size)
        if pixels is None:
            raise NotFound(f"no readable image for item '{item_id}'")
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
        return buf.getvalue()


def _rounded(weights: dict[str, float] | None) -> dict[str, float] | None:
    return None if weights is None else {b: round(w, 4) for b, w in weights.items()}


def _ms(since: float) -> float:
    return round(1000 * (time.perf_counter() - since), 2)


def _image_message(e: ImageError, limit: int) -> str:
    """What went wrong with an upload, in words a person understands."""
    if e.reason == "too large":
        return f"image too large ({e.detail}); at most {limit:,} pixels are accepted"
    if e.reason == "not an image":
        return "not an image: the file's content is not a format the server can decode (JPEG, PNG, WebP, GIF, …)"
    if e.reason == "truncated":
        return "truncated image: the file ends before the image data does"
    return f"corrupt image: {e.detail}"


def _run_name(run: Path) -> str:
    """The name the run was made under (its resolved ``config.yaml``), else its folder's: not the name of the
    config ``serve`` itself was started with, which is the default unless ``-c`` is given."""
    try:
        name = yaml.safe_load((run / "config.yaml").read_text()).get("name")
    except (OSError, yaml.YAMLError, AttributeError):
        name = None
    return str(name) if name else run.resolve().name
