"""A browser naming its own upload after the server deleted it is told to upload it again.

Uploads are kept `ui_cache_age_s` (30 minutes), and when the page's upload space is full an
address's oldest uploads make room for its new ones. A tab left open for an hour and then
searched again named its deleted upload, and was answered 403 "files must be uploaded through
this page first, in this browser" - what an attacker naming a server path gets - about a file
it had uploaded itself. It now gets 410 saying why the file is gone and what to do; anyone
else naming that path still gets the 403.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clipforge.server import ServerLimits
from clipforge.server.ui_guard import UPLOADER_COOKIE
from tests.server import test_server_attack_gradio as gradio_attack
from tests.server.test_server_attack_gradio import _fd, _fn_index, _upload, run_events

ui_env = gradio_attack.ui_env  # the UI app over a library, its upload folder in tmp_path


def _noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _classify(client, path: str) -> tuple:
    joins, done = run_events(client, [(_fn_index(client, "classify"), [_fd(path, "red.png"), "cat, dog",
                                                                         "a photo of a {}."])])
    return joins[0], done


def _as_another_browser(client, action):
    saved = dict(client.cookies)
    client.cookies.clear()
    client.cookies.set(UPLOADER_COOKIE, "f" * 32)
    try:
        return action()
    finally:
        client.cookies.clear()
        for name, value in saved.items():
            client.cookies.set(name, value)


def test_an_expired_upload_is_gone_for_its_browser_and_forbidden_for_others(ui_env, photos):
    make, upload_dir, _, _ = ui_env
    client = make(ServerLimits(ui_cache_age_s=1))
    first = _upload(client, "red.png", photos[0].read_bytes(), "image/png").json()[0]
    join, done = _classify(client, first)
    assert join.status_code == 200 and done[0]["success"], done
    time.sleep(1.5)
    second = _upload(client, "blue.png", photos[1].read_bytes(), "image/png").json()[0]  # expires the first
    assert not Path(first).exists()

    join, _ = _classify(client, first)
    assert join.status_code == 410, join.text  # before: 403, the attacker's answer
    assert join.json()["error"] == "gone"
    detail = join.json()["detail"]
    assert "red.png" in detail and "kept 1 s" in detail and "upload it again" in detail, detail
    assert str(upload_dir) not in detail
    preview = client.get(f"/gradio_api/file={first}")
    assert preview.status_code == 410 and "upload it again" in preview.json()["detail"]

    other = _as_another_browser(client, lambda: (_classify(client, first)[0],
                                                  client.get(f"/gradio_api/file={first}")))
    assert [r.status_code for r in other] == [403, 403]

    join, done = _classify(client, second)  # the browser's live upload still works
    assert join.status_code == 200 and done[0]["success"], done


def test_an_upload_evicted_for_room_says_so(ui_env, monkeypatch):
    from clipforge.server import upload_space

    monkeypatch.setattr(upload_space, "MIN_AGE_S", 0.0)  # uploads seconds old may go here (s61: `MIN_AGE_S`)
    make, _, _, _ = ui_env
    data = [_noise_png(seed) for seed in range(3)]  # ~12 KB each: the multipart overhead is noise beside them
    client = make(ServerLimits(ui_cache_bytes=int(2.5 * max(map(len, data))) + 4096))  # room for two
    answers = [_upload(client, f"p{i}.png", photo, "image/png") for i, photo in enumerate(data)]
    assert [a.status_code for a in answers] == [200, 200, 200], answers[-1].text
    paths = [a.json()[0] for a in answers]
    assert not Path(paths[0]).exists() and Path(paths[2]).exists()
    join, _ = _classify(client, paths[0])
    assert join.status_code == 410, join.text
    detail = join.json()["detail"]
    assert "p0.png" in detail and "upload space" in detail and "upload it again" in detail, detail
    join, done = _classify(client, paths[2])
    assert join.status_code == 200 and done[0]["success"], done


def test_the_ledger_remembers_only_the_last_deletions_and_forgets_a_path_stored_again(tmp_path):
    from clipforge.server.upload_space import EXPIRED, UploadLedger

    ledger = UploadLedger(str(tmp_path), max_bytes=10**6, max_files=3, max_age_s=10)
    paths = [str(tmp_path / f"{i}.png") for i in range(5)]
    for batch in (paths[:3], paths[3:]):  # the file budget holds three at a time
        for path in batch:
            ledger.settle(ledger.reserve(10), [(path, 10)], owner=f"browser{paths.index(path) % 2}")
        assert ledger.expired(now=time.time() + 60) == batch
    # bounded by the file budget: the two oldest deletions are forgotten; only an owner is told
    assert [ledger.removed(p, f"browser{i % 2}") for i, p in enumerate(paths)] == [None, None, EXPIRED, EXPIRED,
                                                                                     EXPIRED]
    assert ledger.removed(paths[4], "browser1") is None and ledger.removed(paths[4], None) is None
    ledger.settle(ledger.reserve(10), [(paths[4], 10)], owner="browser0")  # the same name stored again
    assert ledger.removed(paths[4], "browser0") is None and ledger.owns(paths[4], "browser0")


def test_one_addresss_uploads_in_flight_hold_at_most_half_the_space(tmp_path):
    """Uploads that declare 20 MB and trickle their bytes reserved the whole space from one address (a review:
    25 sockets, 1 byte every 4 s, and every other address's upload got 507 for as long as they lasted):
    reservations cannot be evicted, only stored files. One address now reserves at most half the budget."""
    from clipforge.server.upload_space import UploadLedger

    ledger = UploadLedger(str(tmp_path), max_bytes=100, max_files=100, max_age_s=60)
    held = [ledger.reserve(20, host="attacker") for _ in range(4)]
    assert [r is not None for r in held] == [True, True, False, False]  # 40 of 100; a third would pass half
    victim = ledger.reserve(45, host="victim")
    assert victim is not None  # before: the attacker's four reservations left 20 bytes
    ledger.settle(held[0], [], owner=None)  # a finished (or failed) upload gives its reservation back
    assert ledger.reserve(20, host="attacker") is not None
