"""The explorer's JSON API through FastAPI's TestClient: answers checked against the library functions they wrap,
and every hostile input the issue lists (oversized bodies, bombs, corrupt and fake images, unknown ids, bounds)."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from environment import need_module
from PIL import Image

from socialfeat.config import load_config
from socialfeat.index import similar as library_similar
from socialfeat.recommend import audience as library_audience
from socialfeat.recommend import for_user


def png(size: tuple[int, int] = (48, 40), colour: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def bomb_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels but carries (almost) no data: the classic bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def items_of(run: Path) -> list[dict]:
    return pq.read_table(run / "dataset" / "items.parquet", columns=["item_id", "image", "title"]).to_pylist()


def item_image(run: Path, item_id: str) -> Path:
    from socialfeat.report.gallery import Thumbnails

    thumbs = Thumbnails(run, 32)
    return thumbs.root / thumbs.images[item_id]


def cold_item(explorer) -> str:  # noqa: ANN001
    return next(k for k, s in zip(explorer.keys, explorer.split, strict=True) if s == "cold")


def upload(client, data: bytes, name: str = "new.png", ctype: str = "image/png", **params):  # noqa: ANN001, ANN003, ANN201
    return client.post("/api/upload", params=params, files={"image": (name, data, ctype)})


def detail(response) -> str:  # noqa: ANN001
    body = response.json()
    assert isinstance(body["detail"], str) and "\n" not in body["detail"], body
    return body["detail"]


# ------------------------------------------------------------------------------------------------ answers
def test_health_describes_the_run(client, explorer) -> None:  # noqa: ANN001
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["items"] == len(explorer.keys) > 0
    assert set(h["sources"]) == {"learned", "imagenet"} and h["audience"] is True
    assert h["cold"] > 0 and h["warm"] > 0 and h["users"] > 0


def test_items_page_search_and_split(client, served_run: Path) -> None:  # noqa: ANN001
    everything = client.get("/api/items", params={"limit": 600}).json()
    assert everything["total"] == len(items_of(served_run)) == len(everything["items"])
    page = client.get("/api/items", params={"offset": 10, "limit": 5}).json()
    assert [i["id"] for i in page["items"]] == [i["id"] for i in everything["items"][10:15]]
    title = everything["items"][3]["title"]
    found = client.get("/api/items", params={"q": title.upper()}).json()
    assert found["total"] >= 1 and all(title.lower() in i["title"].lower() for i in found["items"])
    cold = client.get("/api/items", params={"split": "cold", "limit": 600}).json()
    assert 0 < cold["total"] < everything["total"] and all(i["split"] == "cold" for i in cold["items"])


def test_item_details_and_cold_audience(client, explorer) -> None:  # noqa: ANN001
    item = cold_item(explorer)
    body = client.get(f"/api/items/{item}", params={"k": 7}).json()
    assert body["id"] == item and body["split"] == "cold" and isinstance(body["tags"], list)
    assert len(body["predicted_audience"]) == 7
    scores = [u["score"] for u in body["predicted_audience"]]
    assert scores == sorted(scores, reverse=True)
    warm = next(k for k, s in zip(explorer.keys, explorer.split, strict=True) if s == "warm")
    assert client.get(f"/api/items/{warm}").json()["predicted_audience"] is None


@pytest.mark.parametrize("source", ["learned", "imagenet"])
def test_similar_by_id_matches_the_library(client, served_run: Path, explorer, source: str) -> None:  # noqa: ANN001
    item = cold_item(explorer)
    body = client.get(f"/api/items/{item}/similar", params={"k": 8, "source": source}).json()
    got = [r["id"] for r in body["similar"]]
    want = library_similar(load_config(None, []), served_run, item_id=item, source=source, k=8)
    assert got == [str(r["item_id"]) for r in want] and item not in got
    np.testing.assert_allclose([r["score"] for r in body["similar"]], [r["score"] for r in want], atol=1e-4)


def test_upload_finds_the_image_itself_and_its_audience(client, served_run: Path, explorer) -> None:  # noqa: ANN001
    item = cold_item(explorer)
    path = item_image(served_run, item)
    r = upload(client, path.read_bytes(), name="anything.bin", ctype="application/octet-stream", k=5,
               source=["learned", "imagenet"])  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    for source in ("learned", "imagenet"):
        top = body["similar"][source][0]
        assert top["id"] == item and top["score"] > 0.999  # same decoding and model as embed: the same vector
    want = library_audience(load_config(None, []), served_run, path, k=5)
    assert [u["user_id"] for u in body["audience"]] == [u["user_id"] for u in want.users]


def test_uploads_answer_alike_on_both_runtimes_and_say_where_the_time_went(served_run: Path, explorer) -> None:  # noqa: ANN001
    need_module("onnxruntime", "the export extra is not installed")
    from socialfeat.serve.explorer import Explorer

    eager = Explorer(load_config(None, ["serve.runtime=torch"]), served_run)
    assert eager.health()["runtime"] == "torch" and explorer.health()["runtime"] == "onnx"
    assert {s["runtime"] for s in explorer.health()["sources"].values()} == {"onnx"}
    data = item_image(served_run, cold_item(explorer)).read_bytes()
    a, b = explorer.upload(data, 6, ["learned", "imagenet"]), eager.upload(data, 6, ["learned", "imagenet"])
    for source in ("learned", "imagenet"):
        assert [r["id"] for r in a["similar"][source]] == [r["id"] for r in b["similar"][source]]
        assert [r["score"] for r in a["similar"][source]] == pytest.approx(
            [r["score"] for r in b["similar"][source]], abs=1e-4
        )
    assert [u["user_id"] for u in a["audience"]] == [u["user_id"] for u in b["audience"]]
    steps = a["steps"]
    assert {"forward learned", "forward imagenet", "search learned", "search imagenet", "audience"} <= set(steps)
    assert sum(1 for k in steps if k.startswith("decode")) == len({s.image_size for s in explorer.spaces.values()})
    assert sum(steps.values()) <= a["ms"] + 1


def test_upload_without_learned_source_says_why_there_is_no_audience(client) -> None:  # noqa: ANN001
    body = upload(client, png(), source="imagenet").json()
    assert body["audience"] is None and "learned" in body["audience_note"] and set(body["similar"]) == {"imagenet"}


def test_recommendations_match_the_library(client, served_run: Path, explorer) -> None:  # noqa: ANN001
    user = explorer.recommender.user_ids[3]
    body = client.get(f"/api/users/{user}/recommendations", params={"k": 10}).json()
    want = for_user(load_config(None, []), served_run, user, k=10)
    assert [r["id"] for r in body["items"]] == [str(r["item_id"]) for r in want]
    assert not any(r["seen"] for r in body["items"])
    assert {r["factors"] for r in body["items"]} <= {"true", "predicted"}
    assert user in client.get("/api/users", params={"q": user}).json()["users"]


def test_thumbnail_by_id(client, explorer) -> None:  # noqa: ANN001
    r = client.get(f"/api/items/{explorer.keys[0]}/thumbnail", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)


def test_page_docs_and_openapi(client) -> None:  # noqa: ANN001
    page = client.get("/")
    assert page.status_code == 200 and "socialfeat explorer" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/swagger/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    assert client.get("/swagger/swagger-ui-bundle.js").status_code == 200  # packaged: works air-gapped
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/upload", "/api/health", "/api/items/{item_id}/similar"} <= set(paths)


# ----------------------------------------------------------------------------------------------- hostile
@pytest.mark.parametrize(
    "path",
    [
        "/api/items/nope",
        "/api/items/nope/similar",
        "/api/items/nope/thumbnail",
        "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
        "/api/items/%2Fetc%2Fpasswd/thumbnail",
        "/api/users/nope/recommendations",
    ],
)
def test_unknown_ids_are_404_and_never_paths(client, path: str) -> None:  # noqa: ANN001
    r = client.get(path)
    assert r.status_code == 404 and "unknown" in detail(r)


@pytest.mark.parametrize(
    ("params", "word"),
    [({"k": 0}, "k"), ({"k": 101}, "k"), ({"k": "lots"}, "k"), ({"source": "random"}, "source")],
)
def test_parameters_are_bounded(client, explorer, params: dict, word: str) -> None:  # noqa: ANN001
    r = client.get(f"/api/items/{explorer.keys[0]}/similar", params=params)
    assert r.status_code == 422 and detail(r).startswith(word)
    assert client.get("/api/items", params={"limit": 10**6}).status_code == 422
    assert client.get(f"/api/items/{explorer.keys[0]}/thumbnail", params={"size": 5000}).status_code == 422


def test_body_over_the_cap_is_413_before_reading(limited_client) -> None:  # noqa: ANN001
    with limited_client(max_upload_bytes=4096) as c:
        r = upload(c, png((200, 200), (1, 2, 3)) + bytes(8192))
        assert r.status_code == 413 and "at most 4,096 bytes" in detail(r)


def test_chunked_body_over_the_cap_is_413_while_reading(limited_client) -> None:  # noqa: ANN001
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'.encode()

    def body():  # noqa: ANN202 - no Content-Length: the limit must hold while streaming
        yield head
        for _ in range(64):
            yield bytes(1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    with limited_client(max_upload_bytes=8192) as c:
        r = c.post("/api/upload", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413 and "too large" in detail(r)


def test_decompression_bomb_is_400_without_decoding(client) -> None:  # noqa: ANN001
    r = upload(client, bomb_header(100_000, 100_000))  # 10 gigapixels declared in a 100-byte file
    assert r.status_code == 400 and "too large" in detail(r) and "at most 40,000,000 pixels" in detail(r)


def test_pixel_cap_is_configurable(limited_client) -> None:  # noqa: ANN001
    with limited_client(max_pixels=1000) as c:
        r = upload(c, png((64, 64)))
        assert r.status_code == 400 and "at most 1,000 pixels" in detail(r)


@pytest.mark.parametrize(
    ("data", "name", "ctype", "word"),
    [
        (png()[:-30], "cut.png", "image/png", "truncated"),
        (b"GIF89a" + bytes(range(256)) * 4, "x.gif", "image/gif", "image"),
        (b"just some text, no picture here\n" * 10, "photo.jpg", "image/jpeg", "not an image"),
        (b"\xff\xd8\xff\xe0" + bytes(500), "broken.jpg", "image/jpeg", "image"),
        (b"", "empty.png", "image/png", "empty"),
    ],
)
def test_corrupt_or_fake_images_are_400(client, data: bytes, name: str, ctype: str, word: str) -> None:  # noqa: ANN001
    r = upload(client, data, name=name, ctype=ctype)
    assert r.status_code == 400 and word in detail(r)


def test_content_decides_not_the_name_or_type(client) -> None:  # noqa: ANN001
    r = upload(client, png(), name="notes.txt", ctype="text/plain", k=3)
    assert r.status_code == 200 and len(r.json()["similar"]["learned"]) == 3


def test_missing_file_field_is_422(client) -> None:  # noqa: ANN001
    r = client.post("/api/upload", data={"other": "x"})
    assert r.status_code == 422 and "image" in detail(r)


@pytest.mark.parametrize(
    "send",
    [
        {"data": {"image": "just text"}},  # a text form field
        {"files": {"image": ("", png(), "image/png")}},  # a file part without a filename reads as text too
    ],
)
def test_an_image_sent_as_text_is_told_to_send_a_file(client, send: dict) -> None:  # noqa: ANN001
    r = client.post("/api/upload", **send)
    assert r.status_code == 422
    assert detail(r).startswith("field 'image' must be a file upload"), detail(r)
    assert "UploadFile" not in detail(r) and "class" not in detail(r)


def test_a_slow_upload_does_not_stall_other_requests(explorer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Inference runs in a worker thread: while one upload takes 1.5 s, health still answers at once."""
    import httpx

    from socialfeat.serve.app import create_app

    def slow(data: bytes, k: int, sources: list[str]) -> dict:
        time.sleep(1.5)  # a blocking call, like a forward pass: on the event loop it would freeze every request
        return {"similar": {}, "audience": None, "audience_note": None, "ms": 1500.0}

    monkeypatch.setattr(explorer, "upload", slow)
    app = create_app(explorer)

    async def scenario() -> tuple[float, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            t0 = time.perf_counter()
            up = asyncio.create_task(c.post("/api/upload", files={"image": ("a.png", png(), "image/png")}))
            await asyncio.sleep(0.2)
            h = await c.get("/api/health")
            health_done = time.perf_counter() - t0
            assert h.status_code == 200 and (await up).status_code == 200
            return health_done, time.perf_counter() - t0

    health_done, upload_done = asyncio.run(scenario())
    assert health_done < 1.0 < 1.4 < upload_done


# ------------------------------------------------------------------------------ title, text and tags (issue 16)
TITLE, TAGS = "Vivid mood", "mono, thirds"


def described_upload(client, data: bytes, fields: dict[str, str], **params):  # noqa: ANN001, ANN003, ANN201
    return client.post("/api/upload", params=params, data=fields, files={"image": ("new.png", data, "image/png")})


def refit(explorer, embedded_run: Path, dest: Path, sets: list[str]):  # noqa: ANN001, ANN201
    """A copy of ``explorer`` whose content model is another one, fit on a copy of the same run (same factors)
    with ``sets``: a cheap way to serve models with other sources without loading the encoders again."""
    import copy
    import shutil

    from socialfeat.content import ContentModel, content

    shutil.copytree(embedded_run, dest)
    content(load_config(None, ["content.lightfm=false", *sets]), dest)
    other = copy.copy(explorer)
    other.content = ContentModel(dest)
    return other


@pytest.fixture(scope="module")
def narrow_client(content_explorer, embedded_run: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    """A content model fit on the learned image features alone: it reads no title, text or tags."""
    from fastapi.testclient import TestClient

    from socialfeat.serve.app import create_app

    dest = tmp_path_factory.mktemp("narrow") / "run"
    with TestClient(create_app(refit(content_explorer, embedded_run, dest, ["content.sources=[learned]"]))) as c:
        yield c


@pytest.fixture(scope="module")
def imagenet_tags(content_explorer, embedded_run: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    """A late-fusion content model over ImageNet features and tags: its image source is not the learned one."""
    from fastapi.testclient import TestClient

    from socialfeat.serve.app import create_app

    dest = tmp_path_factory.mktemp("imagenet-tags") / "run"
    sets = ["content.sources=[imagenet,tags]", "content.image=imagenet", "content.joint=false"]
    with TestClient(create_app(refit(content_explorer, embedded_run, dest, sets))) as c:
        yield c, dest


def test_health_reports_the_content_model(content_client, client, content_run: Path) -> None:  # noqa: ANN001
    from socialfeat.content import ContentModel

    model = ContentModel(content_run)
    c = content_client.get("/api/health").json()["content"]
    assert c["present"] is True and c["fields"] == ["title", "text", "tags"]
    assert c["sources"] == list(model.weights) and set(c["sources"]) <= set(c["fit_on"]) == {"learned", "text", "tags"}
    assert c["kind"] == model.meta.get("kind", "fusion") and c["image_source"] == "learned"
    assert c["tag_vocabulary"] == len(model.vocabulary or []) > 0 and "vocabulary" not in c  # health stays small
    assert content_client.get("/api/content").json()["vocabulary"] == model.vocabulary
    none = client.get("/api/health").json()["content"]
    assert none["present"] is False and none["fields"] == [] and "`socialfeat content RUN`" in none["note"]


def test_upload_with_title_and_tags_scores_as_recommend(content_client, content_run: Path, content_explorer) -> None:  # noqa: ANN001
    from socialfeat.content import ContentModel

    path = item_image(content_run, cold_item(content_explorer))
    data = path.read_bytes()
    plain = upload(content_client, data, k=8).json()
    assert set(plain) == {"similar", "audience", "audience_note", "ms", "steps"}  # no field: as before, no content
    r = described_upload(content_client, data, {"title": TITLE, "tags": TAGS}, k=8)
    assert r.status_code == 200, r.text
    body = r.json()
    want = library_audience(load_config(None, []), content_run, path, k=8, title=TITLE, tags=["mono", "thirds"])
    assert [u["user_id"] for u in body["audience"]] == [u["user_id"] for u in want.users]
    np.testing.assert_allclose([u["score"] for u in body["audience"]], [u["score"] for u in want.users], atol=1e-4)
    assert body["content"]["notes"] == want.notes
    scores = [u["score"] for u in plain["audience"]]
    assert [u["user_id"] for u in body["audience"]] != [u["user_id"] for u in plain["audience"]] or not np.allclose(
        [u["score"] for u in body["audience"]], scores, atol=1e-3
    )
    model = ContentModel(content_run)
    c = body["content"]
    assert c["sources"] == [b for b in model.weights if b in ("text", "tags", model.image_source)]
    assert model.image_source in c["sources"] and c["model"] == model.meta.get("kind", "fusion")
    if c["model"] == "fusion":  # each source's share; a joint ridge has none to give
        assert set(c["weights"]) == set(c["sources"]) and sum(c["weights"].values()) == pytest.approx(1, abs=1e-3)
    else:
        assert c["weights"] is None
    assert [x["id"] for x in body["similar"]["learned"]] == [x["id"] for x in plain["similar"]["learned"]]
    forwards = [s for s in body["steps"] if s.startswith("forward")]  # the image went through each model once
    assert sorted(forwards) == sorted({"forward learned", f"forward {model.image_source}"})
    assert {"content", "audience"} <= set(body["steps"]) and body["audience_note"] is None


def test_the_content_models_image_source_is_embedded_once_even_when_not_searched(imagenet_tags, explorer) -> None:  # noqa: ANN001
    client, run = imagenet_tags
    path = item_image(run, cold_item(explorer))
    r = described_upload(client, path.read_bytes(), {"tags": TAGS}, k=6, source="learned")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["similar"]) == {"learned"}  # searched as asked; imagenet only fed the content model
    assert sorted(s for s in body["steps"] if s.startswith("forward")) == ["forward imagenet", "forward learned"]
    c = body["content"]
    assert c["model"] == "fusion" and c["sources"][0] == "imagenet" and set(c["weights"]) == set(c["sources"])
    want = library_audience(load_config(None, []), run, path, k=6, tags=["mono", "thirds"])
    assert [u["user_id"] for u in body["audience"]] == [u["user_id"] for u in want.users]
    np.testing.assert_allclose([u["score"] for u in body["audience"]], [u["score"] for u in want.users], atol=1e-4)
    assert c["notes"] == want.notes


def test_unseen_tags_and_unused_sources_are_noted(content_client, content_run: Path) -> None:  # noqa: ANN001
    body = described_upload(content_client, png(), {"tags": "mono, never-seen-tag"}, k=3).json()
    assert "1 of 2 tags are not in the run's vocabulary; ignored" in body["content"]["notes"]
    assert any(n.startswith("scored from") and "not given" in n for n in body["content"]["notes"])  # no title given


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"title": ""}, "title", "empty title"),
        ({"title": "   ", "tags": "mono"}, "title", "empty title"),
        ({"tags": " , ,"}, "tags", "no tags given"),
    ],
)
def test_unusable_fields_are_one_line_400s(content_client, fields: dict, field: str, words: str) -> None:  # noqa: ANN001
    r = described_upload(content_client, png(), fields)
    assert r.status_code == 400 and r.json()["field"] == field and detail(r).startswith(f"{field}: {words}")


@pytest.mark.parametrize(
    ("fields", "field"), [({"title": TITLE}, "title"), ({"text": "a quiet photo"}, "text"), ({"tags": "mono"}, "tags")]
)
def test_fields_the_content_model_cannot_read_are_400(narrow_client, fields: dict, field: str) -> None:  # noqa: ANN001
    r = described_upload(narrow_client, png(), fields)
    assert r.status_code == 400 and r.json()["field"] == field
    source = "tags" if field == "tags" else "text"
    assert detail(r) == f"{field}: this run's content model has no {source} source (it was fit on learned)"
    assert narrow_client.get("/api/health").json()["content"]["fields"] == []


@pytest.mark.parametrize("fields", [{"title": TITLE}, {"tags": "mono"}, {"text": "x", "tags": "mono"}])
def test_fields_on_a_run_without_a_content_model_say_how_to_make_one(client, fields: dict) -> None:  # noqa: ANN001
    r = described_upload(client, png(), fields)
    assert r.status_code == 400 and r.json()["field"] == next(iter(fields))
    assert "no content model; make one with `socialfeat content RUN`" in detail(r)


def test_fields_are_bounded(content_client) -> None:  # noqa: ANN001
    r = described_upload(content_client, png(), {"title": "x" * 501})
    assert r.status_code == 422 and detail(r).startswith("title")


def test_the_text_encoder_loads_only_for_a_title_or_text(content_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up, a plain upload and a tags-only one never touch MiniLM; a title does (which proves the spy sees)."""
    from fastapi.testclient import TestClient

    import socialfeat.models.text as text_module
    from socialfeat.serve.app import create_app
    from socialfeat.serve.explorer import Explorer

    loads: list[int] = []
    real = text_module.text_model
    monkeypatch.setattr(text_module, "text_model", lambda: loads.append(1) or real())
    with TestClient(create_app(Explorer(load_config(None, []), content_run))) as c:
        assert c.get("/api/health").json()["content"]["present"] and loads == []
        assert upload(c, png(), k=3).status_code == 200 and loads == []
        assert described_upload(c, png(), {"tags": "mono"}, k=3).status_code == 200 and loads == []
        assert described_upload(c, png(), {"title": TITLE}, k=3).status_code == 200 and loads


def test_health_names_the_run_as_it_was_made(client, tmp_path: Path) -> None:  # noqa: ANN001
    """The run's own name (its config.yaml), not the default config's that serve starts with; else the folder's."""
    from socialfeat.serve.explorer import _run_name

    assert client.get("/api/health").json()["run"] == "run"  # the test run has no config.yaml: its folder
    (tmp_path / "posters-2026").mkdir()
    assert _run_name(tmp_path / "posters-2026") == "posters-2026"
    (tmp_path / "posters-2026" / "config.yaml").write_text("name: movielens\n")
    assert _run_name(tmp_path / "posters-2026") == "movielens"


@pytest.mark.parametrize("field", ["image", "title"])
def test_a_field_sent_twice_is_refused_by_name(client, field: str) -> None:  # noqa: ANN001
    files = [("image", ("a.png", png(), "image/png"))]
    files += [("image", ("b.png", png(colour=(0, 0, 0)), "image/png"))] if field == "image" else []
    data = {"title": ["one", "two"]} if field == "title" else None
    r = client.post("/api/upload", files=files, data=data)
    assert r.status_code == 400 and r.json()["field"] == field
    assert detail(r) == f"{field}: sent 2 times; send one {field} per upload"
