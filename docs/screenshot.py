"""Re-take the README's screenshots of the web explorer: serve a run, open a cold item and an upload in chromium.

python docs/screenshot.py runs/demo        # writes docs/explorer-item.jpg and docs/explorer-upload.jpg
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
PHOTO = HERE.parent.parent / "shared" / "data" / "imagenet-sample" / "n01530575_brambling.JPEG"


def main(run: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "socialfeat", "serve", str(run), "--port", str(port)])
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
            page.screenshot(path=str(HERE / "explorer-item.jpg"), full_page=False, quality=80)
            page.click("nav a[data-tab=upload]")
            page.set_input_files("#file", str(PHOTO))
            page.wait_for_selector("#upload-results:not([hidden]) #upload-learned .card")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(HERE / "explorer-upload.jpg"), full_page=False, quality=80)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print(f"wrote {HERE / 'explorer-item.jpg'} and {HERE / 'explorer-upload.jpg'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))
