"""gradio's long-lived streams, opened by the thousand from one address.

A gradio page keeps a heartbeat stream open for as long as the tab is open
(`/gradio_api/heartbeat/<session>`), and a `queue/data` stream while its events run. Each is an
open socket and a task on the event loop for as long as the client likes, and any client may
name any session: one address could open them until the process ran out of file descriptors
(20,000 here) and nobody else could connect. An address may now hold `ui_streams_per_host`
open at once, the whole server `ui_streams`; more are answered 429 at once, and a closed
stream gives its place back.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid

import httpx
import pytest

from clipforge.server import ServerLimits, create_app
from clipforge.server.ui_streams import OpenStreams, StreamLimitMiddleware


def _open_heartbeat(base_url: str) -> tuple[socket.socket, int]:
    """A raw socket holding a heartbeat stream open, and the status the server answered."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"GET /gradio_api/heartbeat/{uuid.uuid4().hex} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status_line = b""
    while not status_line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        status_line += chunk
    return sock, int(status_line.split()[1])


def _wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_one_address_cannot_hold_more_than_its_share_of_open_streams(library, live_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(ui_streams_per_host=6)
    app = create_app(library, ui=True, limits=limits)
    with live_server(app, limits) as url:
        held = [_open_heartbeat(url) for _ in range(40)]
        try:
            statuses = [status for _, status in held]
            # before: all 40 were 200 and stayed open (and 20,000 would have been)
            assert statuses.count(200) == 6 and statuses.count(429) == 34, statuses
            refused = next(sock for sock, status in held if status == 429)
            answer = refused.recv(4096).decode(errors="replace")
            assert "6 open streams" in answer and "your address" in answer, answer
            with httpx.Client(timeout=30) as client:  # the server still answers everything else
                assert client.get(f"{url}/healthz").status_code == 200
                assert client.get(f"{url}/config").status_code == 200
        finally:
            for sock, _ in held:
                sock.close()
        # closed streams give their places back (the server notices each disconnect)
        assert _wait_for(lambda: app.state.ui_streams.count() == 0), app.state.ui_streams.count()
        again = [_open_heartbeat(url) for _ in range(6)]
        try:
            assert [status for _, status in again] == [200] * 6
        finally:
            for sock, _ in again:
                sock.close()


async def _hold_stream(limit: StreamLimitMiddleware, host: str, path: str, sent: list, release: asyncio.Event) -> None:
    path, _, query = path.partition("?")
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": query.encode(), "headers": [], "client": (host, 1234)}

    async def receive():
        await release.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append((host, message))

    await limit(scope, receive, send)


def test_the_server_as_a_whole_holds_at_most_ui_streams():
    """Full, a server closes the oldest stream of the address holding the most for a newcomer holding two fewer
    (tests/server/test_s57_streams_fair_share.py: a crowd of addresses had locked every other browser out)."""
    async def stream_app(scope, receive, send):  # a stream that lasts until its client leaves
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()

    async def scenario() -> tuple[list, int, int]:
        streams = OpenStreams(per_host=3, total=5)
        limit = StreamLimitMiddleware(stream_app, streams)
        sent: list = []
        release = asyncio.Event()
        hosts = [f"198.51.100.{i}" for i in range(4)]
        # the first address: 3 heartbeats and a queue/data (one past its share); then two from each other one
        opened = [(hosts[0], "/gradio_api/heartbeat/x")] * 3 + [(hosts[0], "/gradio_api/queue/data?session_hash=x")]
        opened += [(host, "/gradio_api/heartbeat/y") for host in hosts[1:] for _ in range(2)]
        tasks = []
        for host, path in opened:  # one after another, as they arrive
            tasks.append(asyncio.create_task(_hold_stream(limit, host, path, sent, release)))
            for _ in range(20):
                await asyncio.sleep(0)
        during = streams.count()
        release.set()
        await asyncio.gather(*tasks)
        return sent, during, streams.count()

    sent, during, after = asyncio.run(scenario())
    starts = [(host, m["status"]) for host, m in sent if m["type"] == "http.response.start"]
    assert during == 5 and after == 0
    # 198.51.100.2 takes the place of .0's oldest (it held 3, .2 none), .3 that of .1's (the newest of the two
    # holding 2); their second is refused (then no address holds two more than they do, nor more than a tab's 2)
    assert starts == [(f"198.51.100.{i}", status) for i, status in
                      [(0, 200)] * 3 + [(0, 429)] + [(1, 200)] * 2 + [(2, 200), (2, 429), (3, 200), (3, 429)]]
    ended = [host for host, m in sent if m["type"] == "http.response.body" and not m.get("body")]
    assert ended[:2] == ["198.51.100.0", "198.51.100.1"]  # ended as finished streams
    refusals = [json.loads(m["body"]) for _, m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert {r["error"] for r in refusals} == {"too_many_requests"}
    assert any("this server" in r["detail"] for r in refusals) and any("your address" in r["detail"] for r in refusals)


@pytest.mark.parametrize("path", ["/gradio_api/queue/join", "/gradio_api/upload", "/config", "/api/search",
                                  "/gradio_api/heartbeat"])
def test_other_requests_are_not_counted(path):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})

    async def scenario() -> list:
        limit = StreamLimitMiddleware(app, OpenStreams(per_host=1, total=1))
        sent: list = []
        release = asyncio.Event()
        release.set()
        for _ in range(3):
            await _hold_stream(limit, "198.51.100.1", path, sent, release)
        return sent

    assert [m["status"] for _, m in asyncio.run(scenario())] == [204, 204, 204]


def test_an_ipv6_hosts_addresses_are_one_address():
    """One IPv6 host is usually given a /64 and may send from any of its 2^64 addresses: counted one by one, each
    was a new client past every per-address cap (streams here; the fair queue, UI events and uploads alike)."""
    from clipforge.server.fair import address_key, client_key

    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:7") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:198.51.100.7") == address_key("198.51.100.7") == "198.51.100.7"
    assert address_key("testclient") == "testclient" and client_key("2001:db8::5", "tab")[0] == "2001:db8::/64"

    async def stream_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()

    async def scenario() -> list:
        limit = StreamLimitMiddleware(stream_app, OpenStreams(per_host=2, total=100))
        sent: list = []
        release = asyncio.Event()
        hosts = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8:0:1::1"]
        tasks = [asyncio.create_task(_hold_stream(limit, host, "/gradio_api/heartbeat/x", sent, release))
                 for host in hosts]
        for _ in range(50):
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)
        return [(host, m["status"]) for host, m in sent if m["type"] == "http.response.start"]

    assert sorted(asyncio.run(scenario())) == [("2001:db8:0:1::1", 200), ("2001:db8::1", 200), ("2001:db8::2", 200),
                                               ("2001:db8::3", 429)]
