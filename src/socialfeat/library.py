"""The library's front door: :func:`open_run` opens a run folder, and :class:`Run` answers questions about it.

Each method is the function a CLI command calls, so a notebook gets the CLI's answers and its one-line errors.
Opening writes nothing. A method may write what its command writes, such as a missing faiss index.

Example:
    >>> import socialfeat
    >>> run = socialfeat.open_run("runs/demo")
    >>> first = run.features("learned").ids[0]
    >>> print(run.similar(first, k=5))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import numpy as np

from socialfeat.config import Config, load_config
from socialfeat.errors import UserError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from socialfeat.export import Inference
    from socialfeat.live.catalogue import Added, Logged

    ImageLike: TypeAlias = str | os.PathLike[str] | Image.Image  # a path to an image file, or an open PIL image
MAX_K = 1000  # as index.k allows
T = TypeVar("T")


# ------------------------------------------------------------------------------------------------- the run
def open_run(path: str | os.PathLike[str], config: Config | str | os.PathLike[str] | None = None) -> Run:
    """Open a run folder for questions in Python, as the CLI's commands ask them.

    Opening writes nothing: no index, no export and no live store.

    Args:
        path: The run folder, as ``socialfeat run`` or ``demo`` made it.
        config: A :class:`~socialfeat.config.Config`, a YAML config file, or None for the defaults.
            This is the CLI's ``--config``: it sets ``index.k``, ``serve.runtime`` and the like.

    Returns:
        The opened run.

    Raises:
        UserError: The folder is missing or not a folder, or the config file is invalid.
    """
    from socialfeat.artifacts import missing

    run = Path(path)
    if not run.exists():
        raise missing(run / "dataset", run)
    if not run.is_dir():
        raise UserError(str(run), "is a file; expected a run folder")
    cfg = config if isinstance(config, Config) else load_config(config)
    return Run(run, cfg)


class Run:
    """A run folder: its features, neighbours, audiences and recommendations, and its live catalogue.

    Make one with :func:`open_run`, which checks the folder; this constructor does not.
    Every method reads the run afresh. Only the image encoders are kept between calls.

    Args:
        path: The run folder.
        config: The settings every method uses, or None for the CLI's defaults.

    Attributes:
        path: The run folder.
        config: The settings every method uses.
    """

    def __init__(self, path: str | os.PathLike[str], config: Config | None = None) -> None:
        self.path = Path(path)
        self.config = config if config is not None else load_config()
        self._encoders: dict[str, Inference] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # --------------------------------------------------------------------------------------------- features
    def features(self, source: str = "learned", column: str = "features") -> Features:
        """One feature column of the run, every item in file order.

        Args:
            source: ``learned``, ``imagenet``, ``random``, ``meta-class``, ``text`` or ``tags``.
            column: ``features`` (pooled), or a head such as ``head_factors``.

        Returns:
            The item ids and their float32 matrix.

        Raises:
            UserError: The source has no feature file, or the file has no such column.
        """
        from socialfeat.features import read_features
        from socialfeat.index import check_column

        check_column(self.path, source, column)
        ids, matrix = read_features(self.path, source, column)
        return Features(ids, np.ascontiguousarray(matrix, dtype=np.float32), source, column)

    def embed(
        self, images: ImageLike | Sequence[ImageLike], source: str = "learned", column: str = "features"
    ) -> np.ndarray:
        """New images through the run's model, into the space of :meth:`features`.

        The model runs as ``serve.runtime`` says: by default ONNX Runtime on CPU, on the run's export.
        A missing or stale export is written to ``RUN/export`` first, as ``similar --image`` does.
        Without the export extra installed, PyTorch runs the model instead.

        Args:
            images: A path to an image file, a PIL image, or a list of them.
            source: The feature source whose model embeds them.
            column: ``features`` (pooled), or a head such as ``head_factors``.

        Returns:
            A float32 matrix of shape (images, width), one row per image in order.

        Raises:
            UserError: An image cannot be used, or the source has no model or no such column.
        """
        from socialfeat.features import encode_batch
        from socialfeat.freshness import check_inputs, feature_product
        from socialfeat.index import column_of
        from socialfeat.models.heads import head_key

        many = isinstance(images, Sequence) and not isinstance(images, str)
        images = list(images) if many else [images]  # type: ignore[list-item]
        check_inputs(self.path, feature_product(source))  # the model current with what it was trained on
        size = self._encoders[source].image_size if source in self._encoders else self._size(source)
        step = self.config.embed.batch_size
        parts: list[np.ndarray] = []
        for start in range(0, max(len(images), 1), step):
            chunk = images[start : start + step]
            pixels = self._batch(chunk, size)  # a bad image fails before an export is made (~20 s)
            found = self._encoder(source)
            if found.image_size != size:  # features without a recorded size: the model's own, now that it is known
                size = found.image_size
                pixels = self._batch(chunk, size)
            out = encode_batch(found.encoder, pixels)
            named = {("features" if k == "features" else f"head_{head_key(k)}"): v for k, v in out.items()}
            parts.append(np.asarray(column_of(named, column), dtype=np.float32)[: len(chunk)])
        return np.concatenate(parts)

    def model(self, source: str = "learned") -> tuple[torch.nn.Module, Callable[[ImageLike], torch.Tensor]]:
        """The source's PyTorch model in eval mode, and the transform that prepares its input.

        The transform turns an image into uint8 pixels of shape (size, size, 3), as ``embed`` decodes it.
        The model takes a stacked batch of them and normalises inside.
        It returns (pooled features, {target: head output}).

        Args:
            source: ``learned`` (the trained model), ``meta-class``, ``imagenet`` or ``random``.

        Returns:
            The model and its transform, as open_clip's ``create_model_from_pretrained`` returns them.

        Raises:
            UserError: The run has no such model, or its files are damaged.

        Example:
            >>> model, preprocess = run.model()  # doctest: +SKIP
            >>> pooled, heads = model(torch.stack([preprocess("cat.jpg")]))  # doctest: +SKIP
        """
        import torch

        from socialfeat.export import prepared_model

        module, size, _ = prepared_model(self.config, self.path, source)

        def preprocess(image: ImageLike) -> torch.Tensor:
            return torch.from_numpy(np.array(self._pixels(image, size)))  # writable: torch wants it

        return module, preprocess

    # --------------------------------------------------------------------------------------------- search
    def similar(
        self,
        query: Any,
        k: int | None = None,
        source: str | None = None,
        column: str | None = None,
    ) -> Results[Item]:
        """Items nearest to a known item (itself left out), a new image or a vector, by cosine similarity.

        Live items count: added ones can be found, removed ones never are.
        A missing or stale faiss index is built first, as ``socialfeat similar`` does.

        Args:
            query: An item id; an image as a :class:`~pathlib.Path` or a PIL image; or a vector in the
                searched space, such as a row of :meth:`embed`. A ``str`` is always an item id: wrap a file
                name in ``Path``.
            k: How many items to return (default ``index.k``, 10).
            source: The feature source to search (default ``index.source``, ``learned``).
            column: The feature column to search (default ``index.column``, ``features``).

        Returns:
            The nearest items, best first.

        Raises:
            UserError: The item is unknown or removed, the image or vector does not fit, or the source has no
                features.
        """
        from socialfeat.live import readers

        k = self._k(k)
        source = source or self.config.index.source
        column = column or self.config.index.column
        if not _is_image(query) and not isinstance(query, np.ndarray):
            if query is None or query == "":
                raise UserError("ITEM_ID", "expected an item id, an image or a vector")
            rows = readers.similar(self.config, self.path, item_id=query, source=source, k=k, column=column)
            return _results(Item, rows)
        from socialfeat.freshness import check_current, feature_product
        from socialfeat.index import load_index

        check_current(self.path, [feature_product(source)])
        index = load_index(self.path, source, column, self.config)
        if isinstance(query, np.ndarray):
            vector = np.asarray(query, dtype=np.float32).reshape(-1)
            if vector.shape != (index.index.d,):
                raise UserError("query", f"expected a vector of {index.index.d} numbers, got shape {query.shape}")
        else:
            vector = self.embed(query, source, column)[0]
        return _results(Item, readers.near_vector(self.path, index, vector, k, source, column))

    def audience(
        self,
        image: str | os.PathLike[str] | Image.Image | None = None,
        title: str | None = None,
        text: str | None = None,
        tags: str | Sequence[str] | None = None,
        k: int | None = None,
    ) -> Audience:
        """The users a new item would reach, as ``socialfeat recommend --image`` and the explorer's upload find them.

        With a title, text or tags, the run's content model predicts the item's factors.
        With an image alone, the learned model's factors head does.

        Args:
            image: The item's image: a path or a PIL image.
            title: The item's title.
            text: The item's description.
            tags: Its tags, as a list or comma separated.
            k: How many users (and similar items) to return (default ``index.k``, 10).

        Returns:
            The users, the similar items, and the predicted factors.

        Raises:
            UserError: Nothing was given, the image cannot be used, or the run lacks a factors head or content model.
        """
        from socialfeat.data.tags import given_tags
        from socialfeat.live import readers

        k = self._k(k)
        tag_list = given_tags(tags) if isinstance(tags, str) or tags is None else [str(t) for t in tags]
        with _image_file(image) as path:
            found = readers.audience(self.config, self.path, path, k, title=title, text=text, tags=tag_list)
        return Audience(_results(User, found.users), _results(Item, found.similar), found.factors, list(found.notes))

    def recommend(self, user: Any, k: int | None = None, include_seen: bool = False) -> Results[Recommendation]:
        """Items to show a known user, cold items included, ranked by u·v.

        Args:
            user: The user's id; a user first seen in the live catalogue counts.
            k: How many items to return (default ``index.k``, 10).
            include_seen: Keep items the user already engaged with.

        Returns:
            The items, best first, with where their factors came from.

        Raises:
            UserError: The user is unknown, or the run lacks factors.
        """
        from socialfeat.live import readers

        if user is None or user == "":
            raise UserError("user", "expected a user id")
        rows = readers.for_user(self.config, self.path, user, self._k(k), include_seen=include_seen)
        return _results(Recommendation, rows)

    # --------------------------------------------------------------------------------------------- live catalogue
    def add(
        self,
        items: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
        replace: bool = False,
        k: int | None = None,
    ) -> list[Added]:
        """Add new items to the run's live catalogue, as ``socialfeat add`` does.

        The first call creates the live store (``RUN/live``). The items are searchable and recommendable at once.

        Args:
            items: A table of items (CSV, TSV, Parquet or JSON Lines) in ingest's item format.
            image_root: The folder the image paths are relative to (default: the table's folder).
            replace: Replace an item added before whose image changed.
            k: How many users each item's audience lists (default ``index.k``, 10).

        Returns:
            What happened to each item, with its audience.

        Raises:
            UserError: The run is not finished, or the table or an image cannot be used.
        """
        from socialfeat.live.operations import add_items

        return add_items(self.config, self.path, items, image_root, replace=replace, k=self._k(k))

    def log(self, events: str | os.PathLike[str]) -> Logged:
        """Log new events, as ``socialfeat log`` does: the users' vectors are folded in at once.

        Args:
            events: A table of events (CSV, TSV, Parquet or JSON Lines) in ingest's interaction format.

        Returns:
            How many events and users were stored, and which live items turned warm.

        Raises:
            UserError: The run is not finished, or the table cannot be used.
        """
        from socialfeat.live.operations import log_events

        return log_events(self.config, self.path, events)

    def remove(self, ids: Any | Sequence[Any]) -> list[str]:
        """Take items out of search and recommendations, as ``socialfeat remove`` does; their events are kept.

        Args:
            ids: One item id or a list of them.

        Returns:
            The ids removed.

        Raises:
            UserError: No id was given, an id is unknown, or the run is not finished.
        """
        from socialfeat.live.operations import remove_items

        many = isinstance(ids, Sequence) and not isinstance(ids, str)
        return remove_items(self.config, self.path, [str(i) for i in ids] if many else [str(ids)])

    # --------------------------------------------------------------------------------------------- helpers
    def _k(self, k: int | None) -> int:
        if k is None:
            return self.config.index.k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
            raise UserError("k", f"expected a whole number from 1 to {MAX_K}, got {k!r}")
        return int(k)

    def _encoder(self, source: str) -> Inference:
        """The source's encoder, opened once per Run (loading a model and an ONNX session takes a second)."""
        from socialfeat.index import encoder_for  # export's, as the index module calls it for similar --image

        if source not in self._encoders:
            self._encoders[source] = encoder_for(self.config, self.path, source, threads=0)
        return self._encoders[source]

    def _size(self, source: str) -> int:
        """The image size the source was embedded with, read without loading its model."""
        from socialfeat.features import source_config

        return source_config(self.config, self.path, source)[1] or self.config.train.image_size

    def _batch(self, images: list[Any], size: int) -> np.ndarray:
        """Decoded images stacked as one uint8 NHWC batch; one blank image for an empty list (the width)."""
        if not images:
            return np.zeros((1, size, size, 3), np.uint8)
        return np.stack([self._pixels(im, size) for im in images])

    def _pixels(self, image: Any, size: int) -> np.ndarray:
        """One image decoded as ``embed`` decodes it; one line naming the image when it cannot be used."""
        from socialfeat.data.images import ImageError, load_image, square_image

        max_pixels = self.config.train.max_pixels
        try:
            if _is_pil(image):
                return square_image(image, size, max_pixels)
            if not isinstance(image, (str, os.PathLike)):
                raise UserError("image", f"expected a path or a PIL image, got {type(image).__name__}")
            if Path(image).is_dir():
                raise UserError(str(image), "is a folder; expected an image file (JPEG, PNG, WebP, …)")
            return load_image(Path(image), size, max_pixels)
        except ImageError as e:
            raise UserError(str(image) if not _is_pil(image) else "image", f"cannot use this image ({e})") from None


# ------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, kw_only=True)
class Item:
    """One item of a result list, best first.

    Attributes:
        rank: 1 for the best match.
        item_id: The item's id, as the dataset gives it.
        score: Cosine similarity for ``similar``; u·v for ``recommend``.
        title: The item's title, or None.
        image: Absolute path of the item's image, or None.
        live: True for an item added to the live catalogue after the batch run.
    """

    rank: int
    item_id: Any
    score: float
    title: str | None = None
    image: str | None = None
    live: bool = False


@dataclass(frozen=True, kw_only=True)
class Recommendation(Item):
    """An item recommended to a user, with where its factors came from.

    Attributes:
        warm: True when the item has engagement and so its own factors.
        factors: ``true``, ``folded`` (live events) or ``predicted`` (a cold item).
        predicted_by: For a cold item, what predicted its factors (``content``, ``image`` or ``live``).
        split: The item's split (train, valid, test, or live), or None.
        seen: True when the user already engaged with the item.
    """

    warm: bool = False
    factors: str = "true"
    predicted_by: str | None = None
    split: str | None = None
    seen: bool = False


@dataclass(frozen=True, kw_only=True)
class User:
    """One user of an audience, best first.

    Attributes:
        rank: 1 for the user most likely to engage.
        user_id: The user's id, as the dataset gives it.
        score: u·v̂, the user's factors against the item's predicted factors.
    """

    rank: int
    user_id: Any
    score: float


class Results(list[T], Generic[T]):
    """A list of :class:`Item`, :class:`Recommendation` or :class:`User`, best first, printed as a table."""

    @property
    def ids(self) -> list[Any]:
        """The item or user ids, best first.

        Returns:
            One id per result, as the dataset gives it.
        """
        return [r.user_id if isinstance(r, User) else r.item_id for r in self]  # type: ignore[attr-defined]

    @property
    def scores(self) -> np.ndarray:
        """The scores, best first.

        Returns:
            A float32 vector, one score per result.
        """
        return np.array([r.score for r in self], dtype=np.float32)

    def rows(self) -> list[dict[str, Any]]:
        """The results as dictionaries, one per result, keyed by field name.

        Returns:
            One dictionary per result, for a DataFrame or JSON.
        """
        return [asdict(r) for r in self]  # type: ignore[call-overload]

    def __str__(self) -> str:
        if not self:
            return "(no results)"
        user = isinstance(self[0], User)
        head = ["rank", "user id" if user else "item id", "score", *([] if user else ["title"])]
        body = [
            [str(r.rank), str(r.user_id if user else r.item_id), f"{r.score:.4f}", *([] if user else [_cut(r.title)])]
            for r in self
        ]
        widths = [max(len(row[n]) for row in [head, *body]) for n in range(len(head))]
        right = {0, 2}
        return "\n".join(
            "  ".join(
                c.rjust(w) if n in right else c.ljust(w) for n, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in [head, *body]
        )


def _cut(text: str | None, most: int = 48) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= most else text[: most - 1] + "…"


def _results(kind: type[T], rows: Iterable[dict[str, Any]]) -> Results[T]:
    names = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    return Results(kind(**{k: v for k, v in row.items() if k in names}) for row in rows)


@dataclass
class Features:
    """One feature column of a run, as ``embed`` wrote it.

    Attributes:
        ids: The item ids, one per row of ``matrix``.
        matrix: The vectors, float32, of shape (items, width).
        source: The feature source (``learned``, ``imagenet``, ``random`` …).
        column: The column (``features`` for pooled features, ``head_<target>`` for a head).
    """

    ids: list[Any]
    matrix: np.ndarray
    source: str
    column: str = "features"

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        n, d = self.matrix.shape
        return f"Features({self.source}/{self.column}: {n:,} items × {d:,})"


@dataclass
class Audience:
    """Who a new item would reach, and the items most like its image.

    Attributes:
        users: The users with the largest u·v̂, best first.
        similar: The items nearest to the image under the learned features (empty without an image).
        factors: v̂, the item's predicted factors.
        notes: Which content sources scored the item, when the content model did.
    """

    users: Results[User]
    similar: Results[Item]
    factors: np.ndarray
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return str(self.users)


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "getexif")


def _is_image(value: Any) -> bool:
    """A query that is an image: a Path or a PIL image (a str is an item id)."""
    return isinstance(value, os.PathLike) or _is_pil(value)


@contextlib.contextmanager
def _image_file(image: Any) -> Iterator[Path | None]:
    """A path for an image: the path given, or a PIL image saved losslessly to a temporary PNG outside the run.

    ``recommend --image`` reads a file; a PNG keeps the pixels, the alpha and the EXIF orientation.
    """
    if image is None or not _is_pil(image):
        if image is not None and not isinstance(image, (str, os.PathLike)):
            raise UserError("image", f"expected a path or a PIL image, got {type(image).__name__}")
        yield None if image is None else Path(image)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="socialfeat-image-") as folder:
        path = Path(folder) / "image.png"
        im = image if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16") else image.convert("RGB")
        im.save(path, format="PNG", compress_level=1, exif=image.getexif())
        yield path


__all__ = ["Audience", "Features", "Item", "Recommendation", "Results", "Run", "User", "open_run"]
