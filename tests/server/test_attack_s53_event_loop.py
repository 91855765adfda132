"""A UI event body is parsed and walked off the event loop (found by review 53).

The guard parsed every `/gradio_api/` event body and walked it (its paths, its longest string) on the event
loop: a 196 kB join of 49,000 empty objects cost 70 ms of Python there, and 40 of them from one anonymous client
held everyone's `/healthz` for up to 1 s (median 0.6 s). The test checks where the work runs, not how long.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from clipforge.server import ui_events, ui_guard
from tests.server.test_server_attack_gradio import _fn_index


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no event loop runs in this thread
        return False
    return True


def test_a_ui_event_is_parsed_and_walked_in_a_worker_thread(ui_client, monkeypatch):
    where: list[tuple[str, bool]] = []
    loads, longest = json.loads, ui_events._longest_string

    class Json:
        def __getattr__(self, name):
            return getattr(json, name)

        @staticmethod
        def loads(*args, **kwargs):
            where.append(("loads", _on_loop()))
            return loads(*args, **kwargs)

    def walked(*args, **kwargs):
        where.append(("longest", _on_loop()))
        return longest(*args, **kwargs)

    monkeypatch.setattr(ui_guard, "json", Json())
    monkeypatch.setattr(ui_events, "_longest_string", walked)
    join = {
        "fn_index": _fn_index(ui_client, "search"),
        "data": [[{}] * 49_000, None, 3, ""],
        "session_hash": uuid.uuid4().hex,
    }
    answer = ui_client.post("/gradio_api/queue/join", json=join)
    assert answer.status_code == 400, answer.text  # before: 200, parsed again by gradio on the loop and kept
    assert answer.json()["detail"] == (
        "value 1 of this UI event (textbox) is not what this page sends there: text or a number"
    )
    assert ("loads", False) in where and ("longest", False) in where
    assert not [step for step, on_loop in where if on_loop], where
