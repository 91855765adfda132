"""Hostile input: bad uploads, oversized bodies, decompression bombs, path traversal, tokens, timeouts."""

from __future__ import annotations

import threading

import httpx

from clipforge.server import ServerLimits


def _raw_get(client, raw_path: str) -> httpx.Response:
    """GET with the path sent exactly as written (no client-side '..' normalisation)."""
    request = client.build_request("GET", "http://testserver/")
    request.url = httpx.URL("http://testserver/").copy_with(raw_path=raw_path.encode())
    return client.send(request)


def _upload_endpoints(data: bytes, token: str = "tok"):
    """(method args) for each endpoint that takes an image."""
    headers = {"X-Token": token}
    return [
        ("/api/images", {"files": {"file": ("photo.jpg", data, "image/jpeg")}, "headers": headers}),
        ("/api/search", {"files": {"image": ("photo.jpg", data, "image/jpeg")}, "data": {"top_k": 2}}),
        ("/api/classify", {"files": {"image": ("photo.jpg", data, "image/jpeg")}, "data": {"labels": "a, b"}}),
    ]


def _bad_files(kit, photos) -> dict[str, tuple[bytes, int, str, str]]:
    """name -> (bytes, status, error code, a word the detail must contain)."""
    jpeg = photos[1].read_bytes()
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    return {
        "text": (b"this is not an image, whatever its name says\n", 415, "not_an_image", "not an image"),
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], 422, "image_load_error", "truncated"),
        "empty": (b"", 400, "empty_file", "empty"),
        "bomb_png": (kit.png_bomb(20000, 20000), 413, "too_many_pixels", "400,000,000 pixels"),
        "bomb_below_pillow_guard": (kit.png_bomb(10000, 10000), 413, "too_many_pixels", "10000x10000"),
        "eps": (eps, 415, "not_an_image", "not an image"),  # Pillow opens EPS (via Ghostscript); we do not
    }


def test_bad_uploads_are_refused_on_every_endpoint(make_client, library, photos, kit):
    client = make_client(token="tok")
    before = library.stats()["images"]
    for name, (data, status, code, word) in _bad_files(kit, photos).items():
        for path, kwargs in _upload_endpoints(data):
            response = client.post(path, **kwargs)
            assert response.status_code == status, (name, path, response.text)
            assert response.json()["error"] == code, (name, path, response.json())
            assert word in response.json()["detail"], (name, path, response.json())
    assert library.stats()["images"] == before
    uploads = library.paths.uploads_dir
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


def test_oversized_bodies_are_cut_off_while_reading(make_client, library, kit):
    limits = ServerLimits(max_upload_bytes=50_000, form_overhead_bytes=10_000)
    client = make_client(token="tok", limits=limits)
    big = b"\xff\xd8\xff" + b"\0" * 200_000
    headers = {"X-Token": "tok"}
    # Declared too large: refused from the Content-Length alone.
    declared = client.post("/api/images", files={"file": ("big.jpg", big, "image/jpeg")}, headers=headers)
    assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"
    # No Content-Length (chunked): refused too (the count is kept as the body arrives).
    streamed = client.post("/api/search", content=(b"x" * 10_000 for _ in range(100)),
                           headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert streamed.status_code == 413 and streamed.json()["error"] == "payload_too_large"
    # A file just over the file limit but within the body allowance: refused by the per-file count.
    over = kit.encode(kit.picture((1, 2, 3), 5), "PNG") + b"\0" * 51_000
    per_file = client.post("/api/images", files={"file": ("x.png", over, "image/png")}, headers=headers)
    assert per_file.status_code == 413 and "50,000" in per_file.json()["detail"]
    # Pixel ceiling is configurable too: a real 64x48 picture over a 1000-pixel limit.
    small_limit = make_client(limits=ServerLimits(max_pixels=1000))
    tiny = small_limit.post("/api/search", files={"image": ("x.png", kit.encode(kit.picture((9, 9, 9), 1)))})
    assert tiny.status_code == 413 and tiny.json()["error"] == "too_many_pixels"
    assert library.stats()["images"]["ok"] == 8


TRAVERSALS = [
    "/api/images/../../etc/passwd",
    "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/images/..%2f..%2f..%2fetc%2fpasswd/thumb",
    "/api/images/%2fetc%2fpasswd",
    "/api/images//etc/passwd",
    "/api/images/1/../../../etc/passwd",
    "/api/images/-1",
    "/api/images/1.5",
    "/api/images/0x10",
    "/api/images/%EF%BC%91",  # a full-width digit one: int() would accept it, the id grammar does not
    "/api/images/1%00",
    "/api/images/99999999999999999999999",
    "/api/images/abc/thumb",
]


def test_path_traversal_never_opens_the_path(make_client, library, opened_paths):
    client = make_client()
    # Positive control: a legitimate request's file open is seen by the audit hook.
    first = library.list_images(limit=1)[0]
    assert client.get(f"/api/images/{first.id}").status_code == 200
    assert first.path in opened_paths
    opened_paths.clear()
    for raw_path in TRAVERSALS:
        response = _raw_get(client, raw_path)
        assert 400 <= response.status_code < 500, (raw_path, response.status_code)
        body = response.json()
        assert set(body) == {"error", "detail"} and body["error"] in {"invalid_id", "not_found"}, raw_path
        assert "root:" not in response.text
    assert not [p for p in opened_paths if "passwd" in p]


def test_a_client_path_to_a_real_image_is_not_served(make_client, tmp_path, kit, opened_paths):
    secret = tmp_path / "secret.png"
    secret.write_bytes(kit.encode(kit.picture((1, 1, 1), 3)))
    opened_paths.clear()
    client = make_client()
    for raw in (f"/api/images/{secret}", f"/api/images/..%2f..{secret}", f"/api/images/{str(secret)[1:]}/thumb"):
        response = _raw_get(client, raw)
        assert 400 <= response.status_code < 500
    assert str(secret) not in opened_paths


def test_write_endpoints_need_the_token(make_client, kit, library, monkeypatch):
    import clipforge.server.security as security

    compared = []
    real = security.hmac.compare_digest
    monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    client = make_client(token="correct horse")
    data = kit.encode(kit.picture((5, 100, 5), seed=7))
    upload = {"files": {"file": ("x.png", data, "image/png")}}
    missing = client.post("/api/images", **upload)
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    for headers in ({"Authorization": "Bearer wrong"}, {"X-Token": "correct"}, {"Authorization": "Basic correct horse"},
                    {"Authorization": "Bearer "}):
        response = client.post("/api/images", headers=headers, **upload)
        assert response.status_code == 401, headers
    assert library.stats()["images"]["ok"] == 8
    assert compared  # wrong tokens were compared in constant time
    bearer = client.post("/api/images", headers={"Authorization": "bearer correct horse"}, **upload)
    assert bearer.status_code == 201
    other = kit.encode(kit.picture((5, 5, 100), seed=8))
    x_token = client.post("/api/images", headers={"X-Token": "correct horse"},
                          files={"file": ("y.png", other, "image/png")})
    assert x_token.status_code == 201
    assert library.stats()["images"]["ok"] == 10
    # Reads stay open.
    assert client.post("/api/search", data={"text": "green"}).status_code == 200
    assert client.get("/api/images").status_code == 200


def test_without_a_token_uploads_are_open(make_client, kit):
    client = make_client()
    response = client.post("/api/images", files={"file": ("x.png", kit.encode(kit.picture((7, 7, 7), 1)))})
    assert response.status_code == 201


def test_slow_requests_time_out_with_json(make_client, library, monkeypatch):
    client = make_client(limits=ServerLimits(request_timeout_s=0.3))
    service = client.app.state.service
    finished, answered = threading.Event(), threading.Event()

    def slow_search(*args, **kwargs):
        answered.wait(60)  # the work goes on until the client has its answer: an order, not a time
        finished.set()
        return [], 0.0

    monkeypatch.setattr(service, "search", slow_search)
    response = client.post("/api/search", data={"text": "cat"})
    was_finished = finished.is_set()
    answered.set()
    assert response.status_code == 503 and response.json()["error"] == "timeout"
    assert not was_finished  # answered before the slow work finished
    assert client.get("/healthz").status_code == 200  # the server is still serving


def test_body_limit_stops_the_app_at_the_limit_and_drains_a_bounded_rest():
    """At the ASGI level: the app never sees more than the limit of a chunked body; the rest is read
    and discarded only up to `drain_bytes` (so the client can read the 413), then the 413 goes out."""
    import asyncio

    from clipforge.server.middleware import BodyLimitMiddleware

    seen_by_app = []

    async def app(scope, receive, send):  # reads the whole body, then answers 200
        while True:
            message = await receive()
            seen_by_app.append(len(message["body"]))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def run(drain_bytes):
        pulled, sent = [], []
        seen_by_app.clear()

        async def receive():
            pulled.append(1)
            return {"type": "http.request", "body": b"x" * 1000, "more_body": len(pulled) < 1000}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/images",
                 "headers": [(b"transfer-encoding", b"chunked")]}
        asyncio.run(BodyLimitMiddleware(app, max_bytes=10_500, drain_bytes=drain_bytes)(scope, receive, send))
        return pulled, sent

    pulled, sent = run(drain_bytes=20_000)
    assert sum(seen_by_app) == 10_000  # the chunk that crossed 10,500 is not handed to the app
    assert len(pulled) == 21  # 11 chunks up to the limit, then discarded until more than 20,000 bytes
    assert sent[0]["status"] == 413 and b"payload_too_large" in sent[1]["body"]
    pulled, sent = run(drain_bytes=0)
    assert len(pulled) == 11 and sent[0]["status"] == 413

    # A body that arrived whole (over the limit) is not waited on again: receive() would block until
    # the client goes away.
    calls = []

    async def whole_body():
        calls.append(1)
        assert len(calls) == 1, "receive() called after the body was complete"
        return {"type": "http.request", "body": b"x" * 20_000, "more_body": False}

    sent.clear()
    scope = {"type": "http", "method": "POST", "path": "/api/images", "headers": []}

    async def keep(message):
        sent.append(message)

    asyncio.run(BodyLimitMiddleware(app, max_bytes=10_500)(scope, whole_body, keep))
    assert calls == [1] and sent[0]["status"] == 413


def test_crashes_become_json_without_internals(make_client, monkeypatch):
    from clipforge.server.errors import INTERNAL_DETAIL

    client = make_client(raise_server_exceptions=False)
    service = client.app.state.service

    def broken():
        raise RuntimeError("secret internal state /very/private/path")

    monkeypatch.setattr(service, "stats", broken)
    response = client.get("/api/stats")
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": INTERNAL_DETAIL}
    assert "/very/private/path" not in response.text and "RuntimeError" not in response.text


def test_token_guessing_is_slowed_per_address(make_client, kit, library, monkeypatch):
    """Wrong tokens were answered 401 as fast as a client could send them, without limit: a short token could be
    guessed. After `MAX_WRONG_TOKENS` wrong tokens from one address within `WRONG_TOKEN_WINDOW_S`, that address's
    writes are refused (429, saying how long to wait) without comparing anything, even with the right token,
    until the window has passed; other addresses are not affected, and the UI's token box counts the same."""
    from fastapi.testclient import TestClient

    import clipforge.server.security as security

    now = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: now[0])
    client = make_client(token="correct horse")
    data = kit.encode(kit.picture((5, 100, 5), seed=7))
    upload = {"files": {"file": ("x.png", data, "image/png")}}
    statuses = [client.post("/api/images", headers={"X-Token": f"guess{i}"}, **upload).status_code
                for i in range(security.MAX_WRONG_TOKENS + 3)]
    assert statuses == [401] * security.MAX_WRONG_TOKENS + [429] * 3, statuses
    locked = client.post("/api/images", headers={"X-Token": "correct horse"}, **upload)
    assert locked.status_code == 429 and "wrong tokens" in locked.json()["detail"] and "wait" in locked.json()["detail"]
    other = TestClient(client.app, client=("198.51.100.4", 1234))
    assert other.post("/api/images", headers={"X-Token": "correct horse"}, **upload).status_code == 201
    service = client.app.state.service
    from clipforge.server.errors import APIError

    try:
        service.tokens.verify("correct horse", "testclient")  # the UI's box: the same lock
        raise AssertionError("the UI's token check was not locked")
    except APIError as refused:
        assert refused.status == 429 and "wrong tokens" in refused.detail
    now[0] += security.WRONG_TOKEN_WINDOW_S + 1
    again = client.post("/api/images", headers={"X-Token": "correct horse"},
                        files={"file": ("y.png", kit.encode(kit.picture((5, 5, 100), seed=8)), "image/png")})
    assert again.status_code == 201


def test_an_image_id_in_a_path_has_one_spelling(make_client, library):
    """`/api/images/1_0` answered image 10, and `+1`, `01`, `1.0` and a full-width `１` answered image 1: several
    URLs for one image (a cache or a proxy rule keyed on the URL sees different images). Only plain digits now."""
    client = make_client()
    first = library.list_images()[0].id
    assert client.get(f"/api/images/{first}").status_code == 200
    for spelling in (f"{first}_0", f"+{first}", f"0{first}", f"{first}.0", chr(0xFF10 + first), f" {first}"):
        for route in (f"/api/images/{spelling}", f"/api/images/{spelling}/thumb"):
            answer = client.get(route)
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_id", (route, answer.text)
            assert "digits 0-9" in answer.json()["detail"]


def test_an_id_given_to_another_photo_is_not_served_from_the_browsers_copy(make_client, library, kit):
    """Ids are reused (`index remove`, then a new photo may get the same id), and originals and thumbnails were
    sent with `max-age=3600`: a browser kept showing the removed photo for the new one, unasked, for an hour.
    Now they are revalidated each time (`no-cache`) against an ETag that is the content's sha256."""
    client = make_client()
    first = library.add_bytes(kit.encode(kit.picture((200, 30, 30), seed=91)), filename="old.png")
    served = client.get(f"/api/images/{first.id}")
    assert served.headers["cache-control"] == "private, no-cache"
    assert served.headers["etag"] == f'"{first.sha256}"'
    thumb = client.get(f"/api/images/{first.id}/thumb", params={"size": 32})
    assert client.get(f"/api/images/{first.id}", headers={"If-None-Match": served.headers["etag"]}).status_code == 304
    library.remove(first.id)
    second = library.add_bytes(kit.encode(kit.picture((30, 30, 200), seed=92)), filename="new.png")
    assert second.id == first.id  # (SQLite gives the largest id + 1: the removed one again)
    for route, tag in ((f"/api/images/{first.id}", served.headers["etag"]),
                       (f"/api/images/{first.id}/thumb?size=32", thumb.headers["etag"])):
        fresh = client.get(route, headers={"If-None-Match": tag})
        assert fresh.status_code == 200 and fresh.headers["etag"] != tag
    assert client.get(f"/api/images/{first.id}").content == library.image_bytes(second.id)[0]
