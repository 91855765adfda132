"""gradio's queue and session tables, attacked through the UI's event routes (a review's findings, each reproduced).

gradio stores a join's inputs in the session's state before any handler runs, keeps each event until
its session reads it, and keeps tables of sessions and uploaded paths that it never empties by itself.
Each test below failed on the code before `server/ui_events.py` (and the guard's changes beside it).
"""

from __future__ import annotations

import logging
import uuid

from clipforge.server import ServerLimits
from tests.server import test_server_attack_gradio as gradio_attack
from tests.server.test_server_attack_gradio import _blocks, _fn_index, _join, _upload

ui_env = gradio_attack.ui_env  # the UI app over a library, its upload folder in tmp_path


def _state_values(blocks, session: str) -> list:
    state = blocks.state_holder.session_data.get(session)
    return [] if state is None else [v for _, v in getattr(state, "_data", {}).items()]


def test_a_join_is_bounded_before_gradio_stores_its_values(ui_env, caplog):
    """A 1,000,000-character query was kept in the session's state after the handler refused it (1.1 MB per
    session, 10,000 sessions); a join with the wrong number of values made gradio log every value it got
    in a traceback. Both are refused before gradio sees them; gradio keeps at most `ui_sessions` states."""
    make, _, _, _ = ui_env
    client = make(ServerLimits(ui_sessions=50))
    blocks = _blocks(client)
    assert blocks.state_holder.capacity == 50  # what gradio evicts by (its default: 10,000)
    search = _fn_index(client, "search")
    session = uuid.uuid4().hex
    huge = "a photo of a cat " * 60_000  # 1,020,000 characters, the body just under the UI's 1 MiB
    answer = _join(client, search, [None, huge, 3, ""], session)
    assert answer.status_code == 413 and "4,096 characters" in answer.json()["detail"], answer.text
    assert not any(huge in str(v) for v in _state_values(blocks, session))
    with caplog.at_level(logging.ERROR):
        answer = _join(client, search, ["x" * 4000], session)
    assert answer.status_code == 400 and answer.json()["detail"] == "this UI event takes 4 values, got 1"
    assert not [r for r in caplog.records if "x" * 4000 in r.getMessage()]
    assert _join(client, search, ["a cat", None, 3, ""], session).status_code == 200  # a real search still runs


def test_one_address_may_leave_ui_pending_per_host_events_in_all(ui_env):
    """64 sessions x 32 unread events of one address were allowed (~6 GB of queued inputs, and a victim's
    classify waited behind them in gradio's 40 slots). Now an address's sessions together hold at most
    `ui_pending_per_host` events waiting or unread."""
    make, _, _, _ = ui_env
    client = make(ServerLimits(ui_unread_events=4, ui_unread_sessions=10, ui_pending_per_host=6))
    search = _fn_index(client, "search")
    sessions = [uuid.uuid4().hex for _ in range(4)]
    statuses = [_join(client, search, ["", None, 3, ""], s).status_code for s in sessions for _ in range(2)]
    assert statuses == [200] * 6 + [429] * 2, statuses
    refused = _join(client, search, ["", None, 3, ""], uuid.uuid4().hex)
    assert refused.status_code == 429 and "6 UI events waiting or unread" in refused.json()["detail"]


def test_unknown_sessions_and_unused_routes_cost_nothing(ui_env, caplog):
    """`queue/data` for a session gradio does not know answered 200 and logged a 15 kB traceback each time;
    `startup-events` started gradio's queue loops a second time for any client."""
    make, _, _, _ = ui_env
    client = make()
    with caplog.at_level(logging.ERROR):
        answers = [client.get("/gradio_api/queue/data", params={"session_hash": uuid.uuid4().hex}) for _ in range(5)]
    assert {a.status_code for a in answers} == {404} and "reload the page" in answers[0].json()["detail"]
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert client.get("/gradio_api/startup-events").status_code == 404


def test_gradios_tables_are_swept_of_finished_sessions(ui_env):
    """gradio's per-session event table keeps a key for every session that ever joined (61 sessions, 61 keys,
    all empty); it is swept once it holds more than 1,000."""
    make, _, _, _ = ui_env
    client = make()
    table = _blocks(client)._queue.pending_event_ids_session
    for i in range(1_500):  # what 1,500 finished sessions leave behind
        table[f"old-{i}"] = set()
    assert _join(client, _fn_index(client, "search"), ["", None, 3, ""], uuid.uuid4().hex).status_code == 200
    assert not [s for s in table if s.startswith("old-")]


def test_deleted_uploads_leave_gradios_record_of_uploads(ui_env, photos, monkeypatch):
    """gradio adds every stored upload to `upload_file_set` and never drops one its cleaner finds gone: every
    upload the budget evicted stayed listed (12 x 500 files: 6,000 entries for 2,000 files on disk)."""
    from clipforge.server import upload_space

    monkeypatch.setattr(upload_space, "MIN_AGE_S", 0.0)  # uploads seconds old may go here (s61: `MIN_AGE_S`)
    make, _, _, _ = ui_env
    client = make(ServerLimits(ui_cache_files=6))  # the test folder holds 2 files of its own
    record = _blocks(client).upload_file_set
    for i in range(10):
        answer = _upload(client, f"p{i}.png", photos[i % len(photos)].read_bytes() + bytes([i]), "image/png")
        assert answer.status_code == 200, answer.text
    from pathlib import Path

    on_disk = [p for p in record if Path(p).exists()]
    assert len(record) == len(on_disk) <= 4, (len(record), len(on_disk))


def test_an_address_starts_at_most_ui_new_sessions_per_minute(ui_env):
    """gradio keeps the message queues of 2,000 sessions: one client cycling 2,100 (join, read) dropped another
    user's queue while its classify ran, and that user's answer never came ("session not found")."""
    make, _, _, _ = ui_env
    client = make(ServerLimits(ui_new_sessions_per_minute=3))
    search = _fn_index(client, "search")
    sessions = [uuid.uuid4().hex for _ in range(4)]
    statuses = [_join(client, search, ["", None, 3, ""], s).status_code for s in sessions]
    assert statuses == [200, 200, 200, 429], statuses
    assert "opened 3 pages in the last minute" in _join(client, search, ["", None, 3, ""], sessions[3]).json()["detail"]
    assert _join(client, search, ["", None, 3, ""], sessions[0]).status_code == 200  # a page already open goes on


def test_new_sessions_are_counted_over_a_sliding_minute():
    from clipforge.server.ui_events import JoinRules

    now = [0.0]
    rules = JoinRules({0: 1}, unread=lambda session: 0, max_new_sessions=2, clock=lambda: now[0])

    def join(session: str) -> int:
        refusal = rules.refusal("198.51.100.1", {"fn_index": 0, "data": [""], "session_hash": session})
        return 200 if refusal is None else refusal[0]

    assert [join("a"), join("b"), join("c"), join("a")] == [200, 200, 429, 200]
    now[0] = 30.0
    assert join("c") == 429
    now[0] = 61.0  # "b" (seen at 0) has left the minute; "a" was seen again at 0 as well
    assert [join("c"), join("d"), join("e")] == [200, 200, 429]
    assert rules.refusal("198.51.100.2", {"fn_index": 0, "data": [""], "session_hash": "z"}) is None  # per address


def test_gradio_runs_ui_event_slots_events_at_once(ui_env):
    """gradio runs 40 events at a time server-wide, first come, and each of ours then waits for its turn in the
    model's fair queue while holding one: three addresses' allowed pending events (16 each) filled them all, and a
    fourth address's classify waited in gradio's line (a review measured 5 s behind 128 events on the tiny model).
    The slots are `ui_event_slots` (256), and the thread limiter gradio runs handlers under follows them."""
    make, _, _, _ = ui_env
    client = make(ServerLimits(ui_event_slots=100))
    blocks = _blocks(client)
    assert blocks._queue.max_thread_count == 100 and len(blocks._queue.active_jobs) == 100
    assert blocks.limiter is not None and blocks.limiter.total_tokens == 100


def test_gradios_event_analytics_are_not_rebuilt_after_every_event(ui_env, monkeypatch):
    """gradio rebuilt a pandas table of its last 10,000 events after every event, for a monitoring dashboard this
    server does not serve (a review: 16.7 ms of CPU per event at 10,000 records)."""
    make, _, _, _ = ui_env
    client = make()
    queue = _blocks(client)._queue
    built = []
    monkeypatch.setattr(type(queue), "_get_df", staticmethod(lambda records: built.append(len(records))))
    search = _fn_index(client, "search")
    joins, done = gradio_attack.run_events(client, [(search, ["", None, 3, ""]) for _ in range(3)])
    assert [j.status_code for j in joins] == [200] * 3 and len(done) == 3
    assert built == [] and len(queue.event_analytics) <= 1
