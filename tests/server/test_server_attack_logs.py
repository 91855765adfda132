"""Attacks on the server's log, against the real uvicorn server `clipforge serve` runs.

uvicorn writes one access-log line per request with the whole request target and method: an
anonymous client filled the log at 15 kB a line (a request line near h11's 16 KiB head limit),
as fast as it could send requests. A line holds at most a few hundred characters of any
client-chosen field, with a marker saying how much was cut, and nothing a client sends reaches
the log as a control character (a forged line, a terminal escape).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket

import pytest

from clipforge.server import ServerLimits, create_app
from clipforge.server.access_log import redact_query

_CUT = "...[+"  # the marker of a cut field: `...[+14,745 characters]`


def _send(port: int, head: bytes) -> bytes:
    """The status line of the answer to a raw request `head` (sent as is: no client re-encodes it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@contextlib.contextmanager
def _access_log():
    """What the access log's handler (the one `build_server` configured, stdout under `serve`) writes."""
    handlers = logging.getLogger("uvicorn.access").handlers
    assert handlers, "uvicorn configured no access-log handler"
    written = io.StringIO()
    previous = [handler.setStream(written) for handler in handlers]
    try:
        yield written
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)


def test_one_anonymous_request_writes_a_bounded_printable_access_log_line(library, live_server):
    """Each of these requests wrote its 15,000 characters into the log (the query, the path, the method)."""
    limits = ServerLimits()
    requests = [
        b"GET /api/stats?q=" + b"A" * 15_000 + b"&token=SECRET",
        b"GET /" + b"B" * 15_000,
        b"C" * 15_000 + b" /api/stats",
        b"GET /api/stats?q=%0d%0aINFO:%20forged%1b%5b2J%0bx%e2%80%a8y",
        b"GET /api/stats;token=SECRET",  # uvicorn logs the path quoted: `/api/stats%3Btoken%3DSECRET`
    ]
    with live_server(create_app(library, ui=False, limits=limits), limits, log_level="info") as url:
        port = int(url.rsplit(":", 1)[1])
        with _access_log() as written:
            statuses = [_send(port, head) for head in requests]
            text = written.getvalue()
    assert [s.split(b" ")[1] for s in statuses] == [b"200", b"404", b"405", b"200", b"404"], statuses
    lines = text.splitlines()
    assert len(lines) == len(requests), lines  # one line per request, none forged
    assert all(len(line) < 700 and line.isprintable() for line in lines), [len(line) for line in lines]
    assert "SECRET" not in text and all(_CUT in line for line in lines[:3]), lines
    assert '"GET /api/stats?q=' + "A" * 100 in lines[0] and "characters] HTTP/1.1" in lines[0], lines[0]
    assert lines[2].count("C") >= 100 and 'C...[+14,744 characters] /api/stats HTTP/1.1" 405' in lines[2], (
        lines[2]
    )
    assert '"GET /api/stats%3Btoken=*** HTTP/1.1" 404' in lines[4], lines[4]
    assert "?q=\\x0d\\x0aINFO: forged\\x1b[2J\\x0bx\\u2028y HTTP/1.1" in lines[3], lines[3]


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/x?password=p%26ss&a=1", "/x?password=***&a=1"),
        ("/x?token=abc%23def", "/x?token=***"),
        ("/x?api_key=ab%3Bcd", "/x?api_key=***"),
        ("/x?token=a%2523tail", "/x?token=***"),
        ("/x?a=1%26token%3Dtail", "/x?a=1&token=***"),
        ("/x?a=1?token=tail", "/x?a=1?token=***"),  # a second `?` began no parameter: `a` held the token
    ],
)
def test_a_secret_holding_an_escaped_separator_is_masked_whole(path, logged):
    """The query was decoded before it was split, so an escaped `&`, `;` or `#` inside a password ended the
    masked value there: `?password=p%26ss` was logged as `password=***&ss`, the rest of the secret in clear."""
    assert redact_query(path) == logged


def test_the_server_takes_no_websocket_handshake(library):
    """uvicorn's WebSocket protocols write each handshake's path and query to `uvicorn.error` (`?token=` in
    clear, uncut), past the access-log filter; `serve` has no WebSocket route, so none is spoken at all."""
    from clipforge.server.runner import build_server

    server = build_server(create_app(library, ui=False), ServerLimits())
    assert server.config.ws == "none" and server.config.ws_protocol_class is None
