"""The web explorer's HTTP layer (FastAPI): a JSON API over :class:`Explorer`, the page, and the guards a server
that accepts uploads from strangers needs — a body cap checked before and while reading, decoding off the event
loop behind a small limiter, bounded parameters, and one-line JSON errors instead of tracebacks.

No ``from __future__ import annotations`` here: FastAPI must evaluate the route annotations, which use the bounds
of the run's config, inside ``create_app``.
"""

import functools
import logging
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socialfeat import __version__
from socialfeat.serve.explorer import BadField, BadImage, Explorer, NotFound

log = logging.getLogger(__name__)

STATIC = Path(str(resources.files("socialfeat.serve") / "static"))
# The page builds its DOM from data (textContent, never innerHTML), loads nothing from elsewhere, and is not framed.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
Source = Literal["learned", "imagenet"]
FIELD_CHARS = {"title": 500, "text": 10_000, "tags": 5_000}  # longer is not a title; it would only cost encoder time
UPLOAD_FIELDS = ("image", *FIELD_CHARS)  # the form fields of an upload, each given at most once


class AnyId(Convertor[str]):
    """A path parameter that is any text, newlines included: Starlette's ``path`` stops at a newline, so an id
    holding one (``%0A`` in the URL) could not be addressed. Registered as ``{name:id}``."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", AnyId())


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413: at once when Content-Length says so, and while reading
    when the body is chunked or its length was a lie — so an upload never fills memory or disk."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> str:
        return f"request body too large: at most {self.max_bytes:,} bytes are accepted"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status, detail = (413, self._too_large()) if length.isdigit() else (400, "invalid Content-Length")
            await JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})(
                scope, receive, send
            )
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large())  # FastAPI passes HTTPExceptions from body parsing on
            return message

        await self.app(scope, limited, send)


def _one_line(exc: RequestValidationError) -> str:
    """The request's faults as one line a client's user can act on, not as the validator words them."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "body"))
        msg = str(e.get("msg", "invalid"))
        if "Expected UploadFile" in msg:  # a text form field (or a part without a filename) where a file belongs
            parts.append(f"field '{loc}' must be a file upload (a multipart/form-data part with a filename), not text")
        else:
            parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def create_app(explorer: Explorer) -> FastAPI:
    """The FastAPI application over a loaded explorer; its limits come from the run's ``serve`` config."""
    cfg = explorer.config.serve
    app = FastAPI(
        title="socialfeat explorer",
        version=__version__,
        description=f"Items, neighbours and predicted audiences of the run `{explorer.config.name}`.",
        docs_url=None,  # served below from the packaged Swagger UI: the default one loads it from a CDN
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=cfg.max_upload_bytes)
    limiter = anyio.CapacityLimiter(cfg.inference_threads)
    K = Annotated[int, Query(ge=1, le=cfg.max_k, description=f"How many results (1–{cfg.max_k}).")]
    ItemId = Annotated[str, PathParam(description="An item id of the run.")]

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(BadImage)
    async def _bad_image(_: Request, exc: BadImage) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(BadField)
    async def _bad_field(_: Request, exc: BadField) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path in ("/", "/index.html") or request.url.path.startswith("/static/"):
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        return response

    # ------------------------------------------------------------------------------------------------- API
    @app.get("/api/health", tags=["run"])
    def health() -> dict[str, Any]:
        """Liveness and what the run offers: item and user counts, feature sources, whether audiences work."""
        return explorer.health()

    @app.get("/api/content", tags=["run"])
    def content() -> dict[str, Any]:
        """The run's content model: its sources and fusion weights, the upload fields it reads, its tag vocabulary."""
        return explorer.content_info(vocabulary=True)

    @app.get("/api/items", tags=["items"])
    def items(
        q: Annotated[str, Query(max_length=200, description="Text in the id or title (case-insensitive).")] = "",
        split: Annotated[Literal["all", "warm", "cold"], Query(description="cold: never trained on.")] = "all",
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=cfg.page_size * 10)] = cfg.page_size,
    ) -> dict[str, Any]:
        """A page of items, filtered by text and by warm/cold."""
        return explorer.items(q, split, offset, limit)

    @app.get("/api/items/{item_id:id}/similar", tags=["items"])
    def similar(item_id: ItemId, k: K = 12, source: Source = "learned") -> dict[str, Any]:
        """The k items nearest to an item under the learned (engagement) or ImageNet features."""
        return {"item": item_id, "source": source, "similar": explorer.similar(item_id, source, k)}

    @app.get("/api/items/{item_id:id}/thumbnail", tags=["items"], response_class=Response)
    def thumbnail(item_id: ItemId, size: Annotated[int, Query(ge=32, le=512)] = 160) -> Response:
        """A square JPEG of the item (looked up by id in the run's own table)."""
        data = _thumbnail(item_id, size)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    @functools.lru_cache(maxsize=4096)
    def _thumbnail(item_id: str, size: int) -> bytes:
        return explorer.thumbnail(item_id, size)

    @app.get("/api/items/{item_id:id}", tags=["items"])
    def item(item_id: ItemId, k: K = 10) -> dict[str, Any]:
        """One item: title, tags, warm/cold, audience size, and for a cold item the users it is predicted to reach."""
        row = explorer.row(item_id)
        return {**explorer.item(row), "predicted_audience": explorer.predicted_audience(item_id, k)}

    @app.post("/api/upload", tags=["upload"])
    async def upload(
        request: Request,
        image: Annotated[UploadFile, File(description="An image file (JPEG, PNG, WebP, GIF…), checked by decoding.")],
        k: K = 12,
        source: Annotated[list[Source], Query(description="Feature sources to search; repeat for both.")] = [  # noqa: B006
            "learned"
        ],
        title: Annotated[
            str | None, Form(max_length=FIELD_CHARS["title"], description="Optional: the item's title (content model).")
        ] = None,
        text: Annotated[
            str | None, Form(max_length=FIELD_CHARS["text"], description="Optional: its description (content model).")
        ] = None,
        tags: Annotated[
            str | None, Form(max_length=FIELD_CHARS["tags"], description="Optional: its tags, comma separated.")
        ] = None,
    ) -> dict[str, Any]:
        """A new image: its nearest items under each source and the users predicted to engage with it. With a
        title, text or tags, the audience comes from the run's content model (see /api/content)."""
        form = await request.form()  # parsed once already: FastAPI reads an empty field as absent, this does not
        for name in UPLOAD_FIELDS:  # FastAPI would use one of two images (or titles) silently
            if len(form.getlist(name)) > 1:
                raise BadField(name, f"sent {len(form.getlist(name))} times; send one {name} per upload")
        data = await image.read()
        if not data:
            raise HTTPException(400, "empty upload: the file has no content")
        fields = {}
        for name, value in (("title", title), ("text", text), ("tags", tags)):
            if value is not None or form.get(name) == "":  # sent empty: the explorer says so, as the CLI does
                fields[name] = value or ""
        run = functools.partial(explorer.upload, data, k, list(source), **fields)
        return await anyio.to_thread.run_sync(run, limiter=limiter)  # off the event loop, at most N at once

    @app.get("/api/users", tags=["users"])
    def users(q: Annotated[str, Query(max_length=200)] = "", limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
        """User ids containing ``q``."""
        return {"users": explorer.users(q, limit)}

    @app.get("/api/users/{user_id:id}/recommendations", tags=["users"])
    def recommendations(
        user_id: Annotated[str, PathParam(description="A user id of the run.")], k: K = 12, include_seen: bool = False
    ) -> dict[str, Any]:
        """Items for a user, warm ones by their factors and cold ones by the factors predicted from their image."""
        return {"user": user_id, "items": explorer.recommendations(user_id, k, include_seen)}

    @app.get("/api/recommendations", tags=["users"])
    def recommendations_by_query(
        user: Annotated[str, Query(description="A user id of the run: any text, '..' and '/' included.")],
        k: K = 12,
        include_seen: bool = False,
    ) -> dict[str, Any]:
        """The same as ``/api/users/{id}/recommendations``, for every id: a path cannot carry ``..`` or ``.``
        (clients resolve them as folders), a query parameter carries any text. The page uses this form."""
        return {"user": user, "items": explorer.recommendations(user, k, include_seen)}

    # ------------------------------------------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="socialfeat explorer — API",
            swagger_js_url="/swagger/swagger-ui-bundle.js",
            swagger_css_url="/swagger/swagger-ui.css",
            swagger_favicon_url="/swagger/favicon-32x32.png",
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    swagger = _swagger_assets()
    if swagger is not None:
        app.mount("/swagger", StaticFiles(directory=swagger), name="swagger")
    return app


def _swagger_assets() -> Path | None:
    """The Swagger UI files shipped by the swagger-ui-bundle package, so /docs works without internet."""
    try:
        import swagger_ui_bundle
    except ImportError:
        log.warning("swagger-ui-bundle is not installed; /docs will not render (the API works)")
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)
