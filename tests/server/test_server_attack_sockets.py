"""Attacks on the connection level, against the real uvicorn server on a loopback socket.

Hundreds of idle or half-sent connections must not lock anyone out (they once made every
request answer 503), connections that never finish their headers are closed, and an
oversized upload is answered with a 413 that urllib can read (not "broken pipe").
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest

from clipforge.server import ServerLimits, create_app
from clipforge.server.runner import bind_socket, build_server


@contextlib.contextmanager
def live_server(app, limits: ServerLimits):
    """(base URL, port) of `app` served by the same uvicorn setup as `clipforge serve`."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = build_server(app, limits, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _open_hostile_sockets(port: int, count: int) -> list[socket.socket]:
    """Idle sockets, sockets whose headers never end, and sockets whose body never ends, in turn."""
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 3 == 1:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        elif i % 3 == 2:
            sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                         b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n--zz\r\n")
        socks.append(sock)
    return socks


def test_hundreds_of_idle_and_half_sent_connections_do_not_lock_anyone_out(library):
    limits = ServerLimits(header_timeout_s=60)  # nothing is timed out during this test
    with live_server(create_app(library, ui=False, limits=limits), limits) as (url, port):
        socks = _open_hostile_sockets(port, 300)
        try:
            with httpx.Client(timeout=30) as client:
                for _ in range(3):
                    health = client.get(f"{url}/healthz")  # was 503 "Exceeded concurrency limit"
                    assert health.status_code == 200 and health.json()["status"] == "ok"
                    found = client.post(f"{url}/api/search", data={"text": "a red picture", "top_k": 8})
                    assert found.status_code == 200 and len(found.json()["results"]) == 8
        finally:
            for sock in socks:
                sock.close()


def test_connections_that_never_finish_their_request_are_closed(library):
    limits = ServerLimits(header_timeout_s=1)
    with live_server(create_app(library, ui=False, limits=limits), limits) as (url, port):
        socks = _open_hostile_sockets(port, 30)
        answers = []
        try:
            for sock in socks:
                sock.settimeout(15)
                data = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := sock.recv(65536):
                        data += chunk
                answers.append(data)  # recv returned b"": the server closed the connection
        finally:
            for sock in socks:
                sock.close()
        assert [a for i, a in enumerate(answers) if i % 3 != 2] == [b""] * 20  # headers never ended: dropped
        stalled_bodies = [a for i, a in enumerate(answers) if i % 3 == 2]
        assert all(a.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in a for a in stalled_bodies)
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200


def _urllib_post(url: str, body, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


BIG = 24 * 10**6  # well over what the loopback socket buffers hold


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_upload_gets_a_413_urllib_can_read(library, chunked):
    limits = ServerLimits(max_upload_bytes=50_000, form_overhead_bytes=10_000)
    headers = {"Content-Type": "multipart/form-data; boundary=zz", "X-Token": "tok"}
    body = b"--zz\r\n" + b"\0" * BIG
    payload = (body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)) if chunked else body
    with live_server(create_app(library, token="tok", ui=False, limits=limits), limits) as (url, _):
        status, answer = _urllib_post(f"{url}/api/images", payload, headers)
        assert status == 413 and answer["error"] == "payload_too_large"
        assert "60,000" in answer["detail"] and "50,000" in answer["detail"]
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200


def test_without_draining_urllib_sees_a_broken_connection(library):
    """Positive control: with nothing drained (the old behaviour) the client cannot read the 413."""
    limits = ServerLimits(max_upload_bytes=50_000, form_overhead_bytes=10_000, drain_bytes=1)
    body = b"--zz\r\n" + b"\0" * BIG
    app = create_app(library, token="tok", ui=False, limits=limits)
    with live_server(app, limits) as (url, _), pytest.raises((urllib.error.URLError, ConnectionError)):
        _urllib_post(f"{url}/api/images", body, {"Content-Type": "multipart/form-data; boundary=zz"})


def test_gradio_answering_early_still_lets_urllib_read_its_413(library, tmp_path, monkeypatch):
    """A file over the limit inside the body allowance: gradio's upload parser refuses it mid-body."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    size = 8 * 10**6
    limits = ServerLimits(max_upload_bytes=50_000, form_overhead_bytes=2 * size, ui_cache_bytes=4 * size)
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + b"\0" * size + b"\r\n--zz--\r\n")
    with live_server(create_app(library, ui=True, limits=limits), limits) as (url, _):
        request = urllib.request.Request(f"{url}/gradio_api/upload", data=body, method="POST",
                                         headers={"Content-Type": "multipart/form-data; boundary=zz"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 413
    leftovers = [p for p in (tmp_path / "uploads").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in leftovers) < 50_000


@pytest.mark.parametrize("route", [b"/api/images", b"/gradio_api/upload", b"/gradio_api/queue/join",
                                   b"/gradio_api/anything"])
def test_an_upload_trickling_under_the_idle_timeout_is_cut_at_the_request_timeout(library, tmp_path, monkeypatch,
                                                                                   route):
    """One byte a second never trips the 10 s idle timeout; gradio's upload route is bounded in total
    time like the REST API, so such a client cannot hold a socket (and an upload slot) forever. So is
    every other body: gradio's event routes (queue/join, or any POST the guard reads) stayed open for
    as long as a byte came every few seconds (a 1 MiB body: weeks); a body must now arrive whole within
    the request timeout (408).

    Checked as an order of events, not a time: the server ends the request (a 503, or a closed socket)
    while the client is still trickling, long before the client would stop on its own (after 120 s, or
    when its declared 100,000 bytes are sent)."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    limits = ServerLimits(request_timeout_s=2)
    with live_server(create_app(library, ui=True, limits=limits), limits) as (_, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        sock.sendall(b"POST " + route + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                     b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n--zz\r\n")
        answer, ended, sent, started = b"", False, 0, time.monotonic()
        while not ended and time.monotonic() < started + 120 and sent < 100_000:
            readable, _, _ = select.select([sock], [], [], 0.5)  # read what came before sending more
            if readable:
                try:
                    chunk = sock.recv(4096)
                except ConnectionError:  # closed by the server (a reset can discard its answer)
                    chunk = b""
                answer, ended = answer + chunk, not chunk or answer.startswith(b"HTTP/") or chunk.startswith(b"HTTP/")
                continue
            with contextlib.suppress(OSError):
                sock.sendall(b"a")
                sent += 1
        sock.close()
    # The server ended the request (normally with a readable 503) while the client was still sending.
    assert ended, f"the server let a trickling upload run ({sent} bytes in {time.monotonic() - started:.0f} s)"
    assert answer == b"" or answer.startswith((b"HTTP/1.1 503", b"HTTP/1.1 408")), answer[:200]
