"""A client that goes away while sending its body, attacked: each one wrote two tracebacks into the server log.

A REST body read by hand (`body_parsing.parse_body`: JSON, a urlencoded form or multipart) raised starlette's
`ClientDisconnect` when the client closed its connection half-way through the body - what an aborted upload, a
client-side timeout or a dropped connection does. It reached the catch-all as a bug: "unhandled error" with its
traceback, and then uvicorn's "Exception in ASGI application" with it again (~160 lines, ~10 kB of log, for a
request of a few hundred bytes, as often as anyone liked). There is nobody to answer: nothing is logged now.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from clipforge.server import ServerLimits, create_app

_BOUNDARY = "XX"
_BODIES = {
    "application/json": b'{"text": "a photo of a c',
    "application/x-www-form-urlencoded": b"text=a+photo+of+a+c",
    f"multipart/form-data; boundary={_BOUNDARY}": b'--XX\r\nContent-Disposition: form-data; name="text"\r\n\r\na ph',
}


def _recorded(app, ended: list[str], done: threading.Event, expected: int):
    """`app`, noting each HTTP request as it ends (an order of events, not a time)."""

    async def wrapper(scope, receive, send):
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                ended.append(scope["path"])
                if len(ended) >= expected:
                    done.set()

    return wrapper


def _half_sent(url: str, path: str, content_type: str, body: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) + 1000}\r\n\r\n"
        ).encode()
        sock.sendall(head + body)


@pytest.mark.parametrize("path", ["/api/search", "/api/classify", "/api/images"])
def test_a_body_cut_off_by_its_client_leaves_no_traceback(library, live_server, caplog, path):
    caplog.set_level(logging.INFO)
    limits = ServerLimits()
    ended: list[str] = []
    done = threading.Event()
    app = _recorded(create_app(library, ui=False, limits=limits), ended, done, len(_BODIES))
    with live_server(app, limits, log_level="info") as url:
        for content_type, body in _BODIES.items():
            _half_sent(url, path, content_type, body)
        assert done.wait(30), ended  # every request has ended
    noisy = [
        r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage() or r.levelno >= logging.ERROR
    ]
    assert not noisy, [r.getMessage() for r in noisy]  # before: 2 tracebacks a request


def test_an_upload_cut_off_by_its_client_leaves_no_traceback_and_no_file(
    library, live_server, caplog, tmp_path, monkeypatch, photos
):
    """gradio's parser raised at the disconnect: a 500 nobody read, three tracebacks (~20 kB) in the log."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    caplog.set_level(logging.INFO)
    limits = ServerLimits()
    ended: list[str] = []
    done = threading.Event()
    ui = create_app(library, ui=True, limits=limits)
    head = b'--XX\r\nContent-Disposition: form-data; name="files"; filename="%s.png"\r\nContent-Type: image/png\r\n\r\n'
    whole = head % b"a" + photos[0].read_bytes() + b"\r\n"
    cut = (
        head % b"a" + photos[0].read_bytes()[:100],
        whole + head % b"b" + photos[1].read_bytes()[:50],
        whole,
    )
    with live_server(_recorded(ui, ended, done, len(cut)), limits, log_level="info") as url:
        for body in cut:
            _half_sent(url, "/gradio_api/upload", "multipart/form-data; boundary=XX", body)
        assert done.wait(30), ended
    noisy = [
        r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage() or r.levelno >= logging.ERROR
    ]
    assert not noisy, [r.getMessage() for r in noisy]
    upload_dir = tmp_path / "gradio"
    assert not [p for p in upload_dir.rglob("*.png")], list(upload_dir.rglob("*"))
