"""Re-take the manual's screenshots of a report and of the built site, in Debian's chromium (never a downloaded one).

python docs/screenshot_pages.py report runs/movielens/report.html   # → docs/report.jpg
make docs && python docs/screenshot_pages.py site site               # → docs/site-getting-started.jpg, site-stage.jpg
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

HERE = Path(__file__).resolve().parent
QUALITY = 80  # JPEG quality: a 1280 × 900 page stays well under 300 KB


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system's chromium through Playwright's executable_path: Playwright never fetches a browser."""
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=["--no-sandbox"],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """The built site over HTTP on a free local port, as a reader would open it (search needs HTTP, not file://)."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(folder)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def report(html: Path) -> None:
    """The top of a report: the headline comparison a reader sees first."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(html.resolve().as_uri())
        page.wait_for_load_state("load")
        page.wait_for_timeout(500)
        page.screenshot(path=str(HERE / "report.jpg"), quality=QUALITY)
    print(f"wrote {HERE / 'report.jpg'}")


def site(folder: Path) -> None:
    """The getting-started page and one stage page of the built site, opened as a new user would."""
    shots = {
        "getting-started/": "site-getting-started.jpg",
        "stages/train/": "site-stage.jpg",
    }
    with served(folder) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for path, name in shots.items():
            page.goto(f"{url}/{path}")
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(300)
            page.screenshot(path=str(HERE / name), quality=QUALITY)
            print(f"wrote {HERE / name}")


if __name__ == "__main__":
    what, where = (sys.argv[1:] + ["", ""])[:2]
    if what == "report":
        report(Path(where or "runs/demo/report.html"))
    elif what == "site":
        site(Path(where or "site"))
    else:
        sys.exit(__doc__)
