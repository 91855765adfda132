"""gradio's own routes, attacked as an anonymous client: what they answer and what they leave in the log.

Found by review 53 (each failed on the code before it):
* a number that is not finite (`1e400`, `NaN`) in the body of `cancel`, `reset` or a join's `trigger_id` made
  gradio's 422 answer raise while echoing it back: a text/plain 500 and a 17 kB traceback in the log for each
  80-byte request; a lone surrogate in a search's text made the UI's handler raise deep in the tokenizer;
* gradio's and Starlette's errors came in their own shapes (`{"detail": "Not Found"}`, a 422 whose `detail`
  list echoed the client's whole value, a text/plain CORS refusal, a text/plain 500 logged twice);
* an upload was served back with no Cache-Control (a shared cache may keep it, by heuristic freshness, for
  whoever asks next) and without `nosniff`.
"""

from __future__ import annotations

import json
import logging
import uuid

from clipforge.server.errors import INTERNAL_DETAIL
from tests.server.test_server_attack_gradio import _fn_index, run_events

JSON = {"content-type": "application/json"}
NOT_FINITE = "a UI value holds a number that is not finite (NaN, Infinity or past 1e308)"


def _logged_tracebacks(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def test_numbers_that_are_not_finite_and_lone_surrogates_are_refused_in_one_line(ui_client, caplog):
    search = _fn_index(ui_client, "search")
    join = '{"fn_index": %d, "data": [%s, null, 3, ""], "session_hash": "%s", "trigger_id": %s}'
    bodies = [
        ("/gradio_api/cancel", '{"session_hash": "x", "event_id": "y", "fn_index": 1e400}'),
        ("/gradio_api/cancel", '{"session_hash": "x", "event_id": "y", "fn_index": NaN}'),
        ("/gradio_api/reset", '{"event_id": -Infinity}'),
        ("/gradio_api/queue/join", join % (search, '"a cat"', uuid.uuid4().hex, "1e400")),
        ("/gradio_api/queue/join", join % (search, '"a \\ud800 cat"', uuid.uuid4().hex, "null")),
    ]
    with caplog.at_level(logging.INFO):
        answers = [ui_client.post(path, content=body.encode(), headers=JSON) for path, body in bodies]
    assert [a.status_code for a in answers] == [400] * 5, [a.text for a in answers]
    assert [a.json() for a in answers[:4]] == [{"error": "bad_request", "detail": NOT_FINITE}] * 4
    assert answers[4].json() == {
        "error": "bad_request",
        "detail": "a UI value holds text that is not valid Unicode (a lone surrogate)",
    }
    assert not _logged_tracebacks(caplog)
    # the page's own search still runs (read to its end: nothing of it runs on once the test is over)
    joins, done = run_events(ui_client, [(search, ["a cat", None, 3, ""])])
    assert [j.status_code for j in joins] == [200] and [m["success"] for m in done] == [True]


def test_gradios_own_errors_come_in_the_one_shape_without_the_clients_values(ui_client):
    echoed = "E" * 5000
    cancel = ui_client.post(
        "/gradio_api/cancel", json={"session_hash": [echoed], "event_id": "y", "fn_index": 0}
    )
    assert cancel.status_code == 422
    assert cancel.json() == {
        "error": "invalid_request",
        "detail": "session_hash: Input should be a valid string",
    }
    missing = ui_client.post("/gradio_api/reset", json={})
    assert missing.json() == {"error": "invalid_request", "detail": "event_id: Field required"}
    wrong_method = ui_client.delete("/")
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["allow"]
    assert wrong_method.json() == {
        "error": "method_not_allowed",
        "detail": "DELETE is not allowed on /; use GET, HEAD",
    }
    assert ui_client.get("/gradio_api/upload").json() == {
        "error": "method_not_allowed",
        "detail": "GET is not allowed on /gradio_api/upload; use POST",
    }
    head = ui_client.head("/gradio_api/upload")  # the same answer, headers only
    assert head.status_code == 405 and head.content == b""
    assert head.headers["content-length"] == ui_client.get("/gradio_api/upload").headers["content-length"]
    nowhere = ui_client.get("/gradio_api/no-such-route")
    assert nowhere.status_code == 404 and nowhere.json() == {"error": "not_found", "detail": "Not Found"}
    preflight = ui_client.options(
        "/gradio_api/upload",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 400 and preflight.headers["content-type"] == "application/json"
    assert preflight.json() == {"error": "bad_request", "detail": "Disallowed CORS origin, method"}
    assert "access-control-allow-origin" not in preflight.headers
    # answers that are not errors, and errors already in the shape, are passed on byte for byte
    assert ui_client.get("/gradio_api/info").json() == {"named_endpoints": {}, "unnamed_endpoints": {}}
    refused = ui_client.get("/gradio_api/queue/data", params={"session_hash": "gone"})
    assert refused.status_code == 404 and refused.json()["detail"] == "no such UI session; reload the page"


def test_a_crash_inside_gradio_is_one_json_500_and_one_logged_traceback(ui_client, monkeypatch, caplog):
    queue = ui_client.app.state.ui_blocks._queue

    def broken() -> None:
        raise RuntimeError("s53-canary: a bug inside gradio")

    monkeypatch.setattr(queue, "get_status", broken)
    with caplog.at_level(logging.INFO):
        answer = ui_client.get("/gradio_api/queue/status")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal_error", "detail": INTERNAL_DETAIL}
    assert "s53-canary" not in answer.text
    logged = _logged_tracebacks(caplog)
    assert len(logged) == 1 and "s53-canary" in str(logged[0].exc_info[1])


def test_an_upload_is_served_back_as_a_private_file_never_sniffed(ui_client, photos):
    uploaded = ui_client.post("/gradio_api/upload", files=[("files", ("red.png", photos[0].read_bytes()))])
    assert uploaded.status_code == 200, uploaded.text
    served = ui_client.get(f"/gradio_api/file={json.loads(uploaded.text)[0]}")
    assert served.status_code == 200 and served.content == photos[0].read_bytes()
    assert served.headers["cache-control"] == "private, no-cache"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "accept-ranges" not in served.headers
