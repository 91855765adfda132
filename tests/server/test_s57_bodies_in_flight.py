"""The bytes of request bodies in flight are counted per address and in all, as they arrive.

One anonymous address sending 30 JSON searches of 20 MB at once took a server from 520 MB to 2 GB of memory and
8.6 s of CPU before 22 of them got their 429: the per-client cap of the model's queue counted a request only once
its body had been read, parsed and base64-decoded. Here a request past its address's share is answered 429
(`Retry-After: 1`) while the first body is still arriving, its bytes read and dropped (a whole body that would have
been parsed: 422 before), and a body past the server's share gets 503; the shares free as requests are answered.
Counted by declared length (the first version), bytes never sent held the shares (a review's lockout)."""

from __future__ import annotations

import json
import re
import socket
import time

from clipforge.server import create_app
from clipforge.server.limits import ServerLimits

LIMITS = ServerLimits(max_upload_bytes=1_000_000, max_receiving_bytes=2_400_000)  # an address: 600,000 bytes


def _start(port: int, size: int, sent: int = 1000, source: str = "127.0.0.1",
           path: str = "/api/search") -> socket.socket:
    """A JSON POST of `size` declared bytes whose headers and first `sent` bytes are sent (the rest held back)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {size}\r\n\r\n".encode() + _body(size)[:sent])
    return sock


def _body(size: int) -> bytes:
    return b'{"text": "' + b"a" * (size - 12) + b'"}'  # a text past the limit: 422 once read whole


def _answer(sock: socket.socket, size: int = 0, sent: int = 0) -> tuple[int, dict[str, str], dict]:
    """Send the rest of a `size`-byte body after its first `sent` bytes, then read one answer: (status, headers,
    JSON body)."""
    if size > sent:
        sock.sendall(_body(size)[sent:])
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


def _held(app, expected: int) -> int:
    """The bytes in flight once they settle (given back a moment after an answer is read)."""
    deadline = time.monotonic() + 10
    while app.state.service.receiving.held() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return app.state.service.receiving.held()


def test_an_address_past_its_share_is_refused_before_its_body_is_parsed(library, live_server) -> None:
    app = create_app(library, limits=LIMITS, ui=False)
    with live_server(app, LIMITS) as url:
        port = int(url.rsplit(":", 1)[1])
        held = _start(port, 500_000, sent=400_000)  # 400,000 of the address's 600,000 bytes arrived
        assert _held(app, 400_000) == 400_000
        second = _start(port, 300_000, sent=0)  # 700,000 > 600,000: refused, its bytes read and dropped, not parsed
        status, headers, body = _answer(second, 300_000)
        assert (status, headers["retry-after"], body["error"]) == (429, "1", "too_many_requests")
        held_then = re.fullmatch(r"your address has ([\d,]+) bytes of requests still being read or answered \(at most "
                                 r"600,000 at once\); wait for their answers", body["detail"])
        assert held_then and 400_000 <= int(held_then[1].replace(",", "")) <= 600_000, body  # its own bytes so far too
        small = _start(port, 90_000, sent=89_000)  # 489,000: within the share (and 589,000 once `held` is whole)
        other = _start(port, 900_000, sent=800_000, source="127.0.0.2")  # another address: 1,289,000 in all
        assert _held(app, 1_289_000) == 1_289_000
        past_server = _start(port, 1_200_000, sent=0, source="127.0.0.3")  # 2,489,000 > 2,400,000
        status, headers, body = _answer(past_server, 1_200_000)
        assert (status, headers["retry-after"], body["error"]) == (503, "1", "server_busy")
        assert body["detail"].startswith("this server is reading or answering "), body
        for sock, size, sent in ((held, 500_000, 400_000), (small, 90_000, 89_000), (other, 900_000, 800_000)):
            status, _, body = _answer(sock, size, sent)
            assert status == 422 and "text" in body["detail"], body  # read whole: refused for its long text
            sock.close()
        assert _held(app, 0) == 0
        again = _start(port, 300_000, sent=0)  # the shares are free again
        assert _answer(again, 300_000)[0] == 422
        assert _held(app, 0) == 0
        for sock in (second, past_server, again):
            sock.close()


def test_declared_lengths_sent_a_byte_at_a_time_hold_nothing(library, live_server) -> None:
    """Counted by declared length, 16 connections of 4 addresses declaring 20 MB each and sending a byte every few
    seconds filled the server's share: every request with a body was answered 503 for as long as they trickled.
    Bytes count as they arrive: those 16 hold 16 bytes, and another client's search is answered."""
    import urllib.request

    limits = ServerLimits(max_receiving_bytes=4 * 20_262_144)
    app = create_app(library, limits=limits, ui=False)
    with live_server(app, limits) as url:
        port = int(url.rsplit(":", 1)[1])
        crowd = [_start(port, 20_262_144, sent=1, source=f"127.0.0.{10 + i // 4}") for i in range(16)]
        try:
            search = urllib.request.Request(f"{url}/api/search", data=b'{"text": "a dog", "top_k": 3}',
                                            headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(search, timeout=30) as answer:
                assert answer.status == 200
            assert _held(app, 16) == 16  # the crowd's one byte each (the search's own, given back once answered)
        finally:
            for sock in crowd:
                sock.close()
