"""A real browser types Chinese into the web app: `clipforge serve` with the bilingual shipped model,
Debian chromium driven by playwright (as tests/server/test_server_browser.py does in English)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10_jpeg"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.data, pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed "
                                                   "at /usr/bin/chromium (.ci/run installs it)")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, photo folder) of `clipforge serve` over 3 CIFAR-10 test pictures per class, built with clipforge-tiny-zh."""
    from clipforge.library import Library

    archive = CIFAR / "test_jpeg.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} not found (needs ../shared/data)")
    root = tmp_path_factory.mktemp("browser-zh")
    photos = root / "photos"
    photos.mkdir()
    with zipfile.ZipFile(archive) as z:
        for name in ("airplane", "cat", "dog", "ship", "truck", "frog"):
            for i in range(3):
                (photos / f"{name}_{i}.jpg").write_bytes(z.read(f"test/{name}/{i:04d}.jpg"))
    with Library(root / "lib", model="clipforge-tiny-zh") as library:
        assert library.add(photos, workers=0, progress=False).added == 18
    log = root / "stdout.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "clipforge", "serve", "--library", str(root / "lib"),
                                 "--port", "0", "--log-level", "warning"], stdout=stdout, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=root)
    try:
        deadline, url = time.monotonic() + 180, ""
        while time.monotonic() < deadline and not url and proc.poll() is None:
            match = re.search(r"at (http://127\.0\.0\.1:\d+)/", log.read_text(errors="replace"))
            url = match.group(1) if match else ""
            time.sleep(0.2)
        if not url:
            pytest.fail(f"clipforge serve did not start:\n{log.read_text()[-3000:]}")
        yield url, photos
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.mark.slow
def test_typing_chinese_in_search_and_classify(server, tmp_path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    url, photos = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith((url, "data:", "blob:")) else r.abort())
        page.goto(f"{url}/", wait_until="load", timeout=120_000)
        page.wait_for_selector("#search-text textarea", timeout=120_000)
        page.locator("#search-text textarea").fill("一只猫")
        page.locator("#search-button").click()
        page.wait_for_function("document.querySelectorAll('#search-results img').length > 0", timeout=60_000)
        sources = page.eval_on_selector_all("#search-results img", "imgs => imgs.map(i => i.src)")
        ids = [int(re.search(r"/api/images/(\d+)/thumb", s).group(1)) for s in sources]
        api = httpx.post(f"{url}/api/search", json={"text": "一只猫", "top_k": 12}, timeout=60).json()
        assert ids == [r["id"] for r in api["results"]]  # the page shows what the API answers for the Chinese text
        assert api["results"][0]["filename"].startswith("cat_"), api["results"][:3]
        page.get_by_role("tab", name="Classify").click()
        page.locator("#classify-button").wait_for()
        page.locator("#classify-image input[type=file]").set_input_files(str(photos / "cat_0.jpg"))
        page.locator("#labels textarea, #labels input").first.fill("猫,狗,卡车")
        page.locator("#classify-button").click()
        page.wait_for_function("/\\d+%/.test(document.querySelector('#probabilities').innerText)", timeout=60_000)
        shown = page.locator("#probabilities").inner_text()
        assert all(label in shown for label in ("猫", "狗", "卡车")), shown
        page.screenshot(path=str(tmp_path / "browser-zh.png"), full_page=True)
        browser.close()
