"""The UI's page (`GET /`) and gradio's config (`GET /config`), asked for by anyone, again and again.

The attack: gradio builds both answers anew for every request (a deep copy of the whole Blocks config, its file
URLs walked to put in the request's root URL, the page's template rendered): ~2.5 ms (`/config`) to ~3.7 ms (`/`)
of Python each, in the thread pool, holding the GIL. 32 connections from one address asking for them in a loop
took ~1 core of CPU, and another client's `/healthz` went from 1.8 ms to 150-330 ms (its search from 52 to
350-570 ms); the same flood of `/healthz` cost it nothing. Now an answer is built once per distinct request
(what gradio reads of it: URL, root path, host and proxy headers) and served from a small cache after that; a
request the cache cannot answer is built one at a time, server-wide, at most 2 running or waiting per address and
`ui_new_sessions_per_minute` a minute per address (`server/ui_config_cache.py`).

Builds are counted where gradio makes them, not timed: both routes put the request's root URL into their fresh
copy of the config through `gradio.route_utils.update_root_in_config`, once per answer.
"""

from __future__ import annotations

import gzip
import json
import threading

import pytest
from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app
from clipforge.server.ui_text import browser_locale_script


class Builds:
    """Counts gradio's config builds (calls of `update_root_in_config`); `hold()` makes each wait for `release`."""

    def __init__(self, real) -> None:
        self.real = real
        self.count = self.inside = self.peak = 0
        self.roots: list[str] = []
        self.held = False
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def __call__(self, config, root):
        with self._lock:
            self.count += 1
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.roots.append(root)
        try:
            if self.held:
                self.entered.release()
                assert self.release.wait(30), "the held build was never released"
            return self.real(config, root)
        finally:
            with self._lock:
                self.inside -= 1


@pytest.fixture()
def builds(monkeypatch) -> Builds:
    import gradio.route_utils

    counter = Builds(gradio.route_utils.update_root_in_config)
    monkeypatch.setattr(gradio.route_utils, "update_root_in_config", counter)
    return counter


@pytest.fixture()
def ui_app(library, tmp_path, monkeypatch):
    """`make(limits=None, root_path="")` -> (app, client): the app with the UI, its lifespan started."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    clients = []

    def make(limits: ServerLimits | None = None, root_path: str = ""):
        app = create_app(library, ui=True, limits=limits)
        client = TestClient(app, raise_server_exceptions=False, root_path=root_path)
        client.__enter__()
        clients.append(client)
        return app, client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


def test_repeated_page_and_config_requests_are_built_once(ui_app, builds):
    """40 anonymous GETs (and HEADs) of `/config` and `/` cost two builds, and every answer is the first's."""
    _, client = ui_app()
    first = {path: client.get(path) for path in ("/config", "/")}
    assert builds.count == 2
    for _ in range(20):
        for path, answer in first.items():
            again = client.get(path)
            assert (again.status_code, again.content) == (200, answer.content)
            assert again.headers["content-type"] == answer.headers["content-type"]
            assert again.headers["content-length"] == str(len(answer.content))
            assert again.headers["x-frame-options"] == "DENY"  # the layers outside still add theirs to a hit
    head = client.head("/config")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(first["/config"].content)))
    assert builds.count == 2, f"{builds.count} builds for 42 requests of 2 answers"


def test_a_chinese_and_an_english_browser_each_get_their_config_and_page(ui_app, builds):
    """gradio's config is one for every language (all translations inside; the page's script picks one): each
    browser gets what a fresh build gives it, and the page carries the language script for both."""
    _, client = ui_app()
    zh_config, en_config = client.get("/config", headers=ZH), client.get("/config", headers=EN)
    zh_page, en_page = client.get("/", headers=ZH), client.get("/", headers=EN)
    assert builds.count == 2
    for answer in (zh_config, en_config, zh_page, en_page):
        assert answer.status_code == 200
    config = zh_config.json()
    assert config["root"] == "http://testserver"
    translations = config["i18n_translations"]
    assert {"en", "zh-CN", "zh-TW"} <= set(translations)
    assert translations["zh-CN"]["tab_search"] != translations["en"]["tab_search"]
    script = browser_locale_script().encode()
    for page in (zh_page, en_page):
        assert page.content.count(script) == 1 and page.content.index(script) < page.content.index(b"gradio_config")
    # a fresh build for the same browser (a query string the cache has not seen) gives the same bytes
    assert client.get("/config?fresh=1", headers=ZH).content == zh_config.content == en_config.content
    assert client.get("/?fresh=1", headers=EN).content == en_page.content == zh_page.content
    assert builds.count == 4


def test_what_gradio_reads_of_a_request_gets_its_own_answer(ui_app, builds):
    """The root URL gradio puts into the config follows the request's host, proxy headers and root path: each
    of those is a different answer, never another request's."""
    _, client = ui_app()
    cases = [
        ({}, "http://testserver"),
        ({"Host": "nas:7860"}, "http://nas:7860"),
        ({"Host": "nas:7860", "X-Forwarded-Proto": "https"}, "https://nas:7860"),
        ({"Host": "127.0.0.1:7860", "X-Forwarded-Host": "photos"}, "http://photos"),
    ]
    for _ in range(2):
        for headers, root in cases:
            answer = client.get("/config", headers=headers)
            assert answer.status_code == 200 and answer.json()["root"] == root, (headers, answer.text[:200])
            page = client.get("/", headers=headers).text
            assert f'"root":"{root}"' in page, headers
    assert builds.count == 2 * len(cases)
    _, behind = ui_app(root_path="/photos")
    assert behind.get("/photos/config").json()["root"] == "http://testserver/photos"
    assert behind.get("/photos/config").json()["root"] == "http://testserver/photos"
    assert builds.count == 2 * len(cases) + 1


def test_the_builds_one_address_can_cause_are_bounded(ui_app, builds):
    """Every new host name is a new answer to build: one address gets `ui_new_sessions_per_minute` builds a
    minute, then a 429; its cached answers and another address's builds are not affected."""
    app, client = ui_app(ServerLimits(ui_new_sessions_per_minute=5))
    statuses = [client.get("/config", headers={"Host": f"name{i}"}) for i in range(8)]
    assert [r.status_code for r in statuses] == [200] * 5 + [429] * 3
    assert statuses[-1].json() == {
        "error": "too_many_requests",
        "detail": "the web UI's page was built 5 times for your address in the last minute (each new host "
        "name, path or query string is built once); wait a minute",
    }
    assert builds.count == 5
    assert client.get("/config", headers={"Host": "name0"}).json()["root"] == "http://name0"  # a hit: still served
    other = TestClient(app, raise_server_exceptions=False, client=("198.51.100.7", 4000))
    assert other.get("/config", headers={"Host": "name9"}).json()["root"] == "http://name9"
    assert builds.count == 6


def test_builds_run_one_at_a_time_and_an_address_holds_two_places(ui_app, builds):
    """A build holds a thread and the GIL: they run one at a time, server-wide, and an address may have two
    running or waiting; a third is refused at once rather than queued."""
    app, client = ui_app()
    cache = app.state.ui_page_cache
    builds.held = True
    answers: dict[str, object] = {}

    def ask(name: str) -> None:
        answers[name] = client.get("/config", headers={"Host": name})

    threads = [threading.Thread(target=ask, args=(name,)) for name in ("one", "two")]
    threads[0].start()
    assert builds.entered.acquire(timeout=30)  # the first is building
    threads[1].start()
    for _ in range(3000):  # the second is waiting for its turn (an order of events, not a time)
        if cache.turns.waiting() == 1:
            break
        threading.Event().wait(0.01)
    assert cache.turns.waiting() == 1
    third = client.get("/config", headers={"Host": "three"})
    assert third.status_code == 429
    assert third.json()["detail"] == "2 builds of the web UI's page from your address are running or waiting; " \
                                     "try again shortly"
    builds.release.set()
    for thread in threads:
        thread.join(30)
    assert [answers[name].json()["root"] for name in ("one", "two")] == ["http://one", "http://two"]
    assert builds.peak == 1 and builds.count == 2


def test_an_answer_that_is_not_a_page_is_not_kept(ui_app, builds):
    """Only a whole 200 is kept: gradio's 500 for a page it does not have is asked of gradio each time."""
    app, client = ui_app()
    for _ in range(2):
        answer = client.get("/?page=nosuch")
        assert answer.status_code == 500
        assert json.loads(answer.content)["error"] == "internal_error"
    assert len(app.state.ui_page_cache.answers) == 0
    assert client.get("/").status_code == 200
    assert len(app.state.ui_page_cache.answers) == 1 and builds.count == 1


@pytest.mark.parametrize(
    ("headers", "shared", "kept"),
    [
        ([(b"content-type", b"application/json"), (b"vary", b"Origin")], True, True),
        ([(b"content-type", b"application/json"), (b"set-cookie", b"session=1")], True, False),
        ([(b"content-type", b"application/json"), (b"vary", b"Origin, Accept-Language")], True, False),
        ([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")], True, False),
        ([(b"content-type", b"application/json")], False, False),  # gradio's login on: answers may name a user
    ],
)
def test_only_answers_the_same_for_every_request_of_a_key_are_kept(headers, shared, kept):
    """An answer that carries a cookie, an encoding chosen for one client or a `Vary` on a header the key leaves
    out, or any answer while gradio's login is on, is asked of the app again for the next request."""
    from clipforge.server.ui_config_cache import PageCache, UIPageCacheMiddleware

    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        gzipped = (b"content-encoding", b"gzip") in headers
        body = b'{"root": "x"}'
        await send({"type": "http.response.body", "body": gzip.compress(body) if gzipped else body})

    class Blocks:
        config: dict = {}

    cache = PageCache(Blocks(), per_minute=100, shared=lambda: shared)
    client = TestClient(UIPageCacheMiddleware(app, cache))
    answers = [client.get("/config") for _ in range(3)]
    assert [(a.status_code, a.content) for a in answers] == [(200, b'{"root": "x"}')] * 3
    assert len(calls) == (1 if kept else 3) and len(cache.answers) == (1 if kept else 0)


def test_the_build_limits_are_server_limits(ui_app, builds):
    """`ServerLimits.ui_page_builds_per_host` (and `ui_page_builds`) set what the defaults above test: with one place
    an address, a second build of the same address is refused while the first runs."""
    app, client = ui_app(ServerLimits(ui_page_builds=1, ui_page_builds_per_host=1))
    assert (app.state.ui_page_cache.turns.at_once, app.state.ui_page_cache.turns.per_address) == (1, 1)
    builds.held = True
    answers: dict[str, object] = {}
    thread = threading.Thread(target=lambda: answers.update(one=client.get("/config", headers={"Host": "one"})))
    thread.start()
    assert builds.entered.acquire(timeout=30)  # the first is building
    second = client.get("/config", headers={"Host": "two"})
    assert second.status_code == 429
    assert second.json()["detail"] == "1 build of the web UI's page from your address is running or waiting; " \
                                      "try again shortly"
    builds.release.set()
    thread.join(30)
    assert answers["one"].status_code == 200 and builds.count == 1
