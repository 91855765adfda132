"""A urlencoded form is split and unquoted off the event loop (found by attack session 54).

`parse_qsl` unquotes in Python: a 256 KB form of `%41` escapes (the most `form_overhead_bytes` lets through) took
40 ms of the event loop every client shares, where a JSON body of the same size is parsed in a worker thread. The
test checks where the work runs, not how long it takes.
"""

from __future__ import annotations

from clipforge.server import body_parsing
from tests.server.test_attack_s53_event_loop import _on_loop


def test_a_urlencoded_form_is_parsed_in_a_worker_thread(make_client, monkeypatch):
    where: list[bool] = []
    split = body_parsing.parse_qsl

    def recorded(*args, **kwargs):
        where.append(_on_loop())
        return split(*args, **kwargs)

    monkeypatch.setattr(body_parsing, "parse_qsl", recorded)
    client = make_client()
    form = {"content-type": "application/x-www-form-urlencoded"}
    answer = client.post("/api/search", content=b"text=" + b"%41" * 80_000, headers=form)
    assert answer.status_code == 422 and answer.json()["detail"].startswith("text: "), answer.text
    answer = client.post("/api/search", content=b"text=a+red+photo&top_k=2", headers=form)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 2, answer.text
    assert where == [False, False]  # before: [True, True], on the event loop
