"""What the explorer refuses, by the HTTP status each refusal becomes (the app maps them; see ``app.py``)."""

from __future__ import annotations

READ_ONLY = "the explorer is read-only; start it with --writable"


class NotFound(Exception):
    """An id or a feature source the run does not have, or an item removed from it (HTTP 404)."""


class BadImage(Exception):
    """An upload that is not a usable image (HTTP 400)."""


class BadField(Exception):
    """An upload's title, text or tags that the run cannot use (HTTP 400); ``field`` names it for the page."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Conflict(Exception):
    """A write that contradicts the catalogue: an id taken by a batch item, or other image bytes without
    ``replace`` (HTTP 409)."""


class ReadOnly(Exception):
    """A write to an explorer started without ``--writable`` (HTTP 403)."""
