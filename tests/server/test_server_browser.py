"""A real browser against the real server: `clipforge serve` in a subprocess, Debian chromium
driven by playwright. Types a query, clicks Search, and checks the gallery shows thumbnails
served by our API; then classifies an upload and adds an image through the Library tab. The
user's mistakes (an empty query, a missing token) show one message in the tab's status line,
keep the results, the library grid and the chosen files, and log one line without a traceback.
Every request to anything but the server is blocked and recorded: the page must work offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "browser-test-token"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian chromium is not installed at /usr/bin/chromium "
                                       "(apt-get install chromium; .ci/run installs it)")


def _wait_for_url(log: Path, proc: subprocess.Popen, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", log.read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    return ""


@pytest.fixture(scope="module")
def server(tmp_path_factory, kit):
    """(base URL, library folder): `clipforge serve` over 8 pictures with the seeded test model."""
    from clipforge.library import Library

    root = tmp_path_factory.mktemp("browser")
    photos = kit.write_photos(root / "photos")
    with Library(root / "lib", model="test-vit-tiny") as library:
        assert library.add(photos[0].parent, workers=0, progress=False).added == len(photos)
    out, err = root / "stdout.log", root / "stderr.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipforge", "serve", "--library", str(root / "lib"), "--model", "test-vit-tiny",
             "--port", "0", "--token", TOKEN, "--log-level", "warning"],
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=root)
    try:
        url = _wait_for_url(out, proc, time.monotonic() + 180)
        if not url:
            pytest.fail(f"clipforge serve did not start:\n{err.read_text()[-3000:]}")
        assert httpx.get(f"{url}/healthz", timeout=30).json()["model"] == "test-vit-tiny"
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser_page(server):
    """A chromium page that may only talk to the server; `page.external` lists blocked requests."""
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="pip package playwright is not installed "
                                          "(it is in the dev extra)").sync_playwright

    url, _ = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        external: list[str] = []

        def route(request_route):
            target = request_route.request.url
            if target.startswith((url, "data:", "blob:")):
                request_route.continue_()
            else:
                external.append(target)
                request_route.abort()

        page.route("**/*", route)
        page.external = external
        page.goto(f"{url}/", wait_until="load", timeout=120_000)
        page.wait_for_selector("#search-text textarea", timeout=120_000)
        yield page
        browser.close()


def test_search_in_the_browser_shows_thumbnails(server, browser_page, tmp_path):
    url, _ = server
    page = browser_page
    assert "random weights" in page.locator("#model-notice").inner_text()
    page.locator("#search-text textarea").fill("a red square")
    page.locator("#search-button").click()
    try:
        page.wait_for_function("document.querySelectorAll('#search-results img').length > 0", timeout=30_000)
    except Exception as error:  # playwright's TimeoutError (imported only where playwright is installed)
        if type(error).__name__ != "TimeoutError":
            raise
        # Seen twice on a loaded 2-core machine (stop 51): the first click of a fresh page reached no handler (no
        # log line, no status), the page otherwise whole. Said as a warning in the run's summary, and tried once
        # more; a search that never answers still fails below.
        status = page.locator("#search-status").inner_text()
        warnings.warn(f"the browser's first search click went unanswered for 30 s (status {status!r}); clicked again",
                      stacklevel=1)
        page.locator("#search-button").click()
        page.wait_for_function("document.querySelectorAll('#search-results img').length > 0", timeout=60_000)
    page.wait_for_function("Array.from(document.querySelectorAll('#search-results img'))"
                           ".every(img => img.complete && img.naturalWidth > 0)", timeout=60_000)
    sources = page.eval_on_selector_all("#search-results img", "imgs => imgs.map(i => i.src)")
    assert len(sources) > 0
    ids = []
    for source in sources:
        match = re.fullmatch(re.escape(url) + r"/api/images/(\d+)/thumb\?size=\d+", source)
        assert match, source
        ids.append(int(match.group(1)))
    # The UI shows what the API returns for the same query, in the same order.
    api = httpx.post(f"{url}/api/search", data={"text": "a red square", "top_k": 12}, timeout=60).json()
    assert ids == [r["id"] for r in api["results"]]
    assert "8 results" in page.locator("#search-status").inner_text()
    assert page.external == []  # nothing fetched from outside: the page works offline
    # An empty query: one message in the status line (the old "8 results" gone), the results kept,
    # no red "Error" badges.
    page.locator("#search-text textarea").fill("")
    page.locator("#search-button").click()
    page.wait_for_function("/empty query/.test(document.querySelector('#search-status').innerText)", timeout=60_000)
    status = page.locator("#search-status").inner_text()
    assert "type what to look for" in status and "results" not in status
    assert page.locator("#search-results img").count() == len(sources)
    assert page.get_by_text("Error", exact=True).count() == 0
    artifact = REPO_ROOT / "artifacts" / "browser-search.png"
    artifact.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(tmp_path / "browser-search.png"), full_page=True)
    shutil.copyfile(tmp_path / "browser-search.png", artifact)
    assert artifact.stat().st_size > 10_000


def test_classify_and_add_in_the_browser(server, browser_page, kit, tmp_path):
    url, root = server
    page = browser_page
    page.get_by_role("tab", name="Classify").click()
    page.locator("#classify-button").wait_for()
    page.locator("#classify-image input[type=file]").set_input_files(str(root / "photos" / "red.png"))
    page.locator("#classify-button").click()
    page.wait_for_function("/\\d+%/.test(document.querySelector('#probabilities').innerText)", timeout=60_000)
    shown = page.locator("#probabilities").inner_text()
    assert sum(1 for label in ("cat", "dog", "bird", "car", "deer") if label in shown) == 5
    # Library tab: add a new picture with the token; the count and the API see it.
    page.get_by_role("tab", name="Library").click()
    page.wait_for_function("/8 images/.test(document.querySelector('#library-summary').innerText)", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('#library-gallery img').length === 8", timeout=60_000)
    new_file = tmp_path / "teal.png"
    kit.picture((20, 160, 160), seed=42).save(new_file)
    page.locator("#add-files input[type=file]").set_input_files(str(new_file))
    page.wait_for_function("/teal\\s*\\.png/.test(document.querySelector('#add-files').innerText)", timeout=60_000)
    # Without the token: one message where the user looks; the grid and the chosen file stay.
    page.locator("#add-button").click()
    page.wait_for_function("/401 unauthorized/.test(document.querySelector('#add-status').innerText)",
                           timeout=60_000)
    assert "Server token" in page.locator("#add-status").inner_text()
    assert page.locator("#library-gallery img").count() == 8
    assert re.search(r"teal\s*\.png", page.locator("#add-files").inner_text())  # gradio splits name and extension
    assert page.get_by_text("Error", exact=True).count() == 0
    page.get_by_label("Server token").fill(TOKEN)
    page.locator("#add-button").click()
    page.wait_for_selector("text=Added 1 image(s)", timeout=60_000)
    page.wait_for_function("/9 images/.test(document.querySelector('#library-summary').innerText)", timeout=60_000)
    listed = httpx.get(f"{url}/api/images", params={"limit": 50}, timeout=30).json()["images"]
    assert len(listed) == 9
    assert httpx.get(f"{url}{listed[-1]['url']}", timeout=30).content == new_file.read_bytes()
    assert page.external == []
    # The user's mistakes above were logged as one line each, never as a traceback.
    log = (root / "stderr.log").read_text(errors="replace")
    assert "UI search refused (400 empty_query)" in log and "UI add refused (401 unauthorized)" in log
    assert "Traceback" not in log, log[-3000:]
