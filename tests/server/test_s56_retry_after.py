"""Every 429 "too_many_requests" carries a truthful `Retry-After` (RFC 9110 §10.2.3, RFC 6585: delay-seconds).

None of the server's 429s said when to come back (the bytes-being-sent one alone said 5 s), so a client that
honours `Retry-After` had nothing to honour and asked again at once. Now each source says:

* a limit over a window of time says the real wait, in whole seconds rounded up: the wrong-token lock
  (`security`), the page builds of an address's minute (`ui_config_cache`), the UI sessions an address opened
  in the last minute (`ui_events`);
* a cap on requests running or waiting says 1 s (`errors.RETRY_SOON_S`): a place frees when one of the
  client's own requests ends (`fair`, the page builds' places, the UI's unread answers and streams);
* the bytes of answers being sent say 5 s (`sending.SENDING_RETRY_S`): they free at the client's reading pace.

Each is triggered for real, through the app or the ASGI layer that answers it; the error body keeps its shape.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import pytest
from fastapi.testclient import TestClient

from clipforge.server import ServerLimits

_BODY_KEYS = {"error", "detail"}


def _delay(headers) -> int:
    """The `Retry-After` of an answer's headers as RFC 9110 delay-seconds: digits only, at least 1."""
    value = headers.get("retry-after")
    assert value is not None, f"a 429 without Retry-After: {dict(headers)}"
    assert value.isascii() and value.isdigit(), value
    assert int(value) >= 1, value
    return int(value)


def _refused(answer) -> int:
    """An answer's `Retry-After`, after checking it is a 429 in the one error shape."""
    assert answer.status_code == 429, answer.text
    assert set(answer.json()) == _BODY_KEYS and answer.json()["error"] == "too_many_requests", answer.text
    return _delay(answer.headers)


# -- fair: requests of one client running or waiting ------------------------------------------------------


def test_a_client_over_its_share_of_running_requests_is_told_one_second(make_client, held_calls, monkeypatch):
    """`max_client_requests` listings running or waiting (the pages gate): one more is a 429 saying 1 s."""
    client = make_client(limits=ServerLimits(max_client_requests=1))
    service = client.app.state.service
    held = held_calls(service.list_images)
    monkeypatch.setattr(service, "list_images", held)
    answers: list = []
    sender = threading.Thread(target=lambda: answers.append(client.get("/api/images")))
    sender.start()
    try:
        held.wait_placed(service.pages, 1)
        refused = client.get("/api/stats")
    finally:
        held.release.set()
        sender.join(timeout=60)
    assert _refused(refused) == 1 and "library listings" in refused.json()["detail"]
    assert [a.status_code for a in answers] == [200]


def test_the_gates_refusal_carries_its_wait_for_every_caller():
    """The gate's APIError names the wait itself (`retry_after`, and the header), for the REST edge and for any
    other caller; the per-address cap too."""
    from clipforge.server.errors import APIError
    from clipforge.server.fair import FairGate, client_key

    async def scenario() -> list[APIError]:
        gate = FairGate(slots=1, per_client=1, per_host=2)
        release = threading.Event()
        first = asyncio.ensure_future(gate.run(client_key("10.0.0.1", "a"), release.wait, 30))
        second = asyncio.ensure_future(gate.run(client_key("10.0.0.1", "b"), release.wait, 30))
        await asyncio.sleep(0)
        errors = []
        for session in ("a", "c"):  # the client's own cap, then its address's
            with pytest.raises(APIError) as refused:
                await gate.run(client_key("10.0.0.1", session), release.wait, 30)
            errors.append(refused.value)
        release.set()
        await asyncio.gather(first, second)
        return errors

    errors = asyncio.run(scenario())
    assert [(e.status, e.retry_after, e.headers) for e in errors] == [(429, 1, {"Retry-After": "1"})] * 2
    assert "you already have 1 searches" in errors[0].detail and "from your address" in errors[1].detail


# -- security: wrong tokens within the window -----------------------------------------------------------


def test_the_wrong_token_lock_says_the_seconds_until_its_window_frees(make_client, kit, monkeypatch):
    """Wrong tokens at t = 1000 ... 1009: the lock lifts when the one of t = 1000 leaves the 60 s window, at 1060.
    Asked at 1012.4 the wait is 47.6 s: `Retry-After: 48` and "wait 48 s"; at 1059.2, 1 s; after 1060, the right
    token is taken again. The UI's token box (`verify`) gets the same wait."""
    import clipforge.server.security as security
    from clipforge.server.errors import APIError

    now = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: now[0])
    client = make_client(token="correct horse")
    upload = {"files": {"file": ("x.png", kit.encode(kit.picture((5, 100, 5), seed=7)), "image/png")}}
    for i in range(security.MAX_WRONG_TOKENS):
        now[0] = 1000.0 + i
        assert client.post("/api/images", headers={"X-Token": f"guess{i}"}, **upload).status_code == 401
    now[0] = 1012.4
    locked = client.post("/api/images", headers={"X-Token": "correct horse"}, **upload)
    assert _refused(locked) == 48
    assert "wait 48 s before trying again" in locked.json()["detail"]
    with pytest.raises(APIError) as refused:
        client.app.state.service.tokens.verify("correct horse", "testclient")
    assert (refused.value.retry_after, refused.value.headers) == (48, {"Retry-After": "48"})
    now[0] = 1059.2
    assert _refused(client.post("/api/images", headers={"X-Token": "correct horse"}, **upload)) == 1
    now[0] = 1060.5  # the first wrong token has left the window: nine in it, no lock
    assert client.post("/api/images", headers={"X-Token": "correct horse"}, **upload).status_code == 201


# -- sending: the address's share of bytes being sent ---------------------------------------------------


def test_an_address_over_its_share_of_bytes_being_sent_is_told_when_to_retry(make_client, library):
    """An address whose unread answers hold its share of bytes: the next original is a 429 with `Retry-After: 5`,
    and once those bytes are given back the same request is served."""
    from clipforge.server.sending import SENDING_RETRY_S

    client = make_client()
    sending = client.app.state.service.sending
    release = sending.hold("testclient", sending.per_host)  # what unread answers to this address hold
    image_id = library.list_images(limit=1)[0].id
    assert _refused(client.get(f"/api/images/{image_id}")) == SENDING_RETRY_S == 5
    release()
    assert client.get(f"/api/images/{image_id}").status_code == 200


# -- ui_config_cache: page builds ------------------------------------------------------------------------


class _Blocks:
    config: dict = {}


def _page_request(host: bytes) -> dict:
    return {"type": "http", "method": "GET", "scheme": "http", "path": "/config", "raw_path": b"/config",
            "query_string": b"", "root_path": "", "headers": [(b"host", host)], "client": ("198.51.100.7", 5000),
            "server": ("testserver", 80)}


async def _ask(middleware, host: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of `GET /config` with `Host: host`, through `middleware`."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await middleware(_page_request(host), receive, send)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in sent[0].get("headers", ())}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def _page_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"root": "x"}'})


def test_the_builds_of_a_minute_say_the_seconds_left_of_the_addresss_minute():
    """Two builds a minute, both at t = 100: a third at 130.2 waits for the minute to end at 160 (30 s); at 159.01,
    1 s; at 160 the address builds again."""
    from clipforge.server.ui_config_cache import BuildTurns, PageCache, UIPageCacheMiddleware

    now = [100.0]
    cache = PageCache(_Blocks(), per_minute=2)
    cache.turns = BuildTurns(at_once=1, per_address=2, per_minute=2, clock=lambda: now[0])
    middleware = UIPageCacheMiddleware(_page_app, cache)

    async def scenario() -> list[tuple[int, str | None]]:
        seen = []
        for at, host in ((100.0, b"a"), (100.0, b"b"), (130.2, b"c"), (159.01, b"c"), (160.0, b"c")):
            now[0] = at
            status, headers, body = await _ask(middleware, host)
            if status == 429:
                _delay(headers)
                assert json.loads(body)["detail"].startswith("the web UI's page was built 2 times"), body
            seen.append((status, headers.get("retry-after")))
        return seen

    assert asyncio.run(scenario()) == [(200, None), (200, None), (429, "30"), (429, "1"), (200, None)]


def test_an_address_holding_its_build_places_is_told_one_second():
    """Two builds of one address running or waiting: a third is refused at once, `Retry-After: 1`."""
    from clipforge.server.ui_config_cache import PageCache, UIPageCacheMiddleware

    async def scenario() -> tuple[int, dict[str, str], bytes]:
        release = asyncio.Event()

        async def slow_app(scope, receive, send) -> None:
            await release.wait()
            await _page_app(scope, receive, send)

        cache = PageCache(_Blocks(), per_minute=100, at_once=1, per_address=2)
        middleware = UIPageCacheMiddleware(slow_app, cache)
        held = [asyncio.ensure_future(_ask(middleware, host)) for host in (b"one", b"two")]
        for _ in range(50):
            await asyncio.sleep(0)
        assert cache.turns.waiting() == 1  # one builds, one waits: the address's two places
        third = await _ask(middleware, b"three")
        release.set()
        assert [answer[0] for answer in await asyncio.gather(*held)] == [200, 200]
        return third

    status, headers, body = asyncio.run(scenario())
    assert status == 429 and _delay(headers) == 1 and set(json.loads(body)) == _BODY_KEYS
    assert json.loads(body)["detail"].startswith("2 builds of the web UI's page from your address are running")


# -- ui_events: sessions opened in the last minute, unread answers ---------------------------------------


def test_new_sessions_say_the_seconds_until_the_oldest_leaves_the_minute():
    """Two sessions a minute, opened at t = 0 and 10: a third at 30.5 waits for the one of 0 to leave (29.5 s:
    30); once that one is seen again at 40, the oldest is the one of 10 (at 45: 25 s). The refusal is what the
    guard hands `send_json` (`send_json(send, *refusal)`), which sends the wait as `Retry-After`."""
    from clipforge.server.middleware import send_json
    from clipforge.server.ui_events import JoinRules

    now = [0.0]
    rules = JoinRules({0: 1}, unread=lambda session: 0, max_new_sessions=2, clock=lambda: now[0])

    def join(at: float, session: str):
        now[0] = at
        return rules.refusal("198.51.100.1", {"fn_index": 0, "data": [""], "session_hash": session})

    assert join(0.0, "a") is None and join(10.0, "b") is None
    refusal = join(30.5, "c")
    assert refusal is not None and refusal[:2] == (429, "too_many_requests") and refusal[3] == 30
    assert join(40.0, "a") is None  # a page already open goes on, and is seen now
    assert join(45.0, "c")[3] == 25
    assert join(69.9, "c")[3] == 1

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(send_json(send, *refusal))
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 429 and headers[b"retry-after"] == b"30"
    assert json.loads(sent[1]["body"]) == {"error": "too_many_requests", "detail": refusal[2]}


def test_unread_answer_caps_say_one_second():
    """With nothing that forgets unread answers (no `drop`), they free only as the pages read them, at no time known
    ahead: 1 s (otherwise the wait until they are forgotten, `test_s60_ui_space`)."""
    from clipforge.server.ui_events import JoinRules

    rules = JoinRules({0: 1}, unread=lambda session: 3, max_unread_events=3)
    refusal = rules.refusal("198.51.100.1", {"fn_index": 0, "data": [""], "session_hash": "s"})
    assert refusal == (429, "too_many_requests", "this page has 3 answers it has not read yet; reload the page", 1)


def test_a_raw_asgi_429_that_names_no_wait_still_says_one_second():
    """`send_json`, the raw-ASGI layers' one error edge (gradio's streams' cap among its callers), never sends a
    429 without `Retry-After`; its other answers get none."""
    from clipforge.server.middleware import send_json

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(send_json(send, 429, "too_many_requests", "busy"))
    asyncio.run(send_json(send, 404, "not_found", "no such endpoint"))
    asyncio.run(send_json(send, 429, "too_many_requests", "later", 12.1))
    starts = [dict(m["headers"]) for m in sent if m["type"] == "http.response.start"]
    assert [h.get(b"retry-after") for h in starts] == [b"1", None, b"13"]


def test_the_rest_edge_adds_one_second_to_a_429_that_names_no_wait():
    """`error_response` (every FastAPI error answer) keeps a named wait and adds 1 s to a 429 without one."""
    from clipforge.server.errors import error_response

    assert error_response(429, "too_many_requests", "x").headers["retry-after"] == "1"
    assert error_response(429, "too_many_requests", "x", {"Retry-After": "7"}).headers["retry-after"] == "7"
    assert "retry-after" not in error_response(400, "bad_request", "x").headers


# -- the whole app with its UI: every UI 429 through every layer ------------------------------------------


def test_every_ui_429_reaches_the_client_with_retry_after(library, tmp_path, monkeypatch):
    """Through the whole app (error shape, HEAD, guards): a join past `ui_unread_events` (the 60 s until they are
    forgotten, s60), a join from a
    fourth new session of the minute (about 60 s: the first left the minute last), a fourth page build of the
    minute (the same), and a stream past `ui_streams_per_host` (1 s); each address its own."""
    from clipforge.server import create_app
    from clipforge.server.middleware import client_host

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(ui_new_sessions_per_minute=3, ui_unread_events=2, ui_streams_per_host=2)
    app = create_app(library, limits=limits, ui=True)
    with TestClient(app, raise_server_exceptions=False, client=("198.51.100.1", 5000)) as pending:
        blocks = app.state.ui_blocks
        search = next(i for i, fn in blocks.fns.items() if fn.name == "search")

        def join(client: TestClient, session: str):
            return client.post("/gradio_api/queue/join", json={"fn_index": search, "data": ["", None, 3, ""],
                                                                "session_hash": session, "event_data": None,
                                                                "trigger_id": None})

        session = uuid.uuid4().hex
        assert [join(pending, session).status_code for _ in range(2)] == [200, 200]
        refused = join(pending, session)
        # nobody reads them: they are forgotten `UNREAD_AGE_S` (60 s) after the page's last join (s60: it said 1 s)
        assert 55 <= _refused(refused) <= 60 and "2 answers it has not read" in refused.json()["detail"]

        sessions = TestClient(app, raise_server_exceptions=False, client=("198.51.100.2", 5000))
        assert [join(sessions, uuid.uuid4().hex).status_code for _ in range(3)] == [200] * 3
        refused = join(sessions, uuid.uuid4().hex)
        assert 50 <= _refused(refused) <= 60 and "opened 3 pages" in refused.json()["detail"]

        pages = TestClient(app, raise_server_exceptions=False, client=("198.51.100.3", 5000))
        assert [pages.get("/config", headers={"Host": f"n{i}"}).status_code for i in range(3)] == [200] * 3
        refused = pages.get("/config", headers={"Host": "n3"})
        assert 50 <= _refused(refused) <= 60 and "built 3 times" in refused.json()["detail"]

        streams = app.state.ui_streams
        for _ in range(streams.per_host):
            streams.opened(client_host({"client": ("198.51.100.4", 5000)}))
        tab = TestClient(app, raise_server_exceptions=False, client=("198.51.100.4", 5000))
        assert _refused(tab.get("/gradio_api/heartbeat/abc")) == 1
        assert tab.head("/gradio_api/heartbeat/abc").headers.get("retry-after") == "1"
