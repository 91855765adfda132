"""UI joins arriving together, attacked: each saw the count of events gradio held before any of them.

`JoinRules` counted what gradio's tables hold (`pending_event_ids_session`), but a join is parsed in a worker
thread and gradio records its event only after the guard has forwarded it, so N joins of one address sent at
once all saw the old count and all got in: `ui_pending_per_host` (16) was exceeded by however many arrived
together. An admitted join now holds its place until gradio has recorded it or the request has ended.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from clipforge.server import ServerLimits, create_app
from clipforge.server.ui_events import JoinRules
from tests.server.test_attack_s53_unread import _answered


def _joins(url: str, fn_index: int, sessions: list[str]) -> list[httpx.Response]:
    """One `queue/join` per entry of `sessions`, all sent at once over their own connections."""

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(sessions), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            body = {"fn_index": fn_index, "data": [], "event_data": None, "trigger_id": None}
            return await asyncio.gather(
                *(client.post("/gradio_api/queue/join", json={**body, "session_hash": s}) for s in sessions)
            )

    return asyncio.run(flood())


def test_joins_sent_together_admit_at_most_the_limits(library, live_server, tmp_path, monkeypatch):
    """20 joins of one page and 30 of 30 other pages, one address, all at once: before, all 50 got in (a page
    limited to 8 unread answers had 20, the address limited to 16 events held 50)."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(ui_pending_per_host=16, ui_unread_events=8)
    app = create_app(library, ui=True, limits=limits)
    blocks = app.state.ui_blocks
    page = next(i for i, fn in blocks.fns.items() if fn.name == "first_page")
    one = uuid.uuid4().hex
    sessions = [one if i % 5 < 2 else uuid.uuid4().hex for i in range(50)]
    with live_server(app, limits) as url:
        answers = _joins(url, page, sessions)
        admitted = [s for s, a in zip(sessions, answers, strict=True) if a.status_code == 200]
        assert len(admitted) == 16 and admitted.count(one) <= 8, [a.status_code for a in answers]
        details = {a.json()["detail"] for a in answers if a.status_code != 200}
        assert {a.status_code for a in answers} == {200, 429}
        assert details <= {
            "your address has 16 UI events waiting or unread already; wait for them or reload the pages",
            "this page has 8 answers it has not read yet; reload the page",
        }, details
        table = blocks._queue.pending_event_ids_session
        assert sum(len(ids) for ids in table.values()) == 16 and len(table.get(one, ())) <= 8
        _answered(blocks._queue, list(set(admitted)))  # nothing runs on once the library is closed


def test_a_place_is_held_until_the_join_settles():
    """The rule on its own: an admitted join counts until `settle`, then only what gradio holds counts."""
    held: dict[str, int] = {}
    rules = JoinRules({0: 0}, unread=lambda s: held.get(s, 0), max_pending=2, max_unread_events=2)
    join = {"fn_index": 0, "data": [], "session_hash": "a"}
    assert (
        rules.admit("10.0.0.1", join) is None
        and rules.admit("10.0.0.1", {**join, "session_hash": "b"}) is None
    )
    assert (
        rules.admit("10.0.0.1", {**join, "session_hash": "c"})[0] == 429
    )  # none recorded yet: two places held
    held["a"] = 1  # gradio recorded a's event, then its join settled; b's request ended without one
    rules.settle("a")
    rules.settle("b")
    assert rules.admit("10.0.0.1", {**join, "session_hash": "c"}) is None
    assert rules.admit("10.0.0.1", {**join, "session_hash": "d"})[0] == 429
