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
    errors = _Errors()
    logging.getLogger("uvicorn.error").addHandler(errors)
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
        logging.getLogger("uvicorn.error").removeHandler(errors)
    assert len(answers) == 2, answers
    for status, content_type, retry_after, body in answers:
        assert (status, content_type, retry_after) == (503, "application/json", "5"), answers
        assert json.loads(body) == {"error": "server_stopping", "detail": "the server is stopping and did not finish "
                                    "this request; send it again once it is back"}
    assert not [r for r in caplog.records + errors.records
                if r.exc_info or "Exception in ASGI application" in r.getMessage()]
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


def _stream(url: str, path: str, seen: list) -> None:
    """Open a gradio stream (a tab's heartbeat) and read it until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        seen.append(reply.status)
        while reply.read(1):
            pass
    except (OSError, http.client.HTTPException):  # the stop closes the stream without its last chunk
        pass
    finally:
        connection.close()


class _Errors(logging.Handler):
    """What uvicorn's own error logger is handed (`build_server` gives it handlers of its own, not propagated)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_tab_open_at_the_stop_leaves_no_traceback(library, live_server, tmp_path, monkeypatch):
    """Review: an open page's heartbeat stream, cancelled by the stop, was "Exception in ASGI application" and a
    40-line CancelledError traceback in the log, at every Ctrl-C with a tab open."""
    import time

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits()
    app = create_app(library, limits=limits, ui=True)
    seen: list = []
    errors = _Errors()
    logger = logging.getLogger("uvicorn.error")
    try:
        with live_server(app, limits, log_level="info") as url:
            logger.addHandler(errors)
            tab = threading.Thread(target=_stream, args=(url, "/gradio_api/heartbeat/abc123", seen))
            tab.start()
            for _ in range(500):
                if seen:
                    break
                time.sleep(0.02)
        tab.join(30)
    finally:
        logger.removeHandler(errors)
    assert seen == [200]
    said = [r.getMessage() for r in errors.records]
    assert any("graceful shutdown exceeded" in line for line in said), said  # the stream was indeed cut
    noisy = [r.getMessage() for r in errors.records if r.exc_info or "Exception in ASGI application" in r.getMessage()]
    assert not noisy, noisy


def test_an_upload_cut_by_the_stop_says_it_may_still_be_added(library, live_server, held_calls, monkeypatch, photos):
    """Review: "did not finish this request; send it again", while the write went on and stored the image."""
    limits = ServerLimits()
    app = create_app(library, limits=limits)
    service = app.state.service
    held = held_calls(service.add)
    monkeypatch.setattr(service, "add", held)
    answers: list = []

    def upload(url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        body = (b'--XX\r\nContent-Disposition: form-data; name="file"; filename="n.png"\r\nContent-Type: image/png'
                b"\r\n\r\n" + photos[0].read_bytes() + b"\r\n--XX--\r\n")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/api/images", body, {"content-type": "multipart/form-data; boundary=XX"})
        reply = connection.getresponse()
        answers.append((reply.status, json.loads(reply.read())))
        connection.close()

    try:
        with live_server(app, limits) as url:
            client = threading.Thread(target=upload, args=(url,))
            client.start()
            for _ in range(3000):
                if held.entered:
                    break
                threading.Event().wait(0.01)
        client.join(30)
    finally:
        held.release.set()
    assert answers and answers[0][0] == 503, answers
    assert answers[0][1]["detail"].startswith("the server is stopping and did not answer this upload, but the image "
                                              "may still be added")
