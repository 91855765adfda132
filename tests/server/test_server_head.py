"""HEAD is answered as GET is, without the body, on every GET route: the API's, the docs' and gradio's.

Before, FastAPI's routes answered HEAD with 405 (`curl -I /healthz`, a load balancer's health check, a client
asking an image's size and type), and gradio's did on all but a few paths. `head.HeadAsGetMiddleware` (outermost)
hands a HEAD to the app as a GET and drops the body: same status and headers (Content-Length, Content-Type, ETag,
Cache-Control), the same checks (Host, the UI guard, per-address caps), nothing more than the GET does.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app

_HOP = {"date", "transfer-encoding", "connection", "keep-alive"}


def _headers(answer) -> dict[str, str]:
    return {k.lower(): v for k, v in answer.headers.items() if k.lower() not in _HOP}


def _same_as_get(client, path: str, **kwargs):
    """HEAD `path`: the GET's status and headers, and no body. Returns the HEAD's answer."""
    got = client.get(path, **kwargs)
    head = client.head(path, **kwargs)
    assert head.status_code == got.status_code, (path, head.status_code, got.status_code, head.text)
    assert head.content == b"", path
    assert _headers(head) == _headers(got), path
    return head


def test_head_answers_every_get_route_of_the_api_with_the_get_s_headers(ui_client):
    first = ui_client.get("/api/images", params={"limit": 1}).json()["images"][0]
    image = f"/api/images/{first['id']}"
    health = _same_as_get(ui_client, "/healthz")
    assert health.status_code == 200 and health.headers["content-type"] == "application/json"
    assert int(health.headers["content-length"]) == len(ui_client.get("/healthz").content)
    photo = _same_as_get(ui_client, image)  # learn a photo's size and type without downloading it
    assert photo.status_code == 200 and photo.headers["content-type"].startswith("image/")
    assert int(photo.headers["content-length"]) == len(ui_client.get(image).content)
    assert photo.headers["etag"] and photo.headers["cache-control"] == "private, no-cache"
    not_modified = ui_client.head(image, headers={"If-None-Match": photo.headers["etag"]})
    assert not_modified.status_code == 304 and not_modified.headers["etag"] == photo.headers["etag"]
    for path in (f"{image}/thumb", "/api/images", "/api/stats", "/openapi.json", "/docs"):
        assert _same_as_get(ui_client, path).status_code == 200, path
    # errors are the GET's errors
    missing = _same_as_get(ui_client, "/api/images/999999")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    assert _same_as_get(ui_client, "/api/images/01").status_code in (400, 422)
    assert _same_as_get(ui_client, "/api/nothing").status_code == 404
    # a POST-only route still answers 405 (its Allow unchanged); a GET route's 405 says HEAD works too
    search = ui_client.head("/api/search")
    assert search.status_code == 405 and search.headers["allow"] == "POST" and search.content == b""
    assert ui_client.post("/healthz").headers["allow"] == "GET, HEAD"
    assert ui_client.delete("/api/images/1").headers["allow"] == "GET, HEAD"
    # the Host rule holds for HEAD as for GET
    foreign = ui_client.head("/healthz", headers={"Host": "attacker.example"})
    assert foreign.status_code == 400 and foreign.content == b""


def test_head_through_the_ui_mount_passes_the_same_guard(ui_client, tmp_path, photos):
    for path in ("/", "/config", "/gradio_api/info", "/theme.css", "/robots.txt", "/favicon.ico"):
        assert _same_as_get(ui_client, path).status_code == 200, path
    # gradio's file route: only this browser's own uploads, for HEAD as for GET
    stored = ui_client.post("/gradio_api/upload", files=[("files", ("p.png", photos[0].read_bytes(), "image/png"))])
    path = stored.json()[0]
    own = _same_as_get(ui_client, f"/gradio_api/file={path}")
    assert own.status_code == 200 and int(own.headers["content-length"]) == photos[0].stat().st_size
    for target in ("/etc/passwd", str(photos[1]), f"{tmp_path}/gradio/../secret"):
        assert _same_as_get(ui_client, f"/gradio_api/file={target}").status_code == 403, target
    stranger = TestClient(ui_client.app, client=("192.0.2.9", 5000))  # no uploader cookie: not its upload
    assert stranger.head(f"/gradio_api/file={path}").status_code == 403
    for unused in ("/gradio_api/startup-events", "/login", "/gradio_api/upload_progress"):
        assert _same_as_get(ui_client, unused).status_code == 404, unused
    # a HEAD on a stream route counts against the address's streams like a GET (429 when they are held)
    from clipforge.server.middleware import client_host

    streams = ui_client.app.state.ui_streams
    host = client_host({"client": ("testclient", 50000)})
    for _ in range(streams.per_host):
        streams.opened(host)
    assert _same_as_get(ui_client, "/gradio_api/heartbeat/abc").status_code == 429


def test_head_of_a_streamed_original_over_a_real_socket_sends_headers_only(library, live_server, tmp_path,
                                                                             monkeypatch):
    """An original over 1 MB is streamed a megabyte at a time; a HEAD of it answers at once with its length,
    and the connection serves the next request (the app's stream stopped). A HEAD of gradio's heartbeat (a stream
    that never ends) answers at once too, and gives its place back."""
    import numpy as np
    from PIL import Image

    big = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (800, 800, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 1 << 20
    library.add([big], workers=0, progress=False)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(ui_streams_per_host=3)
    app = create_app(library, ui=True, limits=limits)
    with live_server(app, limits) as url:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=20)
        connection.request("GET", "/api/images?limit=500")
        images = json.loads(connection.getresponse().read())["images"]
        path = next(f"/api/images/{i['id']}" for i in images if i["filename"] == "noise.png")
        started = time.monotonic()
        connection.request("HEAD", path)
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        assert int(head.getheader("content-length")) == big.stat().st_size
        assert head.getheader("content-type") == "image/png" and head.getheader("etag")
        for _ in range(6):  # twice the address's streams: each HEAD gave its place back
            connection.request("HEAD", "/gradio_api/heartbeat/abc")
            beat = connection.getresponse()
            assert beat.status == 200 and beat.read() == b""
        connection.request("GET", "/healthz")  # the same connection goes on
        assert connection.getresponse().status == 200
        assert time.monotonic() - started < 15
        connection.close()
        # the bytes on the wire: a status line, headers, and nothing after them
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head_part, _, rest = raw.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 200") and rest == b""
