"""Review of the UI page/config cache (`server/ui_config_cache.py`): its turns and its invalidation under races.

Two defects, each shown here against the code as committed (a6c9930):

* A build waiting for its turn that is cancelled just as the turn is passed on (its future already cancelled,
  its `except` not yet run) was skipped by `release`, which then gave the turn to the next waiter or back to the
  pool, and then passed the turn on again from its own `except`: one turn became two, and two builds ran at once
  where `BUILDS_AT_ONCE` is one.
* An answer built from gradio's config while the config was replaced (a request arriving meanwhile saw the new
  config and dropped what was kept) was kept afterwards and served, built from the old config, for good.

The rest pins down what the review checked and found sound: the key holds everything gradio reads (a client's
untrusted `X-Forwarded-*` gets its own answer, never another client's, with or without uvicorn's proxy headers
middleware in front); `Range` and `If-None-Match` change nothing in these answers; an IPv6 client is counted by its
/64; a build that raises gives back its turn, its place and wakes the requests waiting for it.
"""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app
from clipforge.server.ui_config_cache import BuildTurns, PageCache, UIPageCacheMiddleware


def _scope(path: str, client: str = "127.0.0.1", host: bytes = b"testserver") -> dict:
    return {"type": "http", "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": [(b"host", host)], "client": (client, 5000),
            "server": ("testserver", 80)}


async def _get(middleware, path: str, client: str = "127.0.0.1") -> tuple[int, bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await middleware(_scope(path, client), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_waiter_cancelled_as_the_turn_passes_it_by_gives_back_no_turn_it_never_had():
    """B waits for the one turn; B is cancelled and, before B's own cleanup runs, A gives the turn back: the
    turn is free once, not twice (two acquires at once used to succeed with `at_once=1`)."""

    async def scenario() -> tuple[bool, bool]:
        turns = BuildTurns(at_once=1, per_address=10, per_minute=100)
        await turns.acquire()  # A builds
        waiter = asyncio.ensure_future(turns.acquire())  # B waits
        await asyncio.sleep(0)
        assert turns.waiting() == 1
        waiter.cancel()  # B's future is cancelled now; its `except` runs on a later step of the loop
        turns.release()  # A is done, in the same step: nobody live is waiting, the turn goes back
        with pytest.raises(asyncio.CancelledError):
            await waiter
        first = asyncio.ensure_future(turns.acquire())
        second = asyncio.ensure_future(turns.acquire())
        for _ in range(5):
            await asyncio.sleep(0)
        outcome = (first.done(), second.done())
        turns.release()
        await asyncio.wait_for(second, 5)  # the second gets the turn the first gave back
        turns.release()
        return outcome

    assert asyncio.run(scenario()) == (True, False), "two builds held the one turn at once"


def test_a_waiter_cancelled_after_it_was_given_the_turn_passes_it_on():
    """The other order: B is given the turn and cancelled before it runs: B passes the turn to C."""

    async def scenario() -> bool:
        turns = BuildTurns(at_once=1, per_address=10, per_minute=100)
        await turns.acquire()
        b = asyncio.ensure_future(turns.acquire())
        c = asyncio.ensure_future(turns.acquire())
        await asyncio.sleep(0)
        turns.release()  # B's turn is on its way
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        await asyncio.wait_for(c, 5)
        d = asyncio.ensure_future(turns.acquire())
        for _ in range(5):
            await asyncio.sleep(0)
        held_alone = not d.done()
        turns.release()
        await asyncio.wait_for(d, 5)
        turns.release()
        return held_alone

    assert asyncio.run(scenario())


class _Blocks:
    def __init__(self) -> None:
        self.config: dict = {"version": 1}


def test_an_answer_built_from_a_replaced_config_is_not_kept():
    """A build reads config 1; the config is replaced and another request sees it (what was kept is dropped);
    the build ends: its answer, config 1's, must not be kept, or it is served for good."""
    blocks = _Blocks()
    reading = asyncio.Event
    built: list[int] = []

    async def scenario() -> list[tuple[int, bytes]]:
        started, finish = reading(), reading()

        async def app(scope, receive, send):
            version = blocks.config["version"]  # gradio reads the config first, then builds for ~ms
            built.append(version)
            if scope["path"] == "/config" and len(built) == 1:
                started.set()
                await finish.wait()
            body = f'{{"version": {version}, "path": "{scope["path"]}"}}'.encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})

        cache = PageCache(blocks, per_minute=100)
        middleware = UIPageCacheMiddleware(app, cache)
        slow = asyncio.ensure_future(_get(middleware, "/config"))
        await started.wait()
        blocks.config = {"version": 2}  # gradio's config replaced while that build runs
        other = asyncio.ensure_future(_get(middleware, "/", client="192.0.2.9"))  # sees it; waits for the turn
        for _ in range(5):
            await asyncio.sleep(0)
        finish.set()
        answers = [await slow, await other]
        answers.append(await _get(middleware, "/config"))  # after the replacement: config 2's answer
        return answers

    answers = asyncio.run(scenario())
    assert answers[0] == (200, b'{"version": 1, "path": "/config"}')  # its own client got what was built
    assert answers[1] == (200, b'{"version": 2, "path": "/"}')
    assert answers[2] == (200, b'{"version": 2, "path": "/config"}'), "config 1's answer was kept and served"
    assert built == [1, 2, 2]


def test_a_build_that_raises_frees_its_turn_and_its_place_and_wakes_its_waiters():
    """gradio raising in a build: the request that caused it gets the error, a request waiting for the same
    answer builds it itself, and nothing stays held (no place, no turn, no build in progress)."""
    calls: list[str] = []

    async def scenario() -> tuple[object, tuple[int, bytes]]:
        gate = asyncio.Event()

        async def app(scope, receive, send):
            calls.append(scope["path"])
            if len(calls) == 1:
                await gate.wait()
                raise RuntimeError("gradio failed")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"page"})

        cache = PageCache(_Blocks(), per_minute=100)
        middleware = UIPageCacheMiddleware(app, cache)
        first = asyncio.ensure_future(_get(middleware, "/"))
        for _ in range(3):
            await asyncio.sleep(0)
        waiter = asyncio.ensure_future(_get(middleware, "/"))  # the same key: waits for the first build
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiter.done() and calls == ["/"]
        gate.set()
        error = (await asyncio.gather(first, return_exceptions=True))[0]
        answer = await asyncio.wait_for(waiter, 5)
        assert cache.turns._held == {} and cache._building == {} and cache.turns.waiting() == 0
        assert await asyncio.wait_for(_get(middleware, "/"), 5) == (200, b"page")  # kept now: no third call
        return error, answer

    error, answer = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and str(error) == "gradio failed"
    assert answer == (200, b"page")
    assert calls == ["/", "/"]


def test_an_ipv6_client_is_counted_by_its_64_for_builds():
    """Builds a minute are an address's: every address of one IPv6 /64 shares them (`fair.address_key`)."""
    calls: list[str] = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    async def scenario() -> list[int]:
        cache = PageCache(_Blocks(), per_minute=3)
        middleware = UIPageCacheMiddleware(app, cache)
        statuses = []
        for i in range(5):  # each a new key (host name), each from another address of the same /64
            scope = _scope("/config", client=f"2001:db8:1:2::{i + 1:x}", host=f"name{i}".encode())
            sent: list[dict] = []

            async def receive() -> dict:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict, sent=sent) -> None:
                sent.append(message)

            await middleware(scope, receive, send)
            statuses.append(sent[0]["status"])
        other = await _get(middleware, "/", client="2001:db8:1:3::1")  # the next /64: its own budget
        statuses.append(other[0])
        return statuses

    assert asyncio.run(scenario()) == [200, 200, 200, 429, 429, 200]
    assert len(calls) == 4


@pytest.fixture()
def proxied_ui(library, tmp_path, monkeypatch):
    """The app with the UI behind uvicorn's proxy-headers middleware trusting 10.0.0.1 (what `serve
    --forwarded-allow-ips 10.0.0.1` runs), and a client maker for any peer address."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = create_app(library, ui=True, limits=ServerLimits(ui_new_sessions_per_minute=1000))
    outer = ProxyHeadersMiddleware(app, trusted_hosts="10.0.0.1")
    clients: list[TestClient] = []

    def client(peer: str) -> TestClient:
        made = TestClient(outer, raise_server_exceptions=False, client=(peer, 5000))
        made.__enter__()
        clients.append(made)
        return made

    yield app, client
    for made in reversed(clients):
        made.__exit__(None, None, None)


def test_no_client_gets_an_answer_built_for_another_clients_proxy_headers(proxied_ui):
    """Trusted proxy and untrusted clients, each with and without `X-Forwarded-Host`/`-Proto`, asking in turns:
    each kept answer is byte for byte what a fresh build for that same request gives (a query the cache has not
    seen forces one), and a client that sends no forwarded headers never sees another's forwarded name."""
    app, client = proxied_ui
    proxy, stranger = client("10.0.0.1"), client("203.0.113.5")
    cases = [
        (proxy, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "photos.example", "X-Forwarded-For": "198.51.100.1"}),
        (proxy, {"X-Forwarded-For": "198.51.100.2"}),
        (stranger, {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}),
        (stranger, {"X-Forwarded-Proto": "https"}),
        (stranger, {}),
    ]
    first = {}
    for index, (who, headers) in enumerate(cases):
        for path in ("/config", "/"):
            first[index, path] = who.get(path, headers=headers)
            assert first[index, path].status_code == 200
    for round_ in range(2):
        for index, (who, headers) in enumerate(cases):
            for path in ("/config", "/"):
                kept = who.get(path, headers=headers)
                fresh = who.get(f"{path}?fresh={round_}-{index}", headers=headers)
                assert kept.content == fresh.content == first[index, path].content, (index, path)
    plain = stranger.get("/config").json()["root"]
    assert plain == "http://testserver"
    assert proxy.get("/config", headers=cases[0][1]).json()["root"] == "https://photos.example"
    assert b"evil.example" not in stranger.get("/").content and b"photos.example" not in proxy.get("/").content


def test_range_and_conditional_requests_get_the_whole_page(proxied_ui):
    """Neither answer has an ETag or takes a `Range`: a kept answer is sent whole, 200, to such a request too,
    and such a request never takes another key's place."""
    app, client = proxied_ui
    browser = client("192.0.2.1")
    for path in ("/config", "/"):
        whole = browser.get(path)
        assert whole.status_code == 200 and "etag" not in whole.headers
        for headers in ({"Range": "bytes=0-9"}, {"If-None-Match": "*"}, {"If-Modified-Since": "Sat, 1 Jan 2050 00:00:00 GMT"},
                        {"If-Range": "x", "Range": "bytes=5-"}):
            again = browser.get(path, headers=headers)
            assert (again.status_code, again.content) == (200, whole.content), (path, headers)
    assert len(app.state.ui_page_cache.answers) == 2
