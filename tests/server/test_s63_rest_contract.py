"""Audit 63, finding 1: `/openapi.json` declares every status each route really sends.

The README calls the spec "the exact contract", but listing and stats answered 429 (the "library listings" gate)
and every body route 408 (a stalled body) without declaring either; 429's `Retry-After` was declared nowhere, the
upload's accepted image types left out AVIF, and the refusals of the browser rules (400 `host_not_allowed`, 403
`cross_site_request`) were missing on most routes. Each status here is provoked for real, on every operation the
spec lists, and must be among that operation's declared responses.
"""

from __future__ import annotations

import io
import socket

import pytest
from PIL import Image

from clipforge.server import ServerLimits, create_app


def _operations(spec: dict) -> dict[tuple[str, str], dict]:
    return {(path, method.upper()): op for path, item in spec["paths"].items() for method, op in item.items()}


def _requests(kit) -> dict[tuple[str, str], dict]:
    """One request each operation accepts (with the library's image 1), as `TestClient.request` kwargs."""
    png = kit.encode(kit.picture((200, 10, 10), seed=631))
    return {
        ("/healthz", "GET"): {"url": "/healthz"},
        ("/api/search", "POST"): {"url": "/api/search", "json": {"text": "a red picture", "top_k": 2}},
        ("/api/classify", "POST"): {"url": "/api/classify", "files": {"image": ("x.png", png, "image/png")},
                                    "data": {"labels": "red, blue"}},
        ("/api/images", "GET"): {"url": "/api/images"},
        ("/api/images", "POST"): {"url": "/api/images", "files": {"file": ("x.png", png, "image/png")}},
        ("/api/images/{image_id}", "GET"): {"url": "/api/images/1"},
        ("/api/images/{image_id}/thumb", "GET"): {"url": "/api/images/1/thumb"},
        ("/api/stats", "GET"): {"url": "/api/stats"},
    }


def _answered(client, method: str, request: dict, **extra):
    return client.request(method, **request, **extra)


def _declares(op: dict, status: int, answer) -> None:
    assert str(status) in op["responses"], (status, sorted(op["responses"]), answer.text)
    assert answer.status_code == status, (status, answer.status_code, answer.text)


def test_the_browser_rules_refusals_are_declared_where_they_happen(make_client, kit):
    """400 `host_not_allowed` on every route; 403 `cross_site_request` on every route a browser may not write to."""
    client = make_client()
    spec = client.get("/openapi.json").json()
    requests = _requests(kit)
    assert set(_operations(spec)) == set(requests)  # a new route gets a request here
    for (path, method), op in _operations(spec).items():
        host = _answered(client, method, requests[path, method], headers={"Host": "evil.example.com"})
        _declares(op, 400, host)
        assert host.json()["error"] == "host_not_allowed"
        cross = _answered(client, method, requests[path, method], headers={"Origin": "http://evil.example"})
        if method == "GET":
            assert cross.status_code == 200 and "403" not in op["responses"], (path, cross.text)
        else:
            _declares(op, 403, cross)
            assert cross.json()["error"] == "cross_site_request"


def test_every_gated_route_declares_its_429_and_retry_after(make_client, kit):
    """With every per-client gate full (search/classify/add, downloads, listings), each /api route answers 429 with
    `Retry-After`, and declares both; /healthz takes no turn."""
    client = make_client()
    service = client.app.state.service
    spec = client.get("/openapi.json").json()
    requests = _requests(kit)
    for gate in (service.gate, service.reads, service.pages):
        gate.per_client = 0  # the client already holds all it may: the gate's own refusal
    for (path, method), op in _operations(spec).items():
        answer = _answered(client, method, requests[path, method])
        if path == "/healthz":
            assert answer.status_code == 200 and "429" not in op["responses"]
            continue
        _declares(op, 429, answer)
        assert answer.headers["retry-after"] == "1", answer.headers
        declared = op["responses"]["429"]["headers"]["Retry-After"]
        assert declared["required"] is True and declared["schema"] == {"type": "integer", "minimum": 1}
        assert answer.json()["detail"].startswith("you already have 0 "), answer.text
        # the gate's own words name what it holds, in the declaration too
        gate_words = answer.json()["detail"].removeprefix("you already have 0 ").split(" running")[0]
        assert gate_words in op["responses"]["429"]["description"], (gate_words, op["responses"]["429"])


def _stalled(port: int, path: str, content_type: str, first: bytes) -> bytes:
    """A request whose body stops after its first bytes: the server's whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: 1000\r\n\r\n".encode() + first)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_every_route_that_reads_a_body_declares_408(library, live_server):
    """A body that stops arriving is a 408 on every operation with a request body, and each declares it."""
    limits = ServerLimits(header_timeout_s=0.5)
    app = create_app(library, ui=False, limits=limits)
    with live_server(app, limits) as url:
        port = int(url.rsplit(":", 1)[1])
        spec = app.openapi()
        with_body = {key: op for key, op in _operations(spec).items() if "requestBody" in op}
        assert set(with_body) == {("/api/search", "POST"), ("/api/classify", "POST"), ("/api/images", "POST")}
        for (path, _), op in with_body.items():
            for media in op["requestBody"]["content"]:
                first = {"application/json": b'{"text": "fi', "application/x-www-form-urlencoded": b"text=fi",
                         "multipart/form-data": b"--XX\r\nContent-Disposition: form"}[media]
                content_type = media + ("; boundary=XX" if media.startswith("multipart/") else "")
                answer = _stalled(port, path, content_type, first)
                assert answer.startswith(b"HTTP/1.1 408 "), (path, media, answer[:300])
                assert b'"error": "request_timeout"' in answer or b'"error":"request_timeout"' in answer, answer
                assert "408" in op["responses"], (path, sorted(op["responses"]))


def test_the_upload_declares_every_image_type_it_takes(make_client):
    """The upload's file part lists each type the server accepts: an AVIF upload was 201 and its 415 named AVIF,
    but the spec's contentType left it out."""
    from clipforge.server.uploads import ACCEPTED_FORMATS

    client = make_client()
    spec = client.get("/openapi.json").json()
    declared = spec["paths"]["/api/images"]["post"]["requestBody"]["content"]["multipart/form-data"]
    types = [t.strip() for t in declared["encoding"]["file"]["contentType"].split(",")]
    Image.init()
    assert types == [Image.MIME[f] for f in ACCEPTED_FORMATS]
    if "AVIF" not in ACCEPTED_FORMATS:
        pytest.skip("this Pillow reads no AVIF")
    assert "image/avif" in types
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 90, 200)).save(buffer, "AVIF")
    created = client.post("/api/images", files={"file": ("a.avif", buffer.getvalue(), "image/avif")})
    assert created.status_code == 201, created.text


def test_a_declared_body_over_the_limit_is_a_declared_413_on_every_route(make_client, kit):
    """Review 63 revserver #6: `BodyLimitMiddleware` answers 413 to any method whose declared Content-Length is over
    the limit, a GET too, but no GET operation declared 413."""
    client = make_client()
    spec = client.get("/openapi.json").json()
    requests = _requests(kit)
    for (path, method), op in _operations(spec).items():
        answer = client.request(method, requests[path, method]["url"], headers={"Content-Length": "999999999"})
        _declares(op, 413, answer)
        assert answer.json()["error"] == "payload_too_large", answer.text
        assert "declared Content-Length over the body limit" in op["responses"]["413"]["description"], (path, method)


def test_the_declared_429_names_the_per_address_cap_too(make_client, kit):
    """Review 63 revserver #6: a gate's 429 is sent for one client's cap and for its address's (`fair.FairGate`:
    "N requests from your address are running or waiting"); the declaration described only the first."""
    client = make_client()
    service = client.app.state.service
    spec = client.get("/openapi.json").json()
    requests = _requests(kit)
    caps = {gate: gate.per_host for gate in (service.gate, service.reads, service.pages)}
    for gate in caps:
        gate.per_host = 0  # the address already holds all it may; the client itself holds nothing
    for (path, method), op in _operations(spec).items():
        if path == "/healthz":
            continue
        answer = _answered(client, method, requests[path, method])
        _declares(op, 429, answer)
        assert answer.json()["detail"] == "0 requests from your address are running or waiting; try again shortly"
        described = op["responses"]["429"]["description"]
        assert any(f"or {cap} requests from its address are" in described for cap in caps.values()), described
