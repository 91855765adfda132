"""The bytes of request bodies in flight are counted per address and in all before any body is read.

One anonymous address sending 30 JSON searches of 20 MB at once took a server from 520 MB to 2 GB of memory and
8.6 s of CPU before 22 of them got their 429: the per-client cap of the model's queue counted a request only once
its body had been read, parsed and base64-decoded. Here a request past its address's share is answered 429
(`Retry-After: 1`) while the first body is still arriving, its bytes read and dropped (a whole body that would have
been parsed: 422 before), and a body past the server's share gets 503; the shares free as requests are answered."""

from __future__ import annotations

import json
import socket
import time

from clipforge.server import create_app
from clipforge.server.limits import ServerLimits

LIMITS = ServerLimits(max_upload_bytes=1_000_000, max_receiving_bytes=2_400_000)  # an address: 600,000 bytes


def _start(port: int, size: int, source: str = "127.0.0.1", path: str = "/api/search") -> socket.socket:
    """A JSON POST of `size` declared bytes whose headers and first 1,000 bytes are sent (the rest held back)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {size}\r\n\r\n".encode() + b'{"text": "' + b"a" * 990)
    return sock


def _answer(sock: socket.socket, rest: bytes = b"") -> tuple[int, dict[str, str], dict]:
    """Send `rest` of the body, then read one answer: (status, headers, JSON body)."""
    if rest:
        sock.sendall(rest)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


def _rest(size: int) -> bytes:
    return b"a" * (size - 1000 - 2) + b'"}'  # the text goes on to the declared length, then the JSON ends


def test_an_address_past_its_share_is_refused_before_its_body_is_read(library, live_server) -> None:
    app = create_app(library, limits=LIMITS, ui=False)
    with live_server(app, LIMITS) as url:
        port = int(url.rsplit(":", 1)[1])
        held = _start(port, 400_000)  # 400,000 of the address's 600,000 bytes, its body not all sent
        second = _start(port, 300_000)  # 700,000 > 600,000: refused; its bytes are read and dropped, not parsed
        status, headers, body = _answer(second, _rest(300_000))
        assert (status, headers["retry-after"], body["error"]) == (429, "1", "too_many_requests")
        assert body["detail"] == ("your address has 400,000 bytes of requests still being read or answered (at "
                                  "most 600,000 at once); wait for their answers")
        small = _start(port, 150_000)  # 550,000: within the share
        other = _start(port, 700_000, source="127.0.0.2")  # another address: 1,250,000 of the server's 2,400,000
        past_server = _start(port, 1_200_000, source="127.0.0.3")  # 2,450,000: the server's share is full
        status, headers, body = _answer(past_server, _rest(1_200_000))
        assert (status, headers["retry-after"], body["error"]) == (503, "1", "server_busy")
        assert body["detail"].startswith("this server is reading or answering 1,250,000 bytes of requests already")
        for sock, size in ((held, 400_000), (small, 150_000), (other, 700_000)):
            status, _, body = _answer(sock, _rest(size))
            assert status == 422 and "text" in body["detail"], body  # read whole: refused for its 400,000-char text
            sock.close()
        again = _start(port, 300_000)  # answered: the share is free again
        assert _answer(again, _rest(300_000))[0] == 422
        deadline = time.monotonic() + 10  # given back once its answer is sent, a moment after the client reads it
        while app.state.service.receiving.held() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.service.receiving.held() == 0
        for sock in (second, past_server, again):
            sock.close()
