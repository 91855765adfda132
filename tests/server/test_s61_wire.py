"""What the server's sockets and HTTP parser do before any app runs (audit 61, attacker2 1 and 5).

- Nagle's algorithm: `bind_socket` made its socket without naming the protocol, and asyncio sets ``TCP_NODELAY``
  only on connections accepted from a socket whose protocol is ``IPPROTO_TCP``; every answer after the first on a
  kept-alive connection then waited for the client's delayed ACK (~44 ms a request measured, 2.3 s for 50 cached
  thumbnails through one httpx client).
- A request uvicorn cannot parse (a repeated Content-Length) was answered in text/plain, outside the one error
  shape every other answer has.
"""

from __future__ import annotations

import asyncio
import json
import socket

from clipforge.server.runner import bind_socket


def test_connections_accepted_by_the_servers_socket_have_nagle_off():
    async def accept_one() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        class Record(asyncio.Protocol):
            def connection_made(self, transport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        listening = bind_socket("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Record, sock=listening)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listening.getsockname()[1])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value
        finally:
            server.close()

    assert asyncio.run(accept_one()) != 0


def test_a_request_uvicorn_cannot_parse_is_answered_in_the_one_error_shape(library, live_server):
    from clipforge.server import ServerLimits, create_app

    limits = ServerLimits()
    with live_server(create_app(library, ui=False, limits=limits), limits) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
            conn.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                         b"Content-Length: 6\r\n\r\nhello!")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"content-type: application/json" in head.lower()
    payload = json.loads(body)
    assert payload["error"] == "bad_request" and payload["detail"].startswith("malformed HTTP request")


def test_serve_runs_with_the_start_up_heap_frozen_and_gives_it_back(tmp_path, kit, monkeypatch):
    """A full garbage collection walked start-up's ~300,000 objects on the event loop (130-185 ms a pass, every
    few seconds under a stream of uploads): they are frozen while the server runs, unfrozen when it stops."""
    import gc

    import uvicorn

    from clipforge.library import Library
    from clipforge.server.runner import serve

    photos = kit.write_photos(tmp_path / "photos")
    with Library(tmp_path / "lib", model="test-vit-tiny") as library:
        library.add(photos[:2], workers=0, progress=False)
    frozen: list[int] = []

    def fake_run(self, sockets=None):
        frozen.append(gc.get_freeze_count())
        for sock in sockets or []:
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    before = gc.get_freeze_count()
    assert serve(tmp_path / "lib", host="127.0.0.1", port=0, ui=False) == 0
    assert frozen and frozen[0] > before + 10_000
    assert gc.get_freeze_count() == before
