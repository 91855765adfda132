"""Attacks a web page makes through its visitor's browser (`clipforge.server.origins`).

Found by a review against a live `clipforge serve` (no token, the default): `curl -H "Origin:
http://evil.example" -F file=@red.png http://127.0.0.1:7861/api/images` answered 201 (a form post is a
"simple request" the browser sends cross-site without asking), and `Host: attacker.example:7861` was
answered 200 on `/` and `/api/images` (a DNS-rebinding page reads the whole library as its own origin).
Each test below failed on the code before the fix.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")


@pytest.fixture()
def app_client(library):
    from fastapi.testclient import TestClient

    from clipforge.server import create_app

    clients = []

    def make(**kwargs):
        clients.append(TestClient(create_app(library, **kwargs)))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def _upload(client, kit, seed: int, headers: dict[str, str]):
    data = kit.encode(kit.picture((30, 200, 90), seed=seed))
    return client.post("/api/images", files={"file": (f"p{seed}.png", data, "image/png")}, headers=headers)


def test_another_sites_page_cannot_add_photos(app_client, kit, library):
    client = app_client(ui=False)
    before = library.stats()["images"]["ok"]
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "http://127.0.0.1:9999"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site", "Origin": "http://a.localhost"}):
        answer = _upload(client, kit, 1, headers)
        assert answer.status_code == 403, (headers, answer.text)
        assert answer.json()["error"] == "cross_site_request"
        assert "another site" in answer.json()["detail"]
    assert library.stats()["images"]["ok"] == before
    # the server's own page (same origin), and clients that are not browsers, still add
    assert _upload(client, kit, 2, {"Origin": "http://testserver"}).status_code == 201
    assert _upload(client, kit, 3, {"Sec-Fetch-Site": "same-origin", "Origin": "https://photos.example.com"}
                   ).status_code == 201  # the browser's word: a proxy may rewrite Host
    assert _upload(client, kit, 4, {}).status_code == 201
    assert library.stats()["images"]["ok"] == before + 3
    # reads stay open to any page's requests (the browser hides their answers: no CORS)
    assert client.get("/api/stats", headers={"Origin": "http://evil.example"}).status_code == 200


def test_a_cross_site_search_post_is_refused_before_its_body_is_read(app_client):
    client = app_client(ui=False)
    answer = client.post("/api/search", content=b"&" * 100_000, headers={
        "Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 403 and answer.json()["error"] == "cross_site_request"


def test_a_rebinding_pages_host_name_is_not_answered(app_client):
    client = app_client(ui=False)
    for host in ("attacker.example:7861", "attacker.example", "ATTACKER.example.:80", "127.0.0.1.nip.io:7860"):
        answer = client.get("/api/images", headers={"Host": host})
        assert answer.status_code == 400, (host, answer.text)
        assert answer.json()["error"] == "host_not_allowed"
        assert "--allowed-host" in answer.json()["detail"]
        assert client.get("/docs", headers={"Host": host}).status_code == 400
    import socket

    own = socket.gethostname().split(".")[0]
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "192.168.1.20", "myhost", "app.localhost:7860",
                 f"{own}.local:7860"):
        assert client.get("/api/images", headers={"Host": host}).status_code == 200, host
    listed = app_client(ui=False, allowed_hosts=["photos.example.com"])
    assert listed.get("/api/images", headers={"Host": "photos.example.com"}).status_code == 200
    assert listed.get("/api/images", headers={"Host": "other.example.com"}).status_code == 400
    # a proxy that forwards its public name as Origin but this server's address as Host: listed names count
    answer = listed.post("/api/search", json={"text": "red"}, headers={
        "Host": "127.0.0.1:7860", "Origin": "https://photos.example.com"})
    assert answer.status_code == 200, answer.text
    anything = app_client(ui=False, allowed_hosts=["*"])
    assert anything.get("/api/images", headers={"Host": "attacker.example"}).status_code == 200


def test_the_web_apps_routes_are_guarded_and_nothing_may_frame_it(app_client, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    client = app_client(ui=True)
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert client.get("/api/stats").headers["x-frame-options"] == "DENY"
    evil = {"Origin": "http://evil.example"}
    upload = client.post("/gradio_api/upload", files=[("files", ("a.png", b"x", "image/png"))], headers=evil)
    assert upload.status_code == 403
    join = client.post("/gradio_api/queue/join", json={"fn_index": 0, "data": [], "session_hash": "s"}, headers=evil)
    assert join.status_code == 403
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
