"""The web UI's uploads as a browser sends them: every chosen file in one body, over links of any speed.

* gradio's page sends all the files a user chose in ONE request to `/gradio_api/upload`; the body limit of every route
  (one file at the limit plus form fields) refused eight ordinary 3-4 MB photos whole (HTTP 413, the selection
  cleared). That route's body may now hold one address's share of `max_receiving_bytes`; each file is still held to
  `max_upload_bytes` by gradio, and a body over the route's own limit is told to add the files in smaller groups.
* A body on a slow link was cut at `request_timeout_s` (a 4 MB photo at 50 KB/s: a 503 telling the user to "try a
  smaller image or fewer labels"). A body keeping `min_body_rate` now has one more second per that many bytes; one
  slower than that is a 408 saying how much arrived in how long.
"""

from __future__ import annotations

import socket
import time

from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app

CT = "multipart/form-data; boundary=XX"


def _files_body(sizes: list[int]) -> bytes:
    parts = [
        b'--XX\r\nContent-Disposition: form-data; name="files"; filename="p%d.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        % i + bytes([i % 251]) * size + b"\r\n"
        for i, size in enumerate(sizes)
    ]
    return b"".join(parts) + b"--XX--\r\n"


def test_a_ui_upload_of_several_files_past_one_files_limit_is_stored(library, tmp_path, monkeypatch):
    """Before: 413 `payload_too_large` for the whole selection (the body passed one file's limit + 256 KiB)."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(max_upload_bytes=100_000, max_receiving_bytes=4 * 700_000)
    body = _files_body([90_000] * 6)  # 540 kB: past 100 kB + 256 KiB, within the route's 700 kB
    assert limits.max_body_bytes < len(body) < limits.max_ui_upload_body_bytes
    with TestClient(create_app(library, ui=True, limits=limits), raise_server_exceptions=False) as client:
        answer = client.post("/gradio_api/upload", content=body, headers={"content-type": CT})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()) == 6
        too_many = _files_body([90_000] * 8)  # 720 kB: past the route's limit
        refused = client.post("/gradio_api/upload", content=too_many, headers={"content-type": CT})
        # the REST routes keep one file's limit
        rest = client.post("/api/images", content=body, headers={"content-type": CT})
    assert refused.status_code == 413
    assert refused.json() == {"error": "payload_too_large", "detail": (
        f"the files chosen at once make a request of {len(too_many):,} bytes, over the limit of 700,000 bytes for one "
        "upload from this page; add them in smaller groups (each file up to 100,000 bytes)")}
    assert rest.status_code == 413 and "exceeds the limit of 362,144 bytes" in rest.json()["detail"]


def _trickle(url: str, path: str, body: bytes, piece: int, pause: float) -> bytes:
    """POST `body` in pieces of `piece` bytes, `pause` seconds apart (stopping when the server answers): the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {CT}\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
        sock.settimeout(pause)
        answer = b""
        for start in range(0, len(body), piece):
            try:
                sock.sendall(body[start:start + piece])
            except OSError:
                break
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
        sock.settimeout(30)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


def test_a_slow_link_keeps_its_upload_and_a_slower_one_is_told_why(library, live_server, tmp_path, monkeypatch):
    """Before: both cut at `request_timeout_s` with a 503 "try a smaller image or fewer labels"."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(request_timeout_s=1.0, min_body_rate=16 * 1024)
    app = create_app(library, ui=True, limits=limits)
    body = _files_body([60_000])
    with live_server(app, limits) as url:
        begun = time.monotonic()
        kept = _trickle(url, "/gradio_api/upload", body, 8_000, 0.25)  # ~32 kB/s for ~2 s: over the 1 s
        took = time.monotonic() - begun
        slow = _trickle(url, "/gradio_api/upload", body, 500, 0.25)  # ~2 kB/s: under the rate
    assert kept.startswith(b"HTTP/1.1 200 "), kept[:300]
    assert took > 1.0  # the body took longer than `request_timeout_s` and was kept
    assert slow.startswith(b"HTTP/1.1 408 "), slow[:300]
    assert b"the request body did not arrive in time: " in slow
    assert b"where this server allows 1 s, and one more second for every 16 KiB received" in slow


def test_a_slow_bodys_extra_time_has_a_ceiling():
    """Review: without one, 64 MiB sent in 3 s bought 35 minutes (a byte every 8 s) of holding the server's bytes
    in flight: four addresses held every upload off that long."""
    from clipforge.server.body_time import body_deadline

    assert body_deadline(0.0, 60.0, 2 * 2**20, 32 * 1024) == 60.0 + 64.0  # a 2 MiB photo: 64 s more
    assert body_deadline(0.0, 60.0, 64 * 2**20, 32 * 1024) == 180.0  # never more than 2 x 60 s more


def test_a_chunked_ui_upload_reserves_the_routes_whole_limit(library, tmp_path, monkeypatch):
    """Review: a body without Content-Length reserved one file's size in the upload folder's budget while it may
    now be 64 MiB: chunked uploads filled the 200 MB folder to 296 MB."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits()
    from clipforge.server.ui_guard import UIGuardMiddleware

    with TestClient(create_app(library, ui=True, limits=limits)) as client:
        app = client.app.middleware_stack
        while not isinstance(app, UIGuardMiddleware):
            app = app.app
    assert app.uploads.max_body_bytes == limits.max_ui_upload_body_bytes > limits.max_body_bytes


def test_a_slow_request_without_a_body_is_a_503_timeout_not_a_408(library, held_calls, monkeypatch):
    """A GET whose handler never reads its (absent) body is cut by the time limit as before: no "request body did
    not arrive" for a request that has none."""
    from clipforge.server import ServerLimits

    limits = ServerLimits(request_timeout_s=0.5)
    app = create_app(library, limits=limits)
    service = app.state.service
    held = held_calls(service.stats)
    monkeypatch.setattr(service, "stats", held)
    try:
        with TestClient(app) as client:
            answer = client.get("/api/stats")
    finally:
        held.release.set()
    assert answer.status_code == 503 and answer.json()["error"] == "timeout", answer.text
