"""Re-take the README's screenshots of the web explorer: serve a run, open a cold item and an upload in chromium.

python docs/screenshot.py runs/demo        # writes docs/explorer-item.jpg and docs/explorer-upload.jpg
python docs/screenshot.py runs/movielens "Around the World in 80 Days (1956)" "Adventure, Comedy" \
    ../shared/data/movielens-1m/posters/952.jpg   # also docs/explorer-upload-content.jpg: title and tags too
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

HERE = Path(__file__).resolve().parent
PHOTO = (
    HERE.parent.parent
    / "shared"
    / "data"
    / "imagenet-sample"
    / "n01530575_brambling.JPEG"
)


def main(run: Path, content: tuple[str, str, Path] | None = None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "socialfeat", "serve", str(run), "--port", str(port)]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=["--no-sandbox"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.select_option("#split", "cold")
            page.wait_for_selector("#grid .card")
            page.locator("#grid .card").nth(3).click()
            page.wait_for_selector("#similar-imagenet .card")
            expect(page.locator("#similar-learned .card")).to_have_count(12)
            page.wait_for_timeout(1500)  # thumbnails
            page.screenshot(
                path=str(HERE / "explorer-item.jpg"), full_page=False, quality=80
            )
            page.click("nav a[data-tab=upload]")
            page.set_input_files("#file", str(PHOTO))
            page.wait_for_selector(
                "#upload-results:not([hidden]) #upload-learned .card"
            )
            page.wait_for_timeout(1500)
            page.screenshot(
                path=str(HERE / "explorer-upload.jpg"), full_page=False, quality=80
            )
            if content:  # a run with a content model: an upload described by its title and tags too
                title, tags, poster = content
                page.reload()
                page.wait_for_selector("#describe:not([hidden])")
                page.fill("#item-title", title)
                page.fill("#item-tags", tags)
                page.set_input_files("#file", str(poster))
                page.wait_for_selector("#upload-content:not([hidden])")
                page.wait_for_timeout(1500)
                page.screenshot(
                    path=str(HERE / "explorer-upload-content.jpg"),
                    full_page=False,
                    quality=80,
                )
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print(f"wrote the screenshots in {HERE}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        Path(args[0] if args else "runs/demo"),
        (args[1], args[2], Path(args[3])) if len(args) == 4 else None,
    )
