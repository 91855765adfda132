"""A request body sent in tiny chunks, against the real uvicorn server `clipforge serve` runs.

h11 parses each chunk of a chunked body in Python and uvicorn copies its body buffer for each, on the
event loop every client shares: 200,000 one-byte chunks (1.2 MB on the wire) cost 1.4 s of it, and a
body at the 20 MB limit sent so would hold it for minutes. Past a few thousand pieces a body must
average a kilobyte a piece, or its connection is closed; ordinary chunked bodies are served as before.
"""

from __future__ import annotations

import contextlib
import socket

import httpx

from clipforge.server import ServerLimits, create_app


def _chunked(port: int, path: str, chunks: list[bytes]) -> bytes:
    """What the server answered (b"" when it closed the connection) to a JSON body sent in `chunks`."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: application/json\r\n\r\n".encode()
        )
        answer = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(body)
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
    return answer


def test_a_body_in_one_byte_chunks_is_cut_off(library, live_server):
    limits = ServerLimits()
    with live_server(create_app(library, ui=False, limits=limits), limits) as url:
        port = int(url.rsplit(":", 1)[1])
        text = b'{"text": "a red picture", "top_k": 2}' + b" " * 60_000
        answer = _chunked(port, "/api/search", [text[i : i + 1] for i in range(len(text))])
        assert answer == b"", answer[:200]  # was a 200 after 60,000 chunks each parsed on the event loop
        ordinary = _chunked(port, "/api/search", [text[i : i + 8192] for i in range(0, len(text), 8192)])
        assert ordinary.startswith(b"HTTP/1.1 200 OK"), ordinary[:200]
        few = _chunked(port, "/api/search", [bytes([b]) for b in b'{"text": "a red picture", "top_k": 2}'])
        assert few.startswith(b"HTTP/1.1 200 OK"), few[:200]  # a handful of tiny chunks is fine
        assert httpx.get(f"{url}/healthz").status_code == 200  # the server goes on
