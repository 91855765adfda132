"""What a client still waiting when the server stops is told, and what a write cut by the time limit says.

* uvicorn cancels the requests still running 5 s after SIGTERM/SIGINT: each was answered `500 text/plain "Internal
  Server Error"` and left a full traceback in the log ("Exception in ASGI application"). Now a 503 in the REST shape
  (`server_stopping`, `Retry-After`) and one warning line each.
* An upload cut by `request_timeout_s` goes on in its thread and is stored; its 503 said it "was abandoned", so a
  client believed it lost. Now it says the image may still be added, and how to find out.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading

from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app


def _post(url: str, path: str, body: dict, answers: list) -> None:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        reply = connection.getresponse()
        answers.append((reply.status, reply.getheader("content-type"), reply.getheader("retry-after"), reply.read()))
    except OSError as exc:
        answers.append(("gone", str(exc)))
    finally:
        connection.close()


def test_requests_cut_by_the_servers_stop_get_a_503_and_no_traceback(
    library, live_server, held_calls, caplog, monkeypatch
):
    """Before: 500 text/plain and one "Exception in ASGI application" traceback per request in flight."""
    caplog.set_level(logging.WARNING)
    limits = ServerLimits()
    app = create_app(library, limits=limits)
    service = app.state.service
    held = held_calls(service.search)
    monkeypatch.setattr(service, "search", held)
    answers: list = []
    try:
        with live_server(app, limits) as url:
            clients = [threading.Thread(target=_post, args=(url, "/api/search", {"text": f"a cat {i}"}, answers))
                       for i in range(2)]
            for client in clients:
                client.start()
            held.wait_placed(service.gate, 2)
        # leaving the block stops the server as SIGTERM does: it waits 5 s for the requests, then cancels them
        for client in clients:
            client.join(30)
    finally:
        held.release.set()
    assert len(answers) == 2, answers
    for status, content_type, retry_after, body in answers:
        assert (status, content_type, retry_after) == (503, "application/json", "5"), answers
        assert json.loads(body) == {"error": "server_stopping", "detail": "the server is stopping and did not finish "
                                    "this request; send it again once it is back"}
    assert not [r for r in caplog.records if r.exc_info or "Exception in ASGI application" in r.getMessage()]
    assert sum("POST /api/search: cut off by the server's stop" in r.getMessage() for r in caplog.records) == 2


def test_an_upload_cut_by_the_time_limit_says_it_may_still_be_added(library, held_calls, monkeypatch, photos):
    """Before: "... was abandoned; try a smaller image or fewer labels", while the image was then stored."""
    limits = ServerLimits(request_timeout_s=0.5)
    app = create_app(library, limits=limits)
    service = app.state.service
    held = held_calls(service.add)
    monkeypatch.setattr(service, "add", held)
    try:
        with TestClient(app) as client:
            answer = client.post("/api/images", files={"file": ("new.png", photos[0].read_bytes(), "image/png")})
    finally:
        held.release.set()
    assert answer.status_code == 503
    assert answer.json()["detail"] == (
        "the upload took longer than 0.5 s (waiting for its turn included) and its answer was abandoned, but the "
        "image may still be added: look for it (GET /api/images) or send it again (an identical file is answered "
        "created: false)")
