"""The explorer page in a real browser: Debian's chromium driven by Playwright (never a downloaded browser) against a
live uvicorn server — load the grid, open an item, compare neighbours, upload an image, see a readable error; and
on a run with a content model, upload with a title and tags and see which sources scored it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from environment import need, need_module

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("SOCIALFEAT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _chromium() -> str:
    need(Path(CHROMIUM).is_file(), f"no chromium at {CHROMIUM}: apt-get install chromium (Debian's, not Playwright's)")
    return CHROMIUM


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:  # noqa: ANN001
    """uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def browser_page(sync_api, chromium: str, app, problems: list[str]) -> Iterator[tuple]:  # noqa: ANN001
    """A live server for ``app`` and a headless Debian Chromium page on it that records every page error, HTTP
    error response and console error in ``problems``; yields (page, url)."""
    with live_server(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            yield page, url
        finally:
            browser.close()


def test_page_in_chromium(explorer, served_run: Path, tmp_path: Path) -> None:  # noqa: ANN001
    chromium = _chromium()
    sync_api = need_module("playwright.sync_api", "the dev extra (Playwright) is not installed")
    from socialfeat.report.gallery import Thumbnails
    from socialfeat.serve.app import create_app

    if importlib.util.find_spec("onnxruntime") is not None:  # the export extra: the page runs on ONNX Runtime
        assert explorer.health()["runtime"] == "onnx"
    cold = next(k for k, s in zip(explorer.keys, explorer.split, strict=True) if s == "cold")
    thumbs = Thumbnails(served_run, 32)
    image = thumbs.root / thumbs.images[explorer.ids[explorer.row(cold)]]
    problems: list[str] = []
    with browser_page(sync_api, chromium, create_app(explorer), problems) as (page, url):
        page.goto(url)

        # the grid and the run's description
        page.wait_for_selector("#grid .card")
        assert f"{len(explorer.keys):,} items" in page.inner_text("#run-info")
        assert page.locator("#grid .card").count() == min(len(explorer.keys), explorer.config.serve.page_size)

        # search by id narrows the grid to that item
        page.fill("#search", cold)
        expect = sync_api.expect  # locator waits: the page's CSP forbids the eval behind wait_for_function
        expect(page.locator("#grid .card")).to_have_count(1)
        card = page.locator("#grid .card").first
        assert card.get_attribute("data-id") == cold

        # open it: neighbours under both feature sources, side by side, and its predicted audience
        card.click()
        page.wait_for_selector("#similar-learned .card")
        page.wait_for_selector("#similar-imagenet .card")
        assert page.locator("#similar-learned .card").count() == 12
        assert page.inner_text("#detail-title") == explorer.titles[explorer.row(cold)]
        assert "cold" in page.inner_text("#detail-meta")
        assert page.locator("#detail-audience li").count() == 10
        page.locator("#similar-learned .card").first.click()  # a neighbour opens its own page
        expect(page.locator("#detail-meta")).not_to_contain_text(f"id {cold} ")

        # upload a brand-new image: its nearest item is the same picture, and an audience is listed
        page.click("nav a[data-tab=upload]")
        expect(page.locator("#describe")).to_be_hidden()  # no content model in this run: no title or tags fields
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#upload-results:not([hidden]) #upload-learned .card")
        assert page.locator("#upload-learned .card").first.get_attribute("data-id") == cold
        assert page.locator("#upload-imagenet .card").count() == 12
        assert page.locator("#upload-audience li").count() == 12

        # a file that is not an image: a sentence, not a stack trace
        page.set_input_files("#file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not really"}])
        page.wait_for_selector("#upload-status.error")
        message = page.inner_text("#upload-status")
        assert "could not be used" in message and "not an image" in message and "HTTP 400" in message
        page.screenshot(path=str(tmp_path / "explorer.png"))
    # the failed upload logs a 400 in the console by design; nothing else may go wrong
    assert [m for m in problems if "400" not in m] == [], problems


def test_upload_with_title_and_tags_in_chromium(content_explorer, content_run: Path) -> None:  # noqa: ANN001
    chromium = _chromium()
    sync_api = need_module("playwright.sync_api", "the dev extra (Playwright) is not installed")
    from socialfeat.report.gallery import Thumbnails
    from socialfeat.serve.app import create_app

    cold = next(k for k, s in zip(content_explorer.keys, content_explorer.split, strict=True) if s == "cold")
    thumbs = Thumbnails(content_run, 32)
    image = thumbs.root / thumbs.images[content_explorer.ids[content_explorer.row(cold)]]
    want = content_explorer.upload(image.read_bytes(), 12, ["learned"], title="Vivid mood", tags="mono, zzz-unseen")
    problems: list[str] = []
    with browser_page(sync_api, chromium, create_app(content_explorer), problems) as (page, url):
        page.goto(url + "/#upload")
        expect = sync_api.expect
        expect(page.locator("#describe")).to_be_visible()
        expect(page.locator("#describe-note")).to_contain_text("content model")
        page.fill("#item-title", "Vivid mood")
        page.fill("#item-tags", "mono, zzz-unseen")
        page.set_input_files("#file", str(image))
        expect(page.locator("#upload-content")).to_be_visible()
        used = page.inner_text("#upload-content")
        assert used.startswith("scored from") and all(s in used for s in want["content"]["sources"]), used
        assert "content model" in page.inner_text("#upload-how")
        assert "with its title, tags" in page.inner_text("#upload-status")
        notes = page.locator("#upload-notes li").all_inner_texts()
        assert notes == want["content"]["notes"] and any("not in the run's vocabulary" in n for n in notes)
        users = page.locator("#upload-audience li span:first-child").all_inner_texts()
        assert users == [str(u["user_id"]) for u in want["audience"]]
    assert problems == [], problems
