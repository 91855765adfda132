"""`/gradio_api/cancel` naming an answered event, attacked: each one queued another answer, for good.

gradio's cancel route puts a "process completed" message into the session's queue whenever the event it names is
among the session's unread ones, however often it is asked and whether or not the event still runs; the queue is
emptied only by the session's stream. One join whose answer was never read, then 300 anonymous 90-byte cancels,
left 303 messages queued (a long run: memory without bound, never freed). A cancel now reaches gradio once per
event, while the event waits or runs; any other is answered as gradio answers it, with nothing kept.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from tests.server.test_attack_s53_unread import _answered


def test_cancels_of_an_answered_event_queue_nothing(ui_client):
    queue = ui_client.app.state.ui_blocks._queue
    page = next(i for i, fn in ui_client.app.state.ui_blocks.fns.items() if fn.name == "first_page")
    session = uuid.uuid4().hex
    event = ui_client.post(
        "/gradio_api/queue/join", json={"fn_index": page, "data": [], "session_hash": session}
    )
    assert event.status_code == 200, event.text
    _answered(queue, [session])
    queued = queue.pending_messages_per_session[session].qsize()
    body = {"session_hash": session, "fn_index": page, "event_id": event.json()["event_id"]}
    answers = [ui_client.post("/gradio_api/cancel", json=body) for _ in range(50)]
    assert {(a.status_code, a.text) for a in answers} == {(200, '{"success":true}')}
    assert queue.pending_messages_per_session[session].qsize() == queued  # before: queued + 50
    malformed = ui_client.post("/gradio_api/cancel", json={"session_hash": session, "event_id": 5})
    assert malformed.status_code == 422 and malformed.json()["error"] == "invalid_request", malformed.text
    coerced = {**body, "fn_index": str(page)}  # gradio reads "6" as 6: no way around the rule
    assert [ui_client.post("/gradio_api/cancel", json=coerced).status_code for _ in range(5)] == [200] * 5
    assert queue.pending_messages_per_session[session].qsize() == queued


def test_a_cancel_reaches_gradio_once_while_its_event_waits_or_runs():
    from clipforge.server.ui_events import Cancels

    live = {"e1": SimpleNamespace(session_hash="s1")}
    cancels = Cancels()
    queue = SimpleNamespace(event_ids_to_events=live)
    body = {"session_hash": "s1", "fn_index": 0, "event_id": "e1"}
    assert cancels.forward(queue, body) is True
    assert cancels.forward(queue, body) is False  # asked again: gradio would queue one more answer
    assert cancels.forward(queue, {**body, "session_hash": "s2"}) is False  # another session's event
    assert cancels.forward(queue, {**body, "event_id": "gone"}) is False  # answered (or never was)
    assert cancels.forward(queue, {"event_id": 5}) is True  # malformed: gradio's own 422
    cancels.refused(body)  # gradio did not take it (say its fn_index was no number): the next one goes
    assert cancels.forward(queue, body) is True and cancels.forward(queue, body) is False
    del live["e1"]
    assert cancels.forward(queue, {**body, "event_id": "e2"}) is False and not cancels.sent
