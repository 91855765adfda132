"""UI answers nobody reads, attacked: they used to lock their address out of the UI until the server restarted.

gradio keeps a session's answers until its `queue/data` stream reads them, for good, and an address may leave
`ui_pending_per_host` events waiting or unread. Found by review 53: 16 joins that were never read (80-byte
anonymous requests) made every later join of that address a 429 "16 UI events waiting or unread" - still so
ten minutes later - and on loopback, or behind a proxy not named in FORWARDED_ALLOW_IPS, that address is every
user's. Answers left unread for `UNREAD_AGE_S` with no stream open are now forgotten.
"""

from __future__ import annotations

import threading
import time
import uuid

from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app, ui_events
from clipforge.server.ui_events import JoinRules
from clipforge.server.ui_guard import UIGuardMiddleware
from tests.server.test_server_attack_gradio import _fn_index, _join

# read so, the test runs (and fails) on the code before
UNREAD_AGE_S = getattr(ui_events, "UNREAD_AGE_S", 60.0)


def _guard(client) -> UIGuardMiddleware:
    guard = client.app.middleware_stack
    while not isinstance(guard, UIGuardMiddleware):
        guard = guard.app
    return guard


def _answered(queue, sessions: list[str]) -> None:
    """Returns once every event of `sessions` has run (its answer waits, unread): an order of events."""
    for _ in range(3000):
        ids = [i for s in sessions for i in queue.pending_event_ids_session.get(s, ())]
        if ids and not any(i in queue.event_ids_to_events for i in ids):
            return
        threading.Event().wait(0.01)
    raise AssertionError("the UI events did not run")


def test_answers_nobody_reads_are_forgotten_and_the_address_may_join_again(library, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = create_app(library, ui=True, limits=ServerLimits(ui_pending_per_host=4))
    with TestClient(app, raise_server_exceptions=False) as client:
        page, queue = _fn_index(client, "first_page"), client.app.state.ui_blocks._queue
        never_read = [uuid.uuid4().hex for _ in range(4)]
        assert [_join(client, page, [], s).status_code for s in never_read] == [200] * 4
        _answered(queue, never_read)
        locked = _join(client, page, [], uuid.uuid4().hex)
        assert locked.status_code == 429 and "4 UI events waiting or unread" in locked.json()["detail"]
        later = time.monotonic() + UNREAD_AGE_S + 1
        _guard(client).rules.clock = lambda: later
        joined = uuid.uuid4().hex
        again = _join(client, page, [], joined)
        assert again.status_code == 200, again.text
        _answered(queue, [joined])  # nothing of it runs on once the test (and its library) is over
        assert not any(s in queue.pending_event_ids_session for s in never_read)
        assert not any(s in queue.pending_messages_per_session for s in never_read)
        gone = client.get("/gradio_api/queue/data", params={"session_hash": never_read[0]})
        assert gone.status_code == 404 and gone.json()["detail"] == "no such UI session; reload the page"


def test_answers_being_read_or_still_running_are_kept():
    now = [0.0]
    unread = {"reading": 0, "running": 0, "left": 0}
    rules = JoinRules({0: 1}, unread=lambda s: unread.get(s, 0), max_pending=3, clock=lambda: now[0])
    dropped: list[str] = []

    def drop(session: str) -> bool:  # `forget_unread` keeps a session whose event still waits or runs
        if session == "running":
            return False
        dropped.append(session)
        unread.pop(session)
        return True

    rules.drop = drop
    for session in unread:
        assert rules.refusal("10.0.0.1", {"fn_index": 0, "data": [""], "session_hash": session}) is None
        unread[session] = 1  # its answer has come and waits, unread
    rules.reading("reading", True)
    assert rules.refusal("10.0.0.1", {"fn_index": 0, "data": [""], "session_hash": "new"})[0] == 429
    now[0] = UNREAD_AGE_S + 1
    assert rules.refusal("10.0.0.1", {"fn_index": 0, "data": [""], "session_hash": "new"}) is None
    assert dropped == ["left"] and set(unread) == {"reading", "running"}
    unread["new"] = 1
    rules.reading("reading", False)  # its stream ended: seen now, forgotten only UNREAD_AGE_S later
    now[0] += UNREAD_AGE_S / 2
    assert rules.refusal("10.0.0.2", {"fn_index": 0, "data": [""], "session_hash": "other"}) is None
    assert rules.refusal("10.0.0.1", {"fn_index": 0, "data": [""], "session_hash": "new2"}) is not None
    assert dropped == ["left"]
