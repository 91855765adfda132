"""A `queue/data` stream whose URL names its session twice, attacked (found by review 3 of session 53).

The guard read the first `session_hash` of the query string; gradio (FastAPI) reads the last. So
`?session_hash=<a live session>&session_hash=gone` passed the guard's "no such UI session" check and gradio
answered 200 and logged the traceback the check exists to spare (one per anonymous request); and a stream that
read one session's answers counted another as being read, and as seen when it ended: each such request renewed a
never-read session's answers (and the lockout they make) past `UNREAD_AGE_S`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app, ui_events
from tests.server.test_attack_s53_unread import _answered, _guard
from tests.server.test_server_attack_gradio import _fn_index, _join, run_events

UNREAD_AGE_S = getattr(ui_events, "UNREAD_AGE_S", 60.0)


def _stream(client, *sessions: str) -> list[dict]:
    """The messages of `queue/data` asked with `session_hash` once per session, in this order."""
    query = "&".join(f"session_hash={s}" for s in sessions)
    answer = client.get(f"/gradio_api/queue/data?{query}")
    if answer.status_code != 200:
        return [answer.json()]
    return [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]


def test_a_stream_naming_a_live_session_first_and_an_unknown_one_last_is_refused(ui_client, caplog):
    page = _fn_index(ui_client, "first_page")
    run_events(ui_client, [(page, [])])  # a session gradio holds (its answers read)
    queue = ui_client.app.state.ui_blocks._queue
    live = next(iter(queue.pending_messages_per_session))
    with caplog.at_level(logging.INFO):
        refused = _stream(ui_client, live, "gone")
    assert refused == [{"error": "not_found", "detail": "no such UI session; reload the page"}]
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def test_a_stream_counts_as_reading_the_session_gradio_reads(library, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = create_app(library, ui=True, limits=ServerLimits(ui_pending_per_host=4))
    with TestClient(app, raise_server_exceptions=False) as client:
        page, queue = _fn_index(client, "first_page"), client.app.state.ui_blocks._queue
        read_later, *never_read = [uuid.uuid4().hex for _ in range(4)]
        assert [_join(client, page, [], s).status_code for s in [read_later, *never_read]] == [200] * 4
        _answered(queue, [read_later, *never_read])
        later = time.monotonic() + UNREAD_AGE_S + 1
        _guard(client).rules.clock = lambda: later
        # gradio reads `read_later`'s answer here; `never_read[0]`, named first, is read by nobody
        messages = _stream(client, never_read[0], read_later)
        assert [m["msg"] for m in messages][-2:] == ["process_completed", "close_stream"], messages
        joined = uuid.uuid4().hex
        assert _join(client, page, [], joined).status_code == 200
        _answered(queue, [joined])  # nothing of it runs on once the test (and its library) is over
        assert [s for s in never_read if s in queue.pending_event_ids_session] == []
        # a page whose answers were forgotten (left for good) searches again: joined and read as ever
        assert _join(client, page, [], never_read[1]).status_code == 200
        messages = _stream(client, never_read[1])
        assert [m["msg"] for m in messages][-2:] == ["process_completed", "close_stream"], messages
        assert messages[-2]["success"] is True
