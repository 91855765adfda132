"""A real browser types Chinese into the web app: `clipforge serve` with the bilingual shipped model,
Debian chromium driven by playwright (as tests/server/test_server_browser.py does in English).

One server and one browser for the module; each browser language is a context of that browser.
"""

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


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module's tests (each opens its own contexts)."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser, url: str, **options):
    """A page of the app in a new context of `browser` (`options`: the context's, e.g. locale), offline."""
    page = browser.new_context(**options).new_page()
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith((url, "data:", "blob:")) else r.abort())
    page.goto(f"{url}/", wait_until="load", timeout=120_000)
    return page


@pytest.mark.slow
def test_typing_chinese_in_search_and_classify(server, browser, tmp_path) -> None:
    url, photos = server
    page = _open(browser, url, viewport={"width": 1280, "height": 900})
    try:
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
    finally:
        page.context.close()


# A browser language -> the UI's Chinese (or English) as the tabs show it and as the Library summary (a status line
# the server writes by the request's Accept-Language) starts.
TABS = {"zh-CN": ["搜索", "分类", "图库"], "zh-TW": ["搜尋", "分類", "圖庫"], "en": ["Search", "Classify", "Library"]}
SUMMARY = {"zh-CN": "图库中有 18 张图片", "zh-TW": "圖庫中有 18 張圖片", "en": "18 images in the library"}
LOCALES = {"zh": "zh-CN", "zh-SG": "zh-CN", "zh-HK": "zh-TW"}
# more tags for the page's rule against the server's (evaluated in the page: no page load each)
TAGS = [*LOCALES, "zh-CN", "zh-cn", "zh-TW", "zh-MO", "zh-MY", "zh-Hans", "zh-Hans-CN", "zh-Hans-HK", "zh-Hant",
        "zh-Hant-TW", "zh-Hant-CN", "en-US", "zhx", ""]


@pytest.mark.slow
def test_every_chinese_browser_gets_its_script_in_labels_and_status_lines(server, browser) -> None:
    """gradio's frontend translated the labels only for a browser language of exactly zh-CN or zh-TW: zh, zh-SG,
    zh-HK... got English tabs and buttons above Chinese status lines. Now every Chinese tag gets one script for
    both: Traditional for Hong Kong, Macau and Hant, Simplified for the rest (a Hans script named outright wins)."""
    url, _ = server
    seen, pages = {}, []
    try:
        for tag in LOCALES:
            page = _open(browser, url, locale=tag)
            pages.append(page)
            page.wait_for_selector("#search-button", timeout=60_000)
            page.locator("[role=tab]").nth(2).click()  # the Library tab (its summary is drawn when shown)
            page.wait_for_function(
                "/18 (张|張|images)/.test(document.querySelector('#library-summary')?.textContent)", timeout=60_000)
            tabs = page.eval_on_selector_all("[role=tab]", "tabs => tabs.map(t => t.innerText.trim())")
            summary = page.locator("#library-summary").text_content().strip()
            labels = next((locale for locale, names in TABS.items() if tabs == names), tabs)
            status = next((locale for locale, start in SUMMARY.items() if summary.startswith(start)), summary)
            seen[tag] = (labels, status, page.evaluate("document.documentElement.lang"))
        assert seen == {tag: (locale, locale, locale) for tag, locale in LOCALES.items()}
        # the page's rule, tag by tag, against the server's (built from the same patterns)
        from clipforge.server.ui_text import browser_locale_rule, status_locale

        rule = pages[-1].evaluate(f"tags => tags.map({browser_locale_rule()})", TAGS)
        assert rule == [status_locale(tag) for tag in TAGS]
    finally:
        for page in pages:
            page.context.close()
