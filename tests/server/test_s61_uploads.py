"""The web page's anonymous uploads (audit 61, attacker2, findings 3 and 4).

* Finding 3: with the upload space full, ten addresses uploading 90 KB each (every one holding less than the victim)
  made a browser's 100 KB upload the biggest holder, and the next upload deleted it seconds after it was made (its
  page got 410 "upload it again"). No address's newest upload is now deleted while it is younger than
  `upload_space.MIN_AGE_S` (its older ones go as before, biggest holder first); an upload that cannot fit so is a
  507 that deletes nothing and says when to try again. (A first form kept every young upload and made room only
  from holders above an equal share: one address filling the space locked the others out; review 61.)
* Finding 4: one anonymous 107 KB upload of 1,000 tiny files held the server's event loop 100-380 ms (gradio makes
  a temporary file, a folder and a rename for each file on the loop that runs it). gradio now handles uploads on a
  loop of its own (`ui_upload_route.off_loop`); what is tested here is where that work runs, never how long it takes.

Byte sizes follow the audit's 1 MB space (the default is 200 MB; the arithmetic is the same).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app, upload_space
from clipforge.server.ui_events import UNREAD_AGE_S
from clipforge.server.ui_guard import UIGuardMiddleware
from clipforge.server.upload_space import EVICTED, UploadLedger

SPACE = 1_000_000


def _clock(monkeypatch, start: float = 1_000_000.0) -> list[float]:
    """The ledger's `time.time`, stopped at `start` until the test moves it (`now[0] += seconds`)."""
    now = [start]
    monkeypatch.setattr(upload_space.time, "time", lambda: now[0])
    return now


def _upload(ledger: UploadLedger, host: str, name: str, size: int) -> bool:
    """One upload as the route makes it: reserve its body, then settle with the file stored; False when refused."""
    held = ledger.reserve(size + 200, 1, host)  # the file and its multipart headers
    if held is None:
        return False
    ledger.settle(held, [(f"{ledger.folder}/{name}", size)], f"owner-{host}")
    return True


def test_many_addresses_each_holding_less_cannot_evict_a_young_upload(tmp_path, monkeypatch):
    """The audit's attack on the ledger: a victim's 100 KB, then ten addresses of 90 KB each. The tenth does not
    fit: it is refused and nothing is deleted (the victim's upload was evicted here), and `wait_s` says when the
    victim's upload is `MIN_AGE_S` old. After that the biggest holder gives its oldest: the victim's 100 KB."""
    now = _clock(monkeypatch)
    ledger = UploadLedger(str(tmp_path), max_bytes=SPACE, max_files=2000, max_age_s=1800)
    assert _upload(ledger, "127.0.0.1", "victim.jpg", 100_000)
    victim = f"{ledger.folder}/victim.jpg"
    for i in range(2, 11):
        now[0] += 1.0
        assert _upload(ledger, f"127.0.0.{i}", f"a{i}.bin", 90_000)
    now[0] += 1.0
    assert ledger.reserve(90_200, 1, "127.0.0.11") is None
    assert not ledger.doomed() and ledger.owns(victim, "owner-127.0.0.1") and ledger.bytes == 910_000
    assert ledger.wait_s == pytest.approx(upload_space.MIN_AGE_S - 10.0)
    now[0] += upload_space.MIN_AGE_S
    assert _upload(ledger, "127.0.0.11", "a11.bin", 90_000)
    assert ledger.doomed() == [victim] and ledger.removed(victim, "owner-127.0.0.1") == EVICTED
    assert ledger.wait_s is None  # the last call was not refused


def test_one_address_filling_the_space_cannot_lock_the_others_out(tmp_path, monkeypatch):
    """review 61: with every young upload kept (and room made only from holders above an equal share), one address
    that filled a 20 MB space with 20 uploads in 0.3 s made every other browser's upload a 507 for 120 s, renewable.
    Only an address's newest upload is kept while young: the others of the address holding the most go first."""
    now = _clock(monkeypatch)
    ledger = UploadLedger(str(tmp_path), max_bytes=16_500, max_files=100, max_age_s=1800)
    for k in range(20):
        now[0] += 0.01
        assert _upload(ledger, "203.0.113.9", f"flood{k}", 800)
    now[0] += 0.01
    assert _upload(ledger, "10.0.0.2", "victim.jpg", 800)
    assert ledger.doomed() == [f"{ledger.folder}/flood0"] and ledger.removed(f"{ledger.folder}/flood0",
                                                                              "owner-203.0.113.9") == EVICTED
    for k in range(3, 21):  # a class after it: each photo evicts the flood, never another student's
        now[0] += 1.0
        assert _upload(ledger, f"10.0.0.{k}", f"p{k}.jpg", 800)
    assert all(ledger.owns(f"{ledger.folder}/p{k}.jpg", f"owner-10.0.0.{k}") for k in range(3, 21))
    assert ledger.owns(f"{ledger.folder}/victim.jpg", "owner-10.0.0.2")
    assert ledger.owns(f"{ledger.folder}/flood19", "owner-203.0.113.9")  # its newest, still young, is kept


def test_an_address_turns_its_older_uploads_over_at_once_and_keeps_its_newest_while_young(tmp_path, monkeypatch):
    """One address filling the space (one student, or a class behind one router): its next upload deletes its
    oldest, however young; its newest is never deleted while young, so an upload that could only fit by deleting
    it is a 507 with the wait (the first form of the rule refused the second upload already)."""
    now = _clock(monkeypatch)
    ledger = UploadLedger(str(tmp_path), max_bytes=1000, max_files=100, max_age_s=1800)
    for k in range(4):
        now[0] += 5.0
        assert _upload(ledger, "10.0.0.1", f"p{k}", 200)
    now[0] += 5.0
    assert _upload(ledger, "10.0.0.1", "p4", 200) and ledger.doomed() == [f"{ledger.folder}/p0"]
    assert ledger.wait_s is None
    both = UploadLedger(str(tmp_path / "both"), max_bytes=1000, max_files=100, max_age_s=1800)
    assert _upload(both, "10.0.0.9", "other", 300)
    now[0] += 1.0
    assert _upload(both, "10.0.0.1", "old", 100) and _upload(both, "10.0.0.1", "new", 300)
    now[0] += 5.0
    # 700 + 450 needs 150: "old" could go, but then only a newest upload, 5-6 s old, would make room: refused
    assert both.reserve(450, 1, "10.0.0.1") is None and not both.doomed() and both.bytes == 700
    assert 0 < both.wait_s <= upload_space.MIN_AGE_S - 5.0
    now[0] += upload_space.MIN_AGE_S
    assert both.reserve(450, 1, "10.0.0.1") is not None and both.doomed() == [f"{both.folder}/old",
                                                                              f"{both.folder}/other"]


def test_an_address_with_an_upload_in_flight_keeps_no_newest_so_it_cannot_hold_the_space(tmp_path, monkeypatch):
    """review 61 (revlate): one address kept a 1,000-file upload stored (its newest, kept while young) and another
    always in flight (a slow last byte each): 2,000 files of 2,000, every other address refused (34 of 34 live).
    While an address has an upload in flight its stored newest is not kept, and its uploads in flight hold at most
    half the files."""
    now = _clock(monkeypatch)
    ledger = UploadLedger(str(tmp_path), max_bytes=10**9, max_files=2000, max_age_s=1800)
    stored = ledger.reserve(1000, 1000, "203.0.113.9")
    ledger.settle(stored, [(f"{ledger.folder}/a{k}", 1) for k in range(1000)], "attacker")
    now[0] += 1.0
    trickling = ledger.reserve(1000, 1000, "203.0.113.9")
    assert trickling is not None and ledger.reserve(10, 1, "203.0.113.9") is None  # half the files in flight
    assert ledger.wait_s is None  # refused for its own flight, with no other call's wait
    assert _upload(ledger, "10.0.0.2", "victim.jpg", 100)
    assert ledger.doomed() == [f"{ledger.folder}/a0"]


def test_the_same_bytes_from_another_address_do_not_take_a_browsers_newest_protection(tmp_path, monkeypatch):
    """review 61 (revlate): gradio names uploads by content, so a second address sending a file the first had sent
    earlier refreshed the first's old entry, which became the first's newest, and the first's real newest photo
    was evicted 14 s after it was made. The re-sent file is now the second address's newest upload."""
    now = _clock(monkeypatch)
    ledger = UploadLedger(str(tmp_path), max_bytes=1000, max_files=100, max_age_s=1800)

    def upload(host: str, name: str, size: int) -> bool:  # no room for multipart headers: exact arithmetic
        held = ledger.reserve(size, 1, host)
        if held is not None:
            ledger.settle(held, [(f"{ledger.folder}/{name}", size)], f"owner-{host}")
        return held is not None

    assert upload("10.0.0.1", "sample.jpg", 300)
    now[0] += upload_space.MIN_AGE_S + 1
    assert upload("10.0.0.1", "photo.jpg", 300)
    now[0] += 5.0
    assert upload("10.0.0.2", "sample.jpg", 300) and not ledger.doomed()  # the same bytes: the same path
    assert ledger.owns(f"{ledger.folder}/sample.jpg", "owner-10.0.0.1")  # both browsers may still use it
    now[0] += 5.0
    assert not upload("10.0.0.3", "new.jpg", 450)  # room only by a newest upload, both young
    assert not ledger.doomed() and ledger.owns(f"{ledger.folder}/photo.jpg", "owner-10.0.0.1")


def test_the_minimum_age_covers_the_pages_event_window():
    """A page names its upload in an event that may wait its turn up to the UI's answer window before it opens
    the file: an upload is kept at least that long, and some more for the click."""
    assert upload_space.MIN_AGE_S > UNREAD_AGE_S


def test_files_of_an_earlier_run_are_read_oldest_first(tmp_path):
    """The ledger's order is the order uploads go in (expiry, eviction): files found at start are put in it by
    their modification time, not by the folder's listing order."""
    ages = {f"f{i:02d}": 100 + (i * 7) % 20 * 10 for i in range(20)}  # 100-290 s, in no order of the names
    for name, age in ages.items():
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age, time.time() - age))
    ledger = UploadLedger(str(tmp_path), max_bytes=1000, max_files=100, max_age_s=195)
    old = sorted((name for name, age in ages.items() if age > 195), key=ages.get, reverse=True)
    assert len(old) == 10 and ledger.expired() == [f"{ledger.folder}/{name}" for name in old]


def _guard(client: TestClient) -> UIGuardMiddleware:
    guard = client.app.middleware_stack
    while not isinstance(guard, UIGuardMiddleware):
        guard = guard.app
    return guard


def test_through_the_upload_route_a_young_upload_stays_and_the_attacker_gets_507(library, tmp_path, monkeypatch):
    """The audit's script against a running app (`--ui-upload-space 1MB`): the tenth attacker address is a 507 with
    `Retry-After` and one line saying why (it was a 200, and the victim's page got 410 for its file); the victim's
    file is still served to it. A request of many files refused as its parts arrive (the files budget, with young
    uploads in the way) gets the same 507 and leaves nothing behind."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    limits = ServerLimits(max_upload_bytes=SPACE, ui_cache_bytes=SPACE, ui_cache_files=20)
    with TestClient(create_app(library, ui=True, limits=limits), raise_server_exceptions=False) as first:

        def client(address: str) -> TestClient:
            return TestClient(first.app, client=(address, 4000))

        victim = client("127.0.0.1")
        answer = victim.post("/gradio_api/upload", files={"files": ("victim.jpg", os.urandom(100_000))})
        assert answer.status_code == 200, answer.text
        path = answer.json()[0]
        for i in range(2, 11):
            assert client(f"127.0.0.{i}").post("/gradio_api/upload",
                                               files={"files": (f"a{i}.bin", os.urandom(90_000))}).status_code == 200
        refused = client("127.0.0.11").post("/gradio_api/upload", files={"files": ("a11.bin", os.urandom(90_000))})
        assert refused.status_code == 507 and refused.json()["error"] == "insufficient_storage", refused.text
        detail = refused.json()["detail"]
        assert detail.startswith("the upload space of this page (1,000,000 bytes, 20 files) is full, and room is "
                                 "made from the biggest holders' older uploads, never from anyone's newest upload "
                                 f"younger than {upload_space.MIN_AGE_S:g} s") and "\n" not in detail
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= upload_space.MIN_AGE_S and detail.endswith(f"; try again in {wait} s")
        served = victim.get(f"/gradio_api/file={path}")
        assert served.status_code == 200 and served.content == Path(path).read_bytes()
        guard = _guard(first)
        assert guard.ledger.files == 10 and guard.ledger.bytes == 100_000 + 9 * 90_000
        # 9 young files of another address: 19 of 20; a request of 3 files is refused at its second part
        guard.ledger.settle(guard.ledger.reserve(0, 9, "198.51.100.50"),
                            [(f"{guard.ledger.folder}/young{k}", 1) for k in range(9)], "someone")
        before = sorted(p for p in Path(guard.ledger.folder).rglob("*"))
        many = client("198.51.100.51").post("/gradio_api/upload",
                                            files=[("files", (f"m{k}.png", b"tiny")) for k in range(3)])
        assert many.status_code == 507 and many.json()["detail"].startswith("the upload space of this page")
        assert 1 <= int(many.headers["retry-after"]) <= upload_space.MIN_AGE_S
        assert sorted(p for p in Path(guard.ledger.folder).rglob("*")) == before and guard.ledger.files == 19
        assert guard.ledger.reserved_files == 0 and guard.ledger.reserved_bytes == 0


def test_gradio_makes_an_uploads_files_off_the_servers_event_loop(library, tmp_path, monkeypatch):
    """One anonymous request of 1,000 tiny files: gradio's temporary file for each part is made in the upload
    loop's thread (`ui_upload_route.UPLOADS`), not on the loop that serves every other client (each held it for
    ~0.2 ms, 250-380 ms per request); the request still stores all 1,000, each recorded for its uploader."""
    import gradio.route_utils as route_utils

    made_in: list[str] = []
    real = route_utils.NamedTemporaryFile

    def recording(*args, **kwargs):
        made_in.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(route_utils, "NamedTemporaryFile", recording)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with TestClient(create_app(library, ui=True), raise_server_exceptions=False) as client:
        body = b"".join(b'--BND\r\nContent-Disposition: form-data; name="files"; filename="h%d.txt"\r\n\r\n%09d\r\n'
                        % (i, i) for i in range(1000)) + b"--BND--\r\n"
        answer = client.post("/gradio_api/upload", content=body,
                             headers={"content-type": "multipart/form-data; boundary=BND"})
        assert answer.status_code == 200, answer.text[:300]
        paths = answer.json()
        assert len(paths) == 1000 and Path(paths[999]).read_bytes() == b"%09d" % 999
        owner = client.cookies.get("clipforge_uploader")
        assert all(_guard(client).ledger.owns(p, owner) for p in paths)
    assert made_in == ["clipforge-ui-uploads"] * 1000


def test_off_loop_calls_back_on_the_callers_loop_and_passes_errors_and_cancellation():
    """`off_loop`: the app runs on the upload loop in the caller's context; `receive` and `send` run on the
    caller's loop; an exception comes back as itself; cancelling the caller cancels the app."""
    from clipforge.server.ui_upload_route import UploadLoop, off_loop

    where = UploadLoop()
    seen: dict[str, object] = {}
    marker = contextvars.ContextVar("marker", default="unset")

    async def main() -> None:
        here = threading.current_thread().name
        marker.set("caller's")

        async def receive() -> dict:
            seen["receive"] = threading.current_thread().name
            return {"type": "http.request", "body": b"x", "more_body": False}

        async def send(message: dict) -> None:
            seen["send"] = threading.current_thread().name

        async def app(scope, receive, send) -> None:
            seen["app"], seen["marker"] = threading.current_thread().name, marker.get()
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            if scope.get("fail"):
                raise LookupError("refused body")

        await off_loop(app, {}, receive, send, where)
        assert seen == {"app": seen["app"], "marker": "caller's", "receive": here, "send": here}
        assert seen["app"] != here
        with pytest.raises(LookupError, match="refused body"):
            await off_loop(app, {"fail": True}, receive, send, where)
        started, cancelled = threading.Event(), threading.Event()

        async def stuck(scope, receive, send) -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        task = asyncio.ensure_future(off_loop(stuck, {}, receive, send, where))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(cancelled.wait, 5)

    asyncio.run(main())
