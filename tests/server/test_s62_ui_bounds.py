"""The UI's bounds that gradio must actually enforce (audit 62, soak findings 2-4), each reproduced.

* `ServerLimits.ui_sessions` was set on the Blocks after mounting, when gradio's `StateHolder` had already copied
  its default (10,000): one anonymous address could make the server hold 10,000 session states (~75 KB each).
* a `cancel` naming an event of the session with another event's `fn_index` made gradio cancel the other event's
  task while "completing" the one named: the other event's stream never ended.
* mounting made `<gradio's import-time temp dir>/vibe_edit_history` (`$TMPDIR/gradio`, shared by every user of
  /tmp), outside the server's private folder, and stopping the server left it behind.
"""

from __future__ import annotations

import json
import uuid

from clipforge.server import ServerLimits


def _ui(make_client, tmp_path, monkeypatch, request, limits: ServerLimits | None = None):
    """`make_client`'s UI app, its lifespan started (gradio's queue runs) and ended after the test."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    client = make_client(limits=limits, ui=True, raise_server_exceptions=False)
    client.__enter__()
    request.addfinalizer(lambda: client.__exit__(None, None, None))
    return client


def _fn(client, name: str) -> int:
    return next(i for i, fn in client.app.state.ui_blocks.fns.items() if fn.name == name)


def _join(client, fn_index: int, data: list, session: str):
    body = {"fn_index": fn_index, "data": data, "session_hash": session, "event_data": None, "trigger_id": None}
    return client.post("/gradio_api/queue/join", json=body)


def _read_to_end(client, session: str) -> list[dict]:
    """Every message of the session's stream, read until gradio closes it."""
    messages = []
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
    return messages


def test_gradio_keeps_at_most_ui_sessions_session_states(make_client, tmp_path, monkeypatch, request):
    """Five sessions, each a page load, under `ui_sessions=3`: gradio's holder keeps the three latest (before:
    all five, its capacity still 10,000)."""
    client = _ui(make_client, tmp_path, monkeypatch, request, ServerLimits(ui_sessions=3))
    holder = client.app.state.ui_blocks.state_holder
    assert holder.capacity == 3
    page = _fn(client, "first_page")
    sessions = [uuid.uuid4().hex for _ in range(5)]
    for session in sessions:
        assert _join(client, page, [], session).status_code == 200
        done = [m for m in _read_to_end(client, session) if m.get("msg") == "process_completed"]
        assert [m["success"] for m in done] == [True], done
    assert list(holder.session_data) == sessions[2:]


def test_a_cancel_naming_another_events_fn_index_is_refused(ui_client, monkeypatch, held_calls):
    """Event A (the page's load, held running) and a search B in one session; a cancel of A that names the search's
    fn_index made gradio cancel B's task and complete A twice (B's stream never ended). It is refused now, A and
    B each end once, and the cancel of A with A's own fn_index still reaches gradio."""
    client = ui_client
    service = client.app.state.service
    held = held_calls(service.list_images)
    monkeypatch.setattr(service, "list_images", held)
    queue = client.app.state.ui_blocks._queue
    page, search = _fn(client, "first_page"), _fn(client, "search")
    session = uuid.uuid4().hex
    try:
        first = _join(client, page, [], session).json()["event_id"]
        held.wait_placed(service.pages, 1)
        assert first in queue.event_ids_to_events
        crossed = {"session_hash": session, "fn_index": search, "event_id": first}
        refused = client.post("/gradio_api/cancel", json=crossed)
        assert refused.status_code == 400, refused.text
        assert refused.json() == {
            "error": "bad_request",
            "detail": f"this cancel names event {first} with fn_index {search}; that event's fn_index is {page}",
        }
        assert [client.post("/gradio_api/cancel", json={**crossed, "fn_index": str(search)}).status_code
                for _ in range(2)] == [400, 400]  # gradio reads "0" as 0: so does the check
        queued = [str(m.msg) for m in queue.pending_messages_per_session[session]._queue]
        assert not [m for m in queued if "process_completed" in m], queued  # nothing "completed" for A
        second = _join(client, search, ["a red square", None, 3, ""], session).json()["event_id"]
    finally:
        held.release.set()
    done = [m for m in _read_to_end(client, session) if m.get("msg") == "process_completed"]
    assert sorted((m["event_id"], m["success"]) for m in done) == sorted([(first, True), (second, True)]), done


def test_a_cancel_with_its_events_own_fn_index_still_reaches_gradio(ui_client, monkeypatch, held_calls):
    client = ui_client
    service = client.app.state.service
    held = held_calls(service.list_images)
    monkeypatch.setattr(service, "list_images", held)
    page = _fn(client, "first_page")
    session = uuid.uuid4().hex
    try:
        event = _join(client, page, [], session).json()["event_id"]
        held.wait_placed(service.pages, 1)
        cancel = client.post("/gradio_api/cancel", json={"session_hash": session, "fn_index": page, "event_id": event})
        assert (cancel.status_code, cancel.text) == (200, '{"success":true}')
    finally:
        held.release.set()
    done = [m for m in _read_to_end(client, session) if m.get("msg") == "process_completed"]
    assert [(m["event_id"], m["output"]) for m in done] == [(event, {})], done  # gradio's "cancelled" answer


def test_the_cancel_check_reads_gradios_record_of_the_event():
    """Unit level: the fn_index compared is the one gradio recorded for the event (`Event.fn._id`), read as gradio
    reads a cancel body; a body gradio itself refuses (no number) is left to gradio's 422."""
    from types import SimpleNamespace

    from clipforge.server.ui_events import Cancels

    queue = SimpleNamespace(event_ids_to_events={"e1": SimpleNamespace(session_hash="s1", fn=SimpleNamespace(_id=6))})
    cancels = Cancels()
    body = {"session_hash": "s1", "fn_index": 6, "event_id": "e1"}
    assert cancels.refusal(queue, body) is None
    assert cancels.refusal(queue, {**body, "fn_index": "6"}) is None
    assert cancels.refusal(queue, {**body, "fn_index": 0}) == (
        400, "bad_request", "this cancel names event e1 with fn_index 0; that event's fn_index is 6")
    assert cancels.refusal(queue, {**body, "fn_index": "x"}) is None  # gradio's own 422
    assert cancels.refusal(queue, {**body, "event_id": "gone"}) is None  # `forward` answers it as gradio does
    assert cancels.refusal(queue, {**body, "session_hash": "s2", "fn_index": 0}) is None  # another session's: same
    assert cancels.forward(queue, body) is True and cancels.sent == {"e1"}


def test_mounting_creates_nothing_outside_the_upload_folder(make_client, tmp_path, monkeypatch, request):
    """gradio's `DEFAULT_TEMP_DIR` was fixed when gradio was imported (`$TMPDIR/gradio` before `serve` chose its
    private folder); `create_app` made `vibe_edit_history` there. Now it is made inside the upload folder."""
    import gradio.route_utils
    import gradio.routes

    shared = tmp_path / "shared-tmp-gradio"  # what gradio computed at import
    monkeypatch.setattr(gradio.routes, "DEFAULT_TEMP_DIR", str(shared))
    monkeypatch.setattr(gradio.route_utils, "DEFAULT_TEMP_DIR", str(shared))
    client = _ui(make_client, tmp_path, monkeypatch, request)
    upload_dir = client.app.state.ui_upload_dir
    assert not shared.exists()
    assert sorted(p.name for p in (tmp_path / "gradio").iterdir()) == ["vibe_edit_history"]
    assert upload_dir == str((tmp_path / "gradio").resolve())
    assert gradio.routes.DEFAULT_TEMP_DIR == gradio.route_utils.DEFAULT_TEMP_DIR == upload_dir
