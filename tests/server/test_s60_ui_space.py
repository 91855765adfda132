"""The web page's upload space in a classroom, and the true wait of its unread-answers 429 (audit 60, classroom).

* 30 students uploading 4 phone photos each filled the 200 MB space (room was made only from an address holding more
  than half of it, and in a class nobody does): 15 of them got 507 for the 30 minutes uploads are kept. Now a full
  space makes room from the biggest holders first, their oldest uploads, until the new one fits.
* Two addresses holding 100 MB of random bytes each locked everyone out the same way; now theirs go first.
* 16 unread UI events locked an address out for ~50 s while its 429 said `Retry-After: 1`; it now says the wait.

Byte sizes are scaled down (a ledger of 200,000 bytes, "photos" of 1,900), not the real 200 MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app, upload_space
from clipforge.server.middleware import send_json
from clipforge.server.ui_events import UNREAD_AGE_S, JoinRules
from clipforge.server.ui_guard import UIGuardMiddleware
from clipforge.server.upload_space import EVICTED, UploadLedger

PHOTO = 1_900  # a 1.9 MB phone photo, at 1/1000 scale


def _clocked(monkeypatch) -> None:
    """`time.time` of the ledger ticking one second a call: every upload is strictly older than the next."""
    tick = [1_000_000.0]

    def now() -> float:
        tick[0] += 1.0
        return tick[0]

    monkeypatch.setattr(upload_space.time, "time", now)


def _upload(ledger: UploadLedger, host: str, name: str, size: int = PHOTO) -> bool:
    """One upload as the route makes it: reserve, then settle with the file stored; False when refused (507)."""
    held = ledger.reserve(size + 200, 1, host)  # the body: the file and its multipart headers
    if held is None:
        return False
    ledger.settle(held, [(f"{ledger.folder}/{name}", size)], f"owner-{host}")
    return True


def test_a_class_of_30_uploading_4_photos_each_all_fit(tmp_path, monkeypatch):
    """120 photos of a class in a space for 105: every upload is taken; the 15 that go are the first photos of the
    15 students who held 4 each (the biggest holders), the oldest first; every student keeps 3 or 4 (on HEAD these
    15 uploads were 507: nobody held more than half)."""
    _clocked(monkeypatch)
    ledger = UploadLedger(str(tmp_path), max_bytes=200_000, max_files=2000, max_age_s=1800)
    taken = [[_upload(ledger, f"10.0.0.{10 + i}", f"s{i}-p{k}.jpg") for i in range(30)] for k in range(4)]
    assert [row.count(True) for row in taken] == [30, 30, 30, 30]
    doomed = ledger.doomed()
    assert doomed == [f"{ledger.folder}/s{i}-p0.jpg" for i in range(15)]
    assert ledger.bytes == 105 * PHOTO <= ledger.max_bytes and ledger.files == 105
    kept = {i: sum(ledger.owns(f"{ledger.folder}/s{i}-p{k}.jpg", f"owner-10.0.0.{10 + i}") for k in range(4))
            for i in range(30)}
    assert sorted(kept.values()) == [3] * 15 + [4] * 15
    assert ledger.removed(doomed[0], "owner-10.0.0.10") == EVICTED
    # a student holding the most turns its own oldest over: s15 holds 4 photos, the others 3 or 4 with newer ones
    assert _upload(ledger, "10.0.0.25", "s15-p4.jpg") and ledger.doomed() == [f"{ledger.folder}/s15-p0.jpg"]
    # a newcomer's photo twice the others' size: the oldest photos of the biggest holders make room for it
    assert _upload(ledger, "10.0.0.99", "new.jpg", 2 * PHOTO)
    assert ledger.doomed() == [f"{ledger.folder}/s{i}-p0.jpg" for i in (16, 17)]


def test_two_addresses_of_random_bytes_cannot_lock_out_a_third(tmp_path, monkeypatch):
    """Two addresses holding 99.5% of the space (neither more than half): a third address's upload evicts the
    biggest holder's oldest file, never the third's own; the attackers go on, and evict each other."""
    _clocked(monkeypatch)
    ledger = UploadLedger(str(tmp_path), max_bytes=200_000, max_files=2000, max_age_s=1800)
    for k in range(5):
        for host in ("10.0.0.81", "10.0.0.82"):
            assert _upload(ledger, host, f"{host}-r{k}.bin", 19_900)
    assert ledger.bytes == 199_000 and not ledger.doomed()
    assert _upload(ledger, "10.0.0.83", "e.jpg")
    assert ledger.doomed() == [f"{ledger.folder}/10.0.0.81-r0.bin"]
    for k in range(5, 15):
        assert _upload(ledger, "10.0.0.81", f"10.0.0.81-r{k}.bin", 19_900)
    assert ledger.owns(f"{ledger.folder}/e.jpg", "owner-10.0.0.83")
    assert all(path.rsplit("/", 1)[1].startswith("10.0.0.8") and not path.endswith("e.jpg")
               for path in ledger.doomed())
    assert ledger.bytes <= ledger.max_bytes
    assert _upload(ledger, "10.0.0.84", "f.jpg") and ledger.owns(f"{ledger.folder}/f.jpg", "owner-10.0.0.84")


def test_an_upload_that_cannot_fit_evicts_nobody(tmp_path):
    """No eviction for an upload refused all the same. Files short: one request of 50 files in a space of 20 where
    another address holds 2 would hold more files than it: refused at its 19th, the 2 kept (evicted, then refused,
    when room was made for it as for a photo); a request of 18 fits. Bytes short: an upload that could not fit with
    every stored file gone (others' uploads in flight hold the rest) keeps them all."""
    ledger = UploadLedger(str(tmp_path), max_bytes=1000, max_files=20, max_age_s=1800)
    assert _upload(ledger, "10.0.0.1", "a.jpg", 5) and _upload(ledger, "10.0.0.1", "b.jpg", 5)
    held = ledger.reserve(0, 1, "10.0.0.2")
    assert held is not None
    # refused at its 11th: one address's uploads in flight hold at most half the files (review 61; 18 would fit)
    assert [ledger.grow(held, files) for files in range(2, 51)] == [True] * 9 + [False] * 40
    assert ledger.files == 2 and not ledger.doomed()
    ledger.settle(held, [], None)
    # a holder of 15 files, a request of 10: 5 of the 15 go (it still holds the most), and not one more
    for i in range(13):
        assert _upload(ledger, "10.0.0.1", f"c{i}.jpg", 1)
    held = ledger.reserve(0, 1, "10.0.0.3")
    assert held is not None and not ledger.grow(held, 11) and ledger.files == 15 and not ledger.doomed()
    assert ledger.grow(held, 10) and ledger.files == 10 and len(ledger.doomed()) == 5
    ledger.settle(held, [], None)
    flight = [ledger.reserve(450, 1, host) for host in ("10.0.0.4", "10.0.0.5")]
    assert ledger.bytes == 10  # c3..c12, 1 byte each: 10 + 900 in flight + 101 passes 1,000 with all 10 gone
    assert all(flight) and ledger.reserve(101, 1, "10.0.0.6") is None
    assert ledger.files == 10 and not ledger.doomed()
    assert ledger.reserve(91, 1, "10.0.0.6") is not None and len(ledger.doomed()) == 1  # 10 + 900 + 91: one goes


def _guard(client) -> UIGuardMiddleware:
    guard = client.app.middleware_stack
    while not isinstance(guard, UIGuardMiddleware):
        guard = guard.app
    return guard


def test_through_the_upload_route_the_attackers_bytes_go_first(library, tmp_path, monkeypatch):
    """The same through `/gradio_api/upload` of a running app: two addresses' random bytes fill the space, a third
    address's photo is a 200 (it was a 507), and the file deleted is the first attacker's oldest."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(max_upload_bytes=100_000, form_overhead_bytes=20_000, ui_cache_bytes=300_000)
    with TestClient(create_app(library, ui=True, limits=limits), raise_server_exceptions=False) as first:
        clients = {a: TestClient(first.app, client=(a, 4000)) for a in ("198.51.100.81", "198.51.100.82", "198.51.100.83")}

        def upload(address: str, size: int):
            return clients[address].post("/gradio_api/upload",
                                         files=[("files", (f"{uuid.uuid4().hex}.jpg", os.urandom(size), "image/jpeg"))])

        filled = [upload(a, 70_000) for _ in range(2) for a in ("198.51.100.81", "198.51.100.82")]
        assert [a.status_code for a in filled] == [200] * 4
        student = upload("198.51.100.83", 30_000)
        assert student.status_code == 200, student.text
        assert [Path(a.json()[0]).exists() for a in filled] == [False, True, True, True]
        assert Path(student.json()[0]).exists() and _guard(first).ledger.bytes == 3 * 70_000 + 30_000


def test_the_unread_events_429_says_when_they_are_forgotten():
    """An address with `max_pending` unread answers nobody reads: its 429 says the seconds until they are forgotten
    (`UNREAD_AGE_S` after they were last seen), as `Retry-After`, not 1 s; a page reading its answers frees them
    at no time known ahead, and then it says 1 s."""
    now = [100.0]
    unread: dict[str, int] = {}
    rules = JoinRules({0: 1}, unread=lambda s: unread.get(s, 0), max_pending=4, clock=lambda: now[0])

    def drop(session: str) -> bool:
        unread.pop(session, None)
        return True

    rules.drop = drop
    for i in range(4):
        assert rules.refusal("10.0.0.9", {"fn_index": 0, "data": [""], "session_hash": f"s{i}"}) is None
        unread[f"s{i}"] = 1
        now[0] += 2.5  # joined at 100, 102.5, 105, 107.5
    now[0] = 110.0
    refusal = rules.refusal("10.0.0.9", {"fn_index": 0, "data": [""], "session_hash": "new"})
    assert refusal == (429, "too_many_requests", "your address has 4 UI events waiting or unread already; wait for "
                       "them or reload the pages", 50)  # s0 is forgotten at 160
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(send_json(send, *refusal))
    assert sent[0]["status"] == 429 and dict(sent[0]["headers"])[b"retry-after"] == b"50"
    assert json.loads(sent[1]["body"])["error"] == "too_many_requests"
    now[0] = 159.2
    assert rules.refusal("10.0.0.9", {"fn_index": 0, "data": [""], "session_hash": "new"})[3] == 1  # 0.8 s: 1
    now[0] = 160.5  # s0 forgotten: the join goes in
    assert rules.refusal("10.0.0.9", {"fn_index": 0, "data": [""], "session_hash": "new"}) is None
    unread["new"] = 1
    assert rules.refusal("10.0.0.9", {"fn_index": 0, "data": [""], "session_hash": "new2"})[3] == 2  # s1 at 162.5
    rules.reading("s1", True)  # a page reads: its answers go as it reads them, at no time known ahead
    assert rules.refusal("10.0.0.9", {"fn_index": 0, "data": [""], "session_hash": "new2"})[3] == 1
    rules.reading("s1", False)


def test_one_page_with_too_many_unread_answers_is_told_its_own_wait():
    """The per-page cap: the wait is that page's, from its last join."""
    now = [0.0]
    unread: dict[str, int] = {}
    rules = JoinRules({0: 1}, unread=lambda s: unread.get(s, 0), max_unread_events=3, max_pending=64,
                      clock=lambda: now[0])
    rules.drop = lambda session: unread.pop(session, None) is not None
    for _ in range(3):
        assert rules.refusal("10.0.0.9", {"fn_index": 0, "data": [""], "session_hash": "tab"}) is None
        unread["tab"] = unread.get("tab", 0) + 1
        now[0] += 1.0
    now[0] = 12.3  # last seen at 2.0: forgotten at 62.0
    refusal = rules.refusal("10.0.0.9", {"fn_index": 0, "data": [""], "session_hash": "tab"})
    assert refusal == (429, "too_many_requests", "this page has 3 answers it has not read yet; reload the page", 50)


def test_the_real_server_sends_the_real_wait(library, tmp_path, monkeypatch):
    """Four joins of one address never read (`ui_pending_per_host=4`): the fifth is a 429 whose `Retry-After` is
    the time left of `UNREAD_AGE_S` (it said 1 while the address stayed locked ~50 s)."""
    from tests.server.test_server_attack_gradio import _fn_index, _join

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = create_app(library, ui=True, limits=ServerLimits(ui_pending_per_host=4))
    with TestClient(app, raise_server_exceptions=False) as client:
        page, queue = _fn_index(client, "first_page"), client.app.state.ui_blocks._queue
        never_read = [uuid.uuid4().hex for _ in range(4)]
        started = time.monotonic()
        assert [_join(client, page, [], s).status_code for s in never_read] == [200] * 4
        for _ in range(3000):  # until every event has run: its answer waits, unread
            ids = [i for s in never_read for i in queue.pending_event_ids_session.get(s, ())]
            if ids and not any(i in queue.event_ids_to_events for i in ids):
                break
            threading.Event().wait(0.01)
        locked = _join(client, page, [], uuid.uuid4().hex)
        elapsed = time.monotonic() - started
        assert locked.status_code == 429 and "4 UI events waiting or unread" in locked.json()["detail"]
        assert UNREAD_AGE_S - elapsed - 1 <= int(locked.headers["retry-after"]) <= UNREAD_AGE_S + 1


def test_serve_sets_the_upload_space_and_age_from_its_flags(tmp_path, monkeypatch):
    """A teacher whose class needs more than 200 MB had no way to say so: `--ui-upload-space` / `--ui-upload-age`;
    a bad value is one line naming the flag, exit 2."""
    import clipforge.server as server
    from clipforge.cli.main import main

    seen = {}
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: seen.update(kwargs) or 0)
    assert main(["serve", "--library", str(tmp_path / "lib"), "--ui-upload-space", "1GB", "--ui-upload-age",
                 "3600"]) == 0
    limits = seen["limits"]
    assert (limits.ui_cache_bytes, limits.ui_cache_age_s) == (10**9, 3600)
    assert main(["serve", "--library", str(tmp_path / "lib"), "--ui-upload-space", "1MB"]) == 2
