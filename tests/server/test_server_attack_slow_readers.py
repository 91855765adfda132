"""Clients that ask for originals and never read the answers, against the real uvicorn server.

An original is read whole and sent a piece at a time, each piece once the client took the last: a
client that never reads keeps the whole file in the server's memory until the request's time runs
out (60 s). Nothing capped how many such answers one address could leave unread: 40 requests for
a 13 MB photo held 546 MB, and more held more. The bytes of unfinished answers are now counted per
address and in all; past its share an address is answered 429 before anything is read for it.
"""

from __future__ import annotations

import contextlib
import socket
import time

from clipforge.server import ServerLimits, api, create_app

_SIZE = 24 * 2**20  # more than the loopback socket buffers of both ends take in


def _ask(port: int, path: str, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    """(the open socket, the answer's status line) of a GET whose answer is then left unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n" not in head:
        head += sock.recv(1)
    return sock, head.split(b"\r\n", 1)[0]


def test_one_address_leaves_at_most_its_share_of_unread_originals(library, live_server, monkeypatch):
    """With the default limits an address may be sent 128 MiB at once: five such originals, not a sixth."""
    big = b"\x89PNG" + b"\0" * (_SIZE - 4)
    monkeypatch.setattr(library, "image_bytes", lambda image_id: (big, "image/png"))
    limits = ServerLimits()
    with live_server(create_app(library, ui=False, limits=limits), limits) as url:
        port = int(url.rsplit(":", 1)[1])
        held: list[socket.socket] = []
        try:
            statuses = []
            for _ in range(7):
                sock, status = _ask(port, "/api/images/1")
                held.append(sock)
                statuses.append(status.split(b" ")[1])
        finally:
            for sock in held:
                sock.close()
    assert statuses == [b"200"] * 5 + [b"429"] * 2, statuses


def test_unread_originals_are_counted_per_address_and_in_all_until_sent(library, live_server, monkeypatch):
    big = b"\x89PNG" + b"\0" * (_SIZE - 4)
    monkeypatch.setattr(library, "image_bytes", lambda image_id: (big, "image/png"))
    limits = ServerLimits(max_sending_bytes=2 * _SIZE)  # an address may hold a quarter: one file at a time
    app = create_app(library, ui=False, limits=limits)
    with live_server(app, limits) as url:
        port = int(url.rsplit(":", 1)[1])
        first, status = _ask(port, "/api/images/1")
        assert status == b"HTTP/1.1 200 OK"
        held = []
        try:
            for _ in range(5):  # each of these held another 24 MB
                sock, status = _ask(port, "/api/images/1")
                held.append(sock)
                assert status == b"HTTP/1.1 429 Too Many Requests", status
            other, status = _ask(port, "/api/images/1", source="127.0.0.2")  # another address: its own share
            held.append(other)
            assert status == b"HTTP/1.1 200 OK", status
            third, status = _ask(port, "/api/images/1", source="127.0.0.3")  # the server's budget is spent
            held.append(third)
            assert status == b"HTTP/1.1 503 Service Unavailable", status
            assert app.state.service.sending.held() == 2 * _SIZE
            first.close()  # the client goes away: its bytes are given back
            for _ in range(600):
                if app.state.service.sending.held("127.0.0.1") == 0:
                    break
                time.sleep(0.05)
            again, status = _ask(port, "/api/images/1")
            held.append(again)
            assert status == b"HTTP/1.1 200 OK", status
        finally:
            first.close()
            for sock in held:
                sock.close()


def test_small_answers_are_still_served_side_by_side(make_client, library):
    client = make_client()
    for _ in range(3):
        assert client.get("/api/images/1").status_code == 200
        assert client.get("/api/images/1/thumb").status_code == 200
    assert client.app.state.service.sending.held() == 0


def test_a_client_that_stops_reading_is_dropped_with_what_it_held(library, live_server, monkeypatch):
    """The unsent rest of an answer stayed in the server's memory, and its socket open, for as long as the
    client kept the connection (the request's timeout ended the handler, not the connection)."""
    big = b"\x89PNG" + b"\0" * (_SIZE - 4)
    monkeypatch.setattr(library, "image_bytes", lambda image_id: (big, "image/png"))
    limits = ServerLimits(header_timeout_s=1)
    app = create_app(library, ui=False, limits=limits)
    with live_server(app, limits) as url:
        sock, status = _ask(int(url.rsplit(":", 1)[1]), "/api/images/1")
        try:
            assert status == b"HTTP/1.1 200 OK"
            sending = getattr(app.state.service, "sending", None)
            for _ in range(300):  # until the server gave the bytes back (the old code never counted them)
                if sending is not None and sending.held() == 0:
                    break
                time.sleep(0.05)
            received = 0
            with contextlib.suppress(ConnectionResetError):
                while received < _SIZE and (chunk := sock.recv(1 << 20)):
                    received += len(chunk)
        finally:
            sock.close()
    assert received < _SIZE // 2, received  # the connection was dropped, not the whole answer sent later


def test_an_unread_answer_of_one_piece_is_counted_until_the_client_takes_it(
    library, live_server, monkeypatch
):
    """An answer of at most a megabyte (every thumbnail, most originals) is sent in one message: its bytes were
    given back as soon as uvicorn had them, so any number of unread ones sat in the connections' buffers while
    the budget read zero."""
    one_piece = b"\x89PNG" + b"\0" * (_SIZE - 4)  # more than the loopback's socket buffers take in
    monkeypatch.setattr(api, "_CHUNK", _SIZE)  # sent in one message, as an answer of up to a megabyte is
    monkeypatch.setattr(library, "image_bytes", lambda image_id: (one_piece, "image/png"))
    limits = ServerLimits(max_sending_bytes=2 * _SIZE)  # an address may hold one such answer at a time
    app = create_app(library, ui=False, limits=limits)
    with live_server(app, limits) as url:
        port = int(url.rsplit(":", 1)[1])
        first, status = _ask(port, "/api/images/1")
        try:
            assert status == b"HTTP/1.1 200 OK"
            second, status = _ask(port, "/api/images/1")
            second.close()
            assert status == b"HTTP/1.1 429 Too Many Requests", status
            assert app.state.service.sending.held("127.0.0.1") == len(one_piece)
        finally:
            first.close()
