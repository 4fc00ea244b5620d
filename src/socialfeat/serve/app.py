"""The web explorer's HTTP layer (FastAPI): a JSON API over :class:`Explorer`, the page, and the guards a server
that accepts uploads from strangers needs — a body cap checked before and while reading, decoding off the event
loop behind a small limiter, bounded parameters, and one-line JSON errors instead of tracebacks.

No ``from __future__ import annotations`` here: FastAPI must evaluate the route annotations, which use the bounds
of the run's config, inside ``create_app``.
"""

import functools
import hmac
import logging
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from socialfeat import __version__
from socialfeat.errors import UserError
from socialfeat.live.tables import NewEvent, check_event, check_id, check_time, check_value
from socialfeat.serve.errors import READ_ONLY, BadField, BadImage, Conflict, NotFound, ReadOnly
from socialfeat.serve.explorer import Explorer

log = logging.getLogger(__name__)

STATIC = Path(str(resources.files("socialfeat.serve") / "static"))
# The page builds its DOM from data (textContent, never innerHTML), loads nothing from elsewhere, and is not framed.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
Source = Literal["learned", "imagenet"]
FIELD_CHARS = {"title": 500, "text": 10_000, "tags": 5_000}  # longer is not a title; it would only cost encoder time
UPLOAD_FIELDS = ("image", *FIELD_CHARS)  # the form fields of an upload, each given at most once
ADD_FIELDS = (*UPLOAD_FIELDS, "item_id", "replace")
MAX_EVENTS = 100_000  # per request; the body cap (serve.max_upload_bytes) bounds it too
NO_TOKEN = "a write needs the header 'Authorization: Bearer <token>' with the token the explorer was started with"


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


Id = StrictStr | StrictInt


class Event(BaseModel):
    """One event: who, on which item, what kind (``ingest.default_event`` when left out), and optionally a count or
    weight and a time (ISO 8601 text or epoch seconds); weighted by the run's event weights, as ingest does."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_id: Id
    event: StrictStr | None = None
    value: StrictFloat | StrictInt | None = Field(None, description="a count or weight ≥ 0")
    time: StrictStr | StrictFloat | StrictInt | None = Field(None, description="ISO 8601 text or epoch seconds")


class Events(BaseModel):
    """Events to log in one transaction: all are stored, or none."""

    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


def new_events(body: Events, default_event: str) -> list[NewEvent]:
    """The events checked as ``socialfeat log`` checks a table's rows (rows counted from 1)."""
    out = []
    for n, e in enumerate(body.events, start=1):
        out.append(
            NewEvent(
                check_id(str(e.user_id), "events", "user_id", n),
                check_id(str(e.item_id), "events", "item_id", n),
                check_event(e.event, default_event, "events", "event", n),
                check_value(e.value, "events", "value", n),
                check_time(e.time, "events", "time", n),
                row=n,
            )
        )
    return out


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


def create_app(explorer: Explorer, token: str | None = None) -> FastAPI:
    """The FastAPI application over a loaded explorer; its limits come from the run's ``serve`` config. The write
    endpoints answer 403 unless ``serve.writable``; with a ``token`` they also need ``Authorization: Bearer``."""
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
    bearer = HTTPBearer(auto_error=False, description="The token the explorer was started with (writes only).")

    def writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        """Writes only on a writable explorer, and with the token when it has one (compared in constant time)."""
        if not explorer.live.writable:
            raise ReadOnly(READ_ONLY)
        if token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, token.encode()):
            raise HTTPException(401, NO_TOKEN, headers={"WWW-Authenticate": "Bearer"})

    Write = [Depends(writer)]

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(BadImage)
    async def _bad_image(_: Request, exc: BadImage) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(BadField)
    async def _bad_field(_: Request, exc: BadField) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=400)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(ReadOnly)
    async def _read_only(_: Request, exc: ReadOnly) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(UserError)
    async def _user_error(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

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
        split: Annotated[
            Literal["all", "warm", "cold", "live"], Query(description="cold: never trained on; live: added since.")
        ] = "all",
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
    def thumbnail(request: Request, item_id: ItemId, size: Annotated[int, Query(ge=32, le=512)] = 160) -> Response:
        """A square JPEG of the item (looked up by id in the run's own table or live store)."""
        tag = explorer.thumbnail_tag(item_id)  # a live item's image may be replaced: its sha256 keys the caches
        if not tag:
            headers = {"Cache-Control": "public, max-age=86400"}
        else:
            headers = {"Cache-Control": "no-cache", "ETag": f'"{tag[:32]}-{size}"'}
            if request.headers.get("if-none-match") == headers["ETag"]:
                return Response(status_code=304, headers=headers)
        return Response(_thumbnail(item_id, tag, size), media_type="image/jpeg", headers=headers)

    @functools.lru_cache(maxsize=4096)
    def _thumbnail(item_id: str, tag: str, size: int) -> bytes:
        return explorer.thumbnail(item_id, size)

    @app.get("/api/items/{item_id:id}", tags=["items"])
    def item(item_id: ItemId, k: K = 10) -> dict[str, Any]:
        """One item: title, tags, warm/cold/live, audience size, and for a cold or live item the users it is
        predicted to reach."""
        return explorer.item_page(item_id, k)

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

    # ------------------------------------------------------------------------------------------------ writes
    @app.post("/api/items", tags=["live"], dependencies=Write, summary="Add an item to the live catalogue")
    async def add_item(
        request: Request,
        image: Annotated[
            UploadFile, File(description="The item's image (JPEG, PNG, WebP, GIF…), checked by decoding.")
        ],
        item_id: Annotated[str, Form(min_length=1, max_length=1000, description="The new item's id.")],
        title: Annotated[str | None, Form(max_length=FIELD_CHARS["title"], description="Optional: its title.")] = None,
        text: Annotated[
            str | None, Form(max_length=FIELD_CHARS["text"], description="Optional: its description.")
        ] = None,
        tags: Annotated[
            str | None, Form(max_length=FIELD_CHARS["tags"], description="Optional: its tags, separated by , or |.")
        ] = None,
        replace: Annotated[bool, Form(description="Replace an item added before with other image bytes.")] = False,
        k: K = 10,
    ) -> dict[str, Any]:
        """Add an item: embedded under every feature source, its factors predicted (content model, else the image
        head), stored durably; searchable and recommendable at once. Returns its status (added, replaced or
        unchanged: the same id with the same bytes), what predicted its factors, and its top-k predicted
        audience. Other bytes under a taken id are a 409 unless ``replace``."""
        form = await request.form()
        for name in ADD_FIELDS:
            if len(form.getlist(name)) > 1:
                raise BadField(name, f"sent {len(form.getlist(name))} times; send one {name} per item")
        data = await image.read()
        if not data:
            raise HTTPException(400, "empty upload: the file has no content")
        item = explorer.new_item(item_id, title, text, tags)
        run = functools.partial(explorer.add_item, data, item, replace, k)
        return await anyio.to_thread.run_sync(run, limiter=limiter)

    @app.delete("/api/items/{item_id:id}", tags=["live"], dependencies=Write, summary="Remove an item")
    def remove_item(item_id: ItemId) -> dict[str, Any]:
        """Take an item (batch or live) out of search, listings and recommendations; its events are kept."""
        return explorer.live.remove(item_id)

    @app.post("/api/events", tags=["live"], dependencies=Write, summary="Log events")
    def log_events(body: Events) -> dict[str, Any]:
        """Store events (all or none) and fold in the users and live items they touch: a user's recommendations
        change at once, and a user first seen here gets a vector from their first event."""
        return explorer.live.log(new_events(body, explorer.config.ingest.default_event))

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
