"""The gradio UI's event API, attacked: every event handler is called with server paths.

The attack (issue 9, item 1): `POST /gradio_api/queue/join` with a `FileData` whose `path` is any
server file made gradio copy it into its cache and serve it. Here every event of the mounted UI
gets, in every input slot, `FileData` naming /proc/self/environ, the token file, the library's
database, a file in the system temp folder, paths that leave the upload folder through `..` or
a symlink, a FIFO and a URL - through the real routes (queue/join, run, call). Afterwards no
response holds any of those files' bytes, nothing new is in gradio's folder, and none of them
was even opened. Each protective layer is also checked alone, and a positive control shows
the attack succeeding when they are all switched off, so the test can fail.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipforge.server import ServerLimits, create_app

TOKEN = "tok-3f9a-secret"
FILE_META = {"_type": "gradio.FileData"}


def _fd(path: str, name: str = "photo.png") -> dict:
    return {"path": path, "orig_name": name, "meta": dict(FILE_META)}


@pytest.fixture()
def ui_env(tmp_path, monkeypatch, library):
    """(make_client, upload_dir, targets, secrets): a UI app whose gradio folder is in tmp_path."""
    upload_dir = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_dir))
    canary = f"CANARY-{uuid.uuid4().hex}"
    secret = tmp_path / "secret.txt"
    secret.write_text(canary)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    handle, in_tmp = tempfile.mkstemp(prefix="clipforge-canary-", suffix=".png")
    os.write(handle, canary.encode())
    os.close(handle)
    upload_dir.mkdir(mode=0o700)
    inner = upload_dir / ("0" * 64)
    inner.mkdir()
    (inner / "link.png").symlink_to(secret)
    os.mkfifo(inner / "pipe.png")
    targets = [
        "/proc/self/environ",
        str(token_file),
        str(library.paths.db),
        str(secret),
        in_tmp,
        f"{upload_dir}/../secret.txt",
        str(inner / "link.png"),
        str(inner / "pipe.png"),
        "http://127.0.0.1:9/x.png",
        "/etc/passwd",
    ]
    environ = Path("/proc/self/environ").read_bytes().split(b"\0")[0].decode(errors="replace")
    secrets = [canary, TOKEN, "SQLite format 3", "root:x:0", environ]
    clients = []

    def make(limits: ServerLimits | None = None, root_path: str = ""):
        client = TestClient(
            create_app(library, token=TOKEN, limits=limits, ui=True),
            raise_server_exceptions=False,
            root_path=root_path,
        )
        client.__enter__()  # lifespan: gradio's queue starts
        clients.append(client)
        return client

    yield make, upload_dir, targets, secrets
    for client in clients:
        client.__exit__(None, None, None)
    os.unlink(in_tmp)


def _blocks(client):
    return client.app.state.ui_blocks


def _join(client, fn_index: int, data: list, session: str):
    return client.post(
        "/gradio_api/queue/join",
        json={
            "fn_index": fn_index,
            "data": data,
            "session_hash": session,
            "event_data": None,
            "trigger_id": None,
        },
    )


def run_events(client, calls: list[tuple[int, list]]) -> tuple[list, list[dict]]:
    """Join the queue with each (fn_index, data); the join responses and every completion message."""
    session = uuid.uuid4().hex
    joins, pending = [], set()
    for fn_index, data in calls:
        response = _join(client, fn_index, data, session)
        joins.append(response)
        if response.status_code == 200:
            pending.add(response.json()["event_id"])
    done: list[dict] = []
    if pending:
        with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    done.append(message)
                    pending.discard(message["event_id"])
                # read to its end (gradio ends it after `close_stream`): a stream left at an answer was closed
                # later by the garbage collector, where gradio's generator logged an ERROR into another test
    return joins, done


def _benign(component) -> object:
    kind = type(component).__name__
    return {"Textbox": "cat, dog", "Slider": 3, "Number": 3}.get(kind)


def _attackable(blocks) -> dict:
    """The events a client sends data to (not the page's load event, nor one taking a State only)."""
    return {i: fn for i, fn in blocks.fns.items() if any(not c.stateful for c in fn.inputs)}


def _hostile_calls(blocks, targets: list[str]) -> list[tuple[int, list]]:
    """For every event: every slot hostile at once, and each slot alone (others benign; a list for gr.File)."""
    calls = []
    for fn_index, fn in _attackable(blocks).items():
        n = len(fn.inputs)
        for target in targets:
            calls.append((fn_index, [_fd(target)] * n))
            for slot, component in enumerate(fn.inputs):
                data = [_benign(c) for c in fn.inputs]
                data[slot] = [_fd(target)] if type(component).__name__ == "File" else _fd(target)
                calls.append((fn_index, data))
    return calls


def _files_under(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*") if p.is_file() or p.is_symlink() or p.is_fifo()}


def _assert_no_leak(texts: list[str], secrets: list[str], tmp_path: Path | None) -> None:
    """No secret in any text; with `tmp_path`, no server path either (`None`: a path may be echoed back)."""
    for text in texts:
        for secret in secrets:
            assert secret not in text, text[:300]
        assert tmp_path is None or str(tmp_path) not in text, text[:300]


def _refusal(message: dict) -> str | None:
    """The status line with which a UI event refused its request ("⚠️ **400 ...**: ..."), if any."""
    for item in (message.get("output") or {}).get("data") or []:
        if isinstance(item, str) and item.startswith("⚠️"):
            return item
    return None


def _succeeded(message: dict) -> bool:
    return bool(message.get("success")) and _refusal(message) is None


def _attack(
    client, upload_dir: Path, targets: list[str], guarded: bool = True
) -> tuple[list[str], list[str]]:
    """Every hostile event through queue/join, run and call; every file= fetch. (event texts, file= texts)."""
    blocks = _blocks(client)
    texts = []
    joins, done = run_events(client, _hostile_calls(blocks, targets))
    texts += [r.text for r in joins] + [json.dumps(m) for m in done]
    assert not [m for m in done if _succeeded(m)], "a hostile event succeeded"
    assert len(_attackable(blocks)) == 4  # search (click and enter), classify, add
    for fn_index, fn in _attackable(blocks).items():
        for target in targets[:4]:
            body = {"data": [_fd(target)] * len(fn.inputs), "fn_index": fn_index, "session_hash": "s"}
            for route in ("/gradio_api/run/predict", "/gradio_api/call/predict", "/gradio_api/api/predict"):
                response = client.post(route, json=body)
                assert response.status_code >= 400, (route, response.text[:200])
                texts.append(response.text)
    fetched = []
    for target in targets:
        response = client.get(f"/gradio_api/file={target}")
        # With the guard: 403. Without it gradio refuses too, though a FIFO makes it answer 500.
        assert response.status_code == 403 if guarded else response.status_code >= 400, (
            target,
            response.status_code,
        )
        fetched.append(response.text)
    return texts, fetched


@pytest.mark.parametrize("layers", ["all", "without_guard_middleware", "without_gradio_check"])
def test_every_ui_event_refuses_server_paths(ui_env, tmp_path, opened_paths, monkeypatch, layers):
    make, upload_dir, targets, secrets = ui_env
    if layers == "without_guard_middleware":
        from clipforge.server import ui_guard

        async def passthrough(self, scope, receive, send):
            await self.app(scope, receive, send)

        monkeypatch.setattr(ui_guard.UIGuardMiddleware, "__call__", passthrough)
    client = make()
    if layers == "without_gradio_check":
        _blocks(client).has_launched = False
    before = _files_under(upload_dir)
    opened_paths.clear()
    guarded = layers != "without_guard_middleware"
    texts, fetched = _attack(client, upload_dir, targets, guarded=guarded)
    _assert_no_leak(texts, secrets, tmp_path)
    _assert_no_leak(fetched, secrets, tmp_path if guarded else None)  # gradio's 403 repeats the path sent
    assert _files_under(upload_dir) == before  # nothing was copied into gradio's folder
    opened = {os.path.realpath(p) for p in opened_paths}
    forbidden = {os.path.realpath(t) for t in targets if "://" not in t}
    assert not opened & forbidden, sorted(opened & forbidden)  # not one of them was even opened


def test_positive_control_the_attack_works_with_every_layer_off(ui_env, tmp_path, monkeypatch):
    """Without the guard and gradio's check, gradio copies a server file into its folder."""
    from clipforge.server import ui_guard

    make, upload_dir, targets, secrets = ui_env

    async def passthrough(self, scope, receive, send):
        await self.app(scope, receive, send)

    monkeypatch.setattr(ui_guard.UIGuardMiddleware, "__call__", passthrough)
    client = make()
    _blocks(client).has_launched = False
    secret = targets[3]
    run_events(client, [(fn, [_fd(secret)] * len(f.inputs)) for fn, f in _blocks(client).fns.items()])
    copied = [
        p
        for p in _files_under(upload_dir)
        if Path(p).is_file()
        and not Path(p).is_symlink()
        and Path(p).read_text(errors="replace") == Path(secret).read_text()
    ]
    assert copied, "the attack no longer reproduces: this control cannot show the test would fail"


def _upload(client, name: str, data: bytes, mime: str = "application/octet-stream"):
    return client.post("/gradio_api/upload", files=[("files", (name, data, mime))])


def _fn_index(client, handler_name: str) -> int:
    return next(i for i, fn in _blocks(client).fns.items() if fn.name == handler_name)


def test_a_real_upload_classifies_and_a_non_image_gets_the_api_message(ui_env, tmp_path, kit, photos):
    make, upload_dir, _, secrets = ui_env
    client = make()
    uploaded = _upload(client, "red.png", photos[0].read_bytes(), "image/png")
    assert uploaded.status_code == 200, uploaded.text
    path = uploaded.json()[0]
    assert Path(path).resolve().is_relative_to(upload_dir.resolve())
    classify = _fn_index(client, "classify")
    _, done = run_events(client, [(classify, [_fd(path, "red.png"), "cat, dog, car", "a photo of a {}."])])
    assert done[0]["success"], done
    assert {c["label"] for c in done[0]["output"]["data"][0]["confidences"]} == {"cat", "dog", "car"}
    # A text file named like a picture: the UI says what the REST API says, with no server path.
    notes = b"this is not an image, whatever its name says\n"
    text_path = _upload(client, "holiday.jpg", notes).json()[0]
    _, done = run_events(
        client, [(classify, [_fd(text_path, "holiday.jpg"), "cat, dog", "a photo of a {}."])]
    )
    api = client.post(
        "/api/classify", files={"image": ("holiday.jpg", notes, "image/jpeg")}, data={"labels": "cat"}
    )
    assert api.status_code == 415 and api.json()["error"] == "not_an_image"
    # The status line of the tab says it, in the API's words; the probabilities are left as they were.
    assert done[0]["success"] is True
    assert html.unescape(_refusal(done[0])) == f"⚠️ **415 not an image**: {api.json()['detail']}"
    assert done[0]["output"]["data"][0] == {"__type__": "update"}
    _assert_no_leak([json.dumps(done)], secrets, tmp_path)
    assert str(upload_dir) not in json.dumps(done)


def _guard(client):
    """The UIGuardMiddleware instance of a started client's app."""
    from clipforge.server.ui_guard import UIGuardMiddleware

    app = client.app.middleware_stack
    while not isinstance(app, UIGuardMiddleware):
        app = app.app
    return app


def test_ui_upload_space_is_bounded_and_pruned(ui_env, kit, monkeypatch):
    from clipforge.server import upload_space
    from clipforge.server.upload_space import upload_bytes_used

    make, upload_dir, _, _ = ui_env
    monkeypatch.setattr(upload_space, "MIN_AGE_S", 0.0)  # uploads seconds old may go here (s61: `MIN_AGE_S`)
    limits = ServerLimits(
        max_upload_bytes=100_000, form_overhead_bytes=20_000, ui_cache_bytes=300_000, ui_cache_age_s=600
    )
    client = make(limits)
    start = upload_bytes_used(upload_dir)
    answers = [_upload(client, f"f{i}.png", os.urandom(90_000)) for i in range(5)]
    # a lone client's space turns over, oldest first (`test_a_client_that_fills_the_upload_space_...`)
    assert [a.status_code for a in answers] == [200] * 5
    kept = [Path(a.json()[0]).exists() for a in answers]
    assert kept == [False, False, True, True, True] and upload_bytes_used(upload_dir) - start == 270_000
    # room is made from the biggest holders first (s60): its own oldest uploads while it holds the most
    guard = _guard(client)
    other = guard.ledger.reserve(150_000, 1, "198.51.100.9")
    assert (
        other is not None and guard.ledger.bytes - start == 90_000
    )  # two more of its own went (270 -> 90 KB)
    from clipforge.server.upload_space import delete_files

    delete_files(guard.ledger.doomed(), str(upload_dir))
    turned = _upload(client, "x.png", os.urandom(90_000))  # it holds the most: its own oldest makes room
    assert turned.status_code == 200 and not Path(answers[-1].json()[0]).exists()
    guard.ledger.settle(other, [], None)
    assert upload_bytes_used(upload_dir) - start == 90_000
    # One file over the per-file limit but inside the body allowance: nothing kept.
    over = _upload(client, "big.png", os.urandom(110_000))
    assert over.status_code in (413, 507)
    assert upload_bytes_used(upload_dir) - start <= 90_000
    # Old uploads are deleted (as if their age had passed), after which uploads are accepted again.
    import time

    later = time.time() + 601
    monkeypatch.setattr(upload_space.time, "time", lambda: later)
    after = _upload(client, "again.png", os.urandom(110_000))
    assert after.status_code == 413  # now it is gradio's per-file limit that answers
    assert upload_bytes_used(upload_dir) == 0
    assert _upload(client, "ok.png", os.urandom(50_000)).status_code == 200
    assert _guard(client).ledger.bytes == upload_bytes_used(upload_dir) == 50_000


def test_parallel_ui_uploads_cannot_pass_the_budget_together(ui_env):
    """Each upload checked the folder before any of them had written: 10 parallel uploads of 90 KB all
    passed a 300 KB budget. Now each reserves its size before gradio writes a byte: at most 3 of them are
    ever kept. More than 3 may be answered 200, since a lone client's finished uploads turn over (the
    oldest is evicted for the next; counting 200s made this test fail on some thread schedules), but the
    folder never holds more than the budget, and what it holds is what the ledger counts."""
    from concurrent.futures import ThreadPoolExecutor

    from clipforge.server.upload_space import upload_bytes_used

    make, upload_dir, _, _ = ui_env
    limits = ServerLimits(max_upload_bytes=100_000, form_overhead_bytes=20_000, ui_cache_bytes=300_000)
    client = make(limits)
    before = upload_bytes_used(upload_dir)
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(
            pool.map(lambda i: _upload(client, f"p{i}.png", os.urandom(90_000)).status_code, range(10))
        )
    assert set(statuses) <= {200, 507} and 200 in statuses, statuses
    kept = [p for p in upload_dir.rglob("p*.png") if p.is_file()]
    assert 1 <= len(kept) <= 3, kept
    assert upload_bytes_used(upload_dir) - before == 90_000 * len(kept) <= 300_000
    assert _guard(client).ledger.bytes == upload_bytes_used(upload_dir)


def test_many_tiny_ui_uploads_are_counted_as_files(ui_env, monkeypatch):
    from clipforge.server import upload_space
    from clipforge.server.upload_space import upload_bytes_used

    monkeypatch.setattr(upload_space, "MIN_AGE_S", 0.0)  # uploads seconds old may go here (s61: `MIN_AGE_S`)
    make, upload_dir, _, _ = ui_env
    client = make(ServerLimits(ui_cache_files=20))
    client.get("/config")
    room = 20 - _guard(client).ledger.files  # the fixture's symlink and FIFO count too
    start = upload_bytes_used(upload_dir)
    answers = [_upload(client, f"t{i}.png", os.urandom(8)) for i in range(25)]
    assert [a.status_code for a in answers] == [200] * 25  # a lone client's files turn over, oldest first
    assert sum(Path(a.json()[0]).exists() for a in answers) == room == 20 - 2
    assert _guard(client).ledger.files == 20 and upload_bytes_used(upload_dir) - start == 8 * room
    held = _guard(client).ledger.reserve(0, 8, "198.51.100.9")  # another client's upload in flight
    assert held is not None and len(_guard(client).ledger.doomed()) == 8  # room made from the first client's
    # oldest files while it held more than half (18 -> 10 of 20)
    assert _upload(client, "t.png", b"x").status_code == 200  # it still holds the most: its own oldest made room
    assert _guard(client).ledger.files == 20 - 8 and not Path(answers[15].json()[0]).exists()
    _guard(client).ledger.settle(held, [], None)


def test_an_upload_is_usable_only_by_the_browser_that_sent_it(ui_env, photos):
    """Another client that learns the path of someone's upload (a shared screen, a log) cannot use it."""
    make, _, _, _ = ui_env
    owner = make()
    uploaded = _upload(owner, "red.png", photos[0].read_bytes(), "image/png")
    assert uploaded.status_code == 200 and "httponly" in uploaded.headers["set-cookie"].lower()
    path = uploaded.json()[0]
    classify = _fn_index(owner, "classify")
    call = [(classify, [_fd(path, "red.png"), "cat, dog", "a photo of a {}."])]
    _, done = run_events(owner, call)
    assert _succeeded(done[0]), done
    stranger = make()
    joins, done = run_events(stranger, call)
    assert joins[0].status_code == 403 and "in this browser" in joins[0].json()["detail"]
    assert stranger.get(f"/gradio_api/file={path}").status_code == 403
    assert owner.get(f"/gradio_api/file={path}").status_code == 200
    stranger.cookies.set("clipforge_uploader", "0" * 32)  # a made-up id owns nothing
    assert run_events(stranger, call)[0][0].status_code == 403


def test_unused_gradio_routes_and_url_fetches_are_closed(ui_env, capfd):
    make, _, _, _ = ui_env
    client = make()
    for path in (
        "/gradio_api/file=http://127.0.0.1:9/x.png",
        "/gradio_api/file=https://example.com/a.png",
        "/gradio_api/file=//example.com/a.png",
    ):
        assert client.get(path).status_code == 403, path
    for path in (
        "/gradio_api/proxy=http://127.0.0.1:9/",
        "/monitoring",
        "/gradio_api/runs",
        "/gradio_api/deep_link",
        "/gradio_api/custom_component/x/client/y/FORGED-LOG-LINE",  # gradio printed it to stdout
        "/gradio_api/custom_component/x/nope/y/z",
    ):  # gradio: 422
        assert client.get(path).status_code == 404, path
    assert "FORGED-LOG-LINE" not in capfd.readouterr().out
    for path in ("/gradio_api/component_server", "/gradio_api/process_recording", "/gradio_api/stream/x"):
        assert client.post(path, json={}).status_code == 404, path
    too_big = client.post(
        "/gradio_api/queue/join",
        content=b"[" + b"0," * 600_000 + b"0]",
        headers={"content-type": "application/json"},
    )
    assert too_big.status_code == 413
    assert (
        client.post(
            "/gradio_api/queue/join", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    # The page itself still loads.
    assert client.get("/").status_code == 200 and client.get("/config").status_code == 200


def test_the_guard_holds_behind_a_path_prefix(ui_env):
    """Behind a proxy (`uvicorn --root-path /photos`) the request path carries the prefix; the guard
    and the time limit must match the route path, or every check above is skipped."""
    make, _, targets, secrets = ui_env
    client = make(root_path="/photos")
    for path in (
        "/photos/gradio_api/proxy=http://127.0.0.1:9/",
        "/photos/monitoring",
        "/photos/gradio_api/runs",
        "/photos/gradio_api/deep_link",
    ):
        assert client.get(path).status_code == 404, path
    for target in targets[:4]:
        response = client.get(f"/photos/gradio_api/file={target}")
        assert response.status_code == 403, (target, response.status_code)
        assert not any(secret in response.text for secret in secrets)
    assert client.get("/photos/").status_code == 200


def test_no_cross_origin_reads_with_credentials(ui_env):
    """gradio echoed any localhost origin (and any origin when reached by a LAN address) with
    `Access-Control-Allow-Credentials: true`; now no origin but the page's own may read answers."""
    make, _, _, _ = ui_env
    client = make()
    cases = [
        ({"Host": "localhost:7860", "Origin": "http://localhost:9999"}, "/config"),
        ({"Host": "127.0.0.1:7860", "Origin": "http://127.0.0.1:5173"}, "/gradio_api/info"),
        ({"Host": "192.168.1.20:7860", "Origin": "http://evil.example"}, "/config"),
        ({"Host": "192.168.1.20:7860", "Origin": "http://evil.example"}, "/api/stats"),
    ]
    for headers, path in cases:
        response = client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.status_code)
        assert "access-control-allow-origin" not in response.headers, (headers, path)
        assert "access-control-allow-credentials" not in response.headers, (headers, path)
        preflight = client.options(path, headers={**headers, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers, (headers, path)


def test_the_ui_handlers_open_only_uploads(ui_env, tmp_path, opened_paths, kit):
    """The innermost layer alone: a handler given a FileData outside the upload folder never opens it."""
    from clipforge.server.errors import APIError
    from clipforge.server.ui_files import read_upload_file

    make, upload_dir, targets, _ = ui_env
    client = make()
    service = client.app.state.service
    real = upload_dir / ("1" * 64) / "red.png"
    real.parent.mkdir()
    real.write_bytes(kit.encode(kit.picture((200, 10, 10), 1)))
    opened_paths.clear()
    for target in targets + [str(upload_dir), ""]:
        with pytest.raises(APIError) as refused:
            read_upload_file(_fd(target), service, str(upload_dir), "image")
        assert refused.value.status == 400 and refused.value.code == "not_an_upload"
        assert not target or target not in refused.value.detail
    for value in (None, "/etc/passwd", {"url": "http://127.0.0.1:9/x.png"}, {"path": 5}):
        with pytest.raises(APIError):
            read_upload_file(value, service, str(upload_dir), "image")
    forbidden = {os.path.realpath(t) for t in targets if "://" not in t}
    assert not {os.path.realpath(p) for p in opened_paths} & forbidden
    assert read_upload_file(_fd(str(real)), service, str(upload_dir), "image").width == 64


def test_ui_search_and_add_still_work_through_the_event_api(ui_env, library, kit):
    make, _, _, _ = ui_env
    client = make()
    search = _fn_index(client, "search")
    _, done = run_events(client, [(search, ["a red picture", None, 5, ""])])
    assert done[0]["success"], done
    gallery, status = done[0]["output"]["data"][:2]
    assert len(gallery) == 5 and status.startswith("5 results")
    assert all("/api/images/" in item["image"]["url"] for item in gallery)
    new = kit.encode(kit.picture((20, 160, 160), seed=42))
    path = _upload(client, "teal.png", new, "image/png").json()[0]
    add = _fn_index(client, "add")
    _, done = run_events(client, [(add, [[_fd(path, "teal.png")], "wrong", None])])
    assert _refusal(done[0]).startswith("⚠️ **401 unauthorized**")
    assert (
        done[0]["output"]["data"][1:] == [{"__type__": "update"}] * 3
    )  # gallery, summary, chosen files kept
    _, done = run_events(client, [(add, [[_fd(path, "teal.png")], TOKEN, None])])
    assert done[0]["success"], done
    assert done[0]["output"]["data"][0].startswith("Added 1 image(s)")
    assert library.stats()["images"]["ok"] == 9


def _read_live(stream, counts: dict[str, int], release: threading.Event) -> None:
    """Open every session's stream, then let the held first event go: the streams are read while the server
    serves, so the order the readers record is the server's (read after the fact, two threads draining
    buffered messages recorded their own race: under load the other session read 4th of 41)."""
    readers, opened = [], []
    for session, count in counts.items():
        opened.append(threading.Event())
        readers.append(threading.Thread(target=stream, args=(session, count, opened[-1])))
        readers[-1].start()
    for event in opened:
        assert event.wait(60), "a queue/data stream did not open"
    release.set()
    for reader in readers:
        reader.join(timeout=120)


def test_queued_ui_events_of_one_client_do_not_starve_another(ui_env, photos, monkeypatch, library):
    """8 classify events queued by one browser session made another session's 2-label classify wait for all
    of them (gradio's queue is first come, first served). Now the other session's event runs second."""
    make, _, _, _ = ui_env
    model = library.encoder.model
    original = model.encode_text
    other_joined = threading.Event()

    def slow(tokens, *args, **kwargs):
        other_joined.wait(60)  # the hog's first event holds the model until every event has joined
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(model, "encode_text", slow)
    client = make()
    path = _upload(client, "red.png", photos[0].read_bytes(), "image/png").json()[0]
    classify = _fn_index(client, "classify")
    finished: list[str] = []

    def join(session: str, labels: str) -> None:
        joined = client.post(
            "/gradio_api/queue/join",
            json={
                "fn_index": classify,
                "data": [_fd(path, "red.png"), labels, "a photo of a {}."],
                "session_hash": session,
                "event_data": None,
                "trigger_id": None,
            },
        )
        assert joined.status_code == 200, joined.text

    def stream(session: str, count: int, opened: threading.Event) -> None:
        with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as events:
            opened.set()
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    finished.append(
                        f"{session}:{message['output']['data'][1] if message.get('success') else 'x'}"
                    )
                    count -= 1
                if count == 0 or message.get("msg") == "close_stream":
                    return

    hog, other = uuid.uuid4().hex, uuid.uuid4().hex
    for i in range(8):
        join(hog, f"thing{i}, other{i}")  # all queued before the other session's event
    join(other, "cat, dog")
    _read_live(stream, {hog: 8, other: 1}, other_joined)
    assert len(finished) == 9 and all(item.endswith(":") for item in finished), finished
    position = finished.index(f"{other}:")
    assert position <= 2, f"the other session waited for {position} of the hog's events"


def test_a_flood_of_library_page_events_does_not_queue_another_user_behind_it(ui_env, monkeypatch):
    """The Library tab's paging events ran in gradio's first-come queue (one at a time, no bound): a
    session that joined 40 "Next page" events made another session's one page wait for all 40 (and
    nothing bounded how many it could queue). Paging now takes turns per client in a gate of its own
    (model work does not delay it), with the same per-client cap as model work (429 beyond it)."""
    make, _, _, _ = ui_env
    client = make(
        ServerLimits(ui_unread_events=64, ui_pending_per_host=64)
    )  # 40 joins before reading: past the
    # default 32 unread and 16 pending of an address (the test client is one address for both sessions)
    service = client.app.state.service
    other_joined = threading.Event()
    real_stats = type(service.library).stats

    def stats(self):
        other_joined.wait(60)  # the first page served waits until every event has joined
        return real_stats(self)

    monkeypatch.setattr(type(service.library), "stats", stats)
    next_page = _fn_index(client, "next_page")
    finished: list[str] = []

    def join(session: str) -> None:
        joined = client.post(
            "/gradio_api/queue/join",
            json={
                "fn_index": next_page,
                "data": [None],
                "session_hash": session,
                "event_data": None,
                "trigger_id": None,
            },
        )
        assert joined.status_code == 200, joined.text

    def stream(session: str, count: int, opened: threading.Event) -> None:
        with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as events:
            opened.set()
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    summary = str(message["output"]["data"][1]) if message.get("success") else "failed"
                    finished.append(f"{session}:{'refused' if summary.startswith('⚠️') else 'page'}")
                    count -= 1
                if count == 0 or message.get("msg") == "close_stream":
                    return

    hog, other = uuid.uuid4().hex, uuid.uuid4().hex
    for _ in range(40):
        join(hog)  # all queued before the other session's event
    join(other)
    _read_live(stream, {hog: 40, other: 1}, other_joined)
    assert len(finished) == 41 and f"{other}:page" in finished, finished
    served = [item for item in finished if item.endswith(":page")]
    position = served.index(f"{other}:page")
    assert position <= 2, f"the other session waited for {position} of the hog's pages"
    limit = service.limits.max_client_requests
    assert served.count(f"{hog}:page") <= limit and finished.count(f"{hog}:refused") >= 40 - limit


def test_answers_nobody_reads_are_bounded_per_session_and_per_address(ui_env):
    """gradio keeps every answer of an event until its session reads `/gradio_api/queue/data`; a client that
    joins events and never reads made the server keep each answer (about 7 KB) forever: 1,200 joins of one
    session left 1,200 unread events and 3,600 messages (the per-client cap answers quickly, it does not
    stop the joins). Now a session may leave `ui_unread_events` answers unread, and an address
    `ui_unread_sessions` sessions with unread answers; past that a join is refused (429) until they are read."""
    make, _, _, _ = ui_env
    limits = ServerLimits(ui_unread_events=4, ui_unread_sessions=3)
    client = make(limits)
    search = _fn_index(client, "search")
    queue = _blocks(client)._queue
    hog = uuid.uuid4().hex
    statuses = [_join(client, search, ["", None, 3, ""], hog).status_code for _ in range(10)]
    assert statuses[:4] == [200] * 4 and statuses[4:] == [429] * 6, statuses
    assert len(queue.pending_event_ids_session.get(hog, ())) <= 4
    refused = _join(client, search, ["", None, 3, ""], hog)
    assert refused.json()["error"] == "too_many_requests" and "read" in refused.json()["detail"]
    # more sessions from the same address, each leaving its answer unread
    others = [uuid.uuid4().hex for _ in range(4)]
    statuses = [_join(client, search, ["", None, 3, ""], s).status_code for s in others]
    assert statuses == [200, 200, 429, 429], statuses  # the hog's session is the first of three
    # reading a session's answers makes room again
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": hog}) as events:
        seen = 0
        for line in events.iter_lines():
            if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_completed":
                seen += 1
            if seen == 4:
                break
    assert _join(client, search, ["", None, 3, ""], others[2]).status_code == 200


def test_upload_progress_ids_leave_nothing_behind(ui_env):
    """gradio tracks the progress of an upload under an `upload_id` the client picks, in a process-wide
    table that only its progress stream empties: every `GET /gradio_api/upload_progress?upload_id=<new>`
    left an asyncio.Event behind for good (its wait times out after 3 s, the entry stays), and every upload
    refused mid-body left its tracker. The page does not need progress reports: the id is dropped from
    uploads and the progress route answers 404, so nothing is tracked for anyone."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio.routes import file_upload_statuses

    make, _, _, _ = ui_env
    client = make(ServerLimits(max_upload_bytes=50_000, form_overhead_bytes=200_000))
    before_signals, before_statuses = set(file_upload_statuses._signals), set(file_upload_statuses._statuses)
    ids = [uuid.uuid4().hex for _ in range(12)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(lambda i: client.get("/gradio_api/upload_progress", params={"upload_id": i}), ids)
        )
    assert {a.status_code for a in answers} == {404}
    refused = client.post(
        "/gradio_api/upload",
        params={"upload_id": "x" * 40},
        files=[("files", ("big.png", os.urandom(120_000), "image/png"))],
    )
    assert refused.status_code == 413, refused.text
    stored = client.post(
        "/gradio_api/upload",
        params={"upload_id": "y" * 40},
        files=[("files", ("ok.png", os.urandom(1_000), "image/png"))],
    )
    assert stored.status_code == 200, stored.text
    assert set(file_upload_statuses._signals) <= before_signals, "progress signals were left behind"
    assert set(file_upload_statuses._statuses) <= before_statuses, "progress trackers were left behind"


def test_one_upload_request_of_many_files_counts_every_file(ui_env):
    """gradio takes up to 1,000 files in one multipart request, and an upload reserved room for one: six
    parallel requests of 1,000 tiny files left 6,000 files against a budget of 2,000. Every file part now
    takes its place in the budget as it arrives; a request that would pass it is refused whole (507) and
    leaves nothing behind."""
    from clipforge.server.upload_space import upload_bytes_used

    make, upload_dir, _, _ = ui_env
    client = make(ServerLimits(ui_cache_files=20))
    client.get("/config")
    guard = _guard(client)
    room = 20 - guard.ledger.files  # the fixture's symlink and FIFO count too
    before = _files_under(upload_dir)
    many = client.post(
        "/gradio_api/upload", files=[("files", (f"m{i}.png", os.urandom(8), "image/png")) for i in range(50)]
    )
    assert many.status_code == 507 and many.json()["error"] == "insufficient_storage", many.text
    assert _files_under(upload_dir) == before and guard.ledger.files == 20 - room
    assert guard.ledger.reserved_files == 0 and guard.ledger.reserved_bytes == 0
    half = min(room, 10)  # one address's uploads in flight hold at most half the files (review 61)
    fits = client.post(
        "/gradio_api/upload",
        files=[("files", (f"f{i}.png", os.urandom(8), "image/png")) for i in range(half)],
    )
    assert fits.status_code == 200 and len(fits.json()) == half
    assert guard.ledger.files == 20 - room + half and upload_bytes_used(upload_dir) >= 8 * half


def test_a_client_that_fills_the_upload_space_does_not_lock_others_out(ui_env, monkeypatch):
    """The upload space is shared: one client that filled it (2,000 tiny files, or ten 20 MB ones) made every
    other browser's upload a 507 for as long as uploads are kept (30 minutes), so nobody could search by
    image or classify. When the space is full, room is now made from the biggest holders first (the oldest
    upload of the address holding the most, again until the new one fits; s60, a class of 30 ran out under the
    earlier "more than half" rule): a lone user's space turns over (oldest first), and a hog evicts itself first."""
    from clipforge.server import upload_space

    monkeypatch.setattr(upload_space, "MIN_AGE_S", 0.0)  # uploads seconds old may go here (s61: `MIN_AGE_S`)
    make, upload_dir, _, _ = ui_env
    hog = make(ServerLimits(ui_cache_files=20))
    hog.get("/config")
    guard = _guard(hog)
    other = TestClient(hog.app, client=("192.0.2.7", 4000))
    statuses, paths = [], []
    for i in range(30):
        answer = _upload(hog, f"h{i}.png", os.urandom(16), "image/png")
        statuses.append(answer.status_code)
        paths += answer.json() if answer.status_code == 200 else []
    assert statuses == [200] * 30, statuses  # its own oldest made room
    assert guard.ledger.files <= 20 and not Path(paths[0]).exists() and Path(paths[-1]).exists()
    mine = [_upload(other, f"o{i}.png", os.urandom(16), "image/png") for i in range(5)]
    assert [a.status_code for a in mine] == [200] * 5
    for i in range(30):  # the hog goes on: it evicts itself, not the other client
        assert _upload(hog, f"g{i}.png", os.urandom(16), "image/png").status_code == 200
    kept = [a.json()[0] for a in mine]
    assert all(
        Path(p).exists() and guard.ledger.owns(p, other.cookies.get("clipforge_uploader")) for p in kept
    )
    assert (
        guard.ledger.files <= 20 and len(_files_under(upload_dir)) <= 20 + 1
    )  # + the fixture's inner folder


def test_a_ui_event_names_at_most_1000_plausible_paths_checked_off_the_event_loop(ui_env, monkeypatch):
    """The guard resolved every `path` of an event body with `os.path.realpath` on the event loop, at any
    length: one anonymous 1 MB body naming "/tmp/a/a/a/..." froze the server for 38 s (realpath's cost grows
    with the square of the components). A path longer than 4,096 characters or of more than 64 components is
    refused unresolved (gradio's own are ~10), an event may name at most 1,000 files (what the Add tab
    reads), and the paths are checked in a worker thread."""
    import asyncio

    make, _, _, _ = ui_env
    client = make()
    resolved: list[tuple[int, bool]] = []
    real = os.path.realpath

    def spy(path, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        resolved.append((len(os.fspath(path)), on_loop))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", spy)
    search = _fn_index(client, "search")
    for long_path in ("/tmp/" + "a/" * 100_000, "/tmp/" + "a/../" * 40_000, "/tmp/" + "b" * 300_000):
        body = {"fn_index": search, "data": [_fd(long_path), None, 3, ""], "session_hash": uuid.uuid4().hex}
        for route, status in (("/gradio_api/queue/join", 413), ("/gradio_api/anything", 403)):
            answer = client.post(route, json=body)  # a join's values are bounded first (`ui_events`)
            assert answer.status_code == status, answer.text
    assert max((n for n, _ in resolved), default=0) <= 4096
    resolved.clear()
    too_many = [_fd(f"/tmp/x{i}.png") for i in range(1001)]
    answer = client.post(
        "/gradio_api/anything", json={"fn_index": search, "data": too_many, "session_hash": uuid.uuid4().hex}
    )
    assert answer.status_code == 413 and "1,000 files" in answer.json()["detail"], answer.text
    answer = client.post(
        "/gradio_api/queue/join",
        json={"fn_index": search, "data": too_many, "session_hash": uuid.uuid4().hex},
    )
    assert answer.status_code == 400 and "takes 4 values, got 1001" in answer.json()["detail"], answer.text
    assert not resolved  # refused before a single path was resolved
    answer = client.post(
        "/gradio_api/queue/join",
        json={"fn_index": search, "data": [_fd("/tmp/x.png"), None, 3, ""], "session_hash": uuid.uuid4().hex},
    )
    assert answer.status_code == 403 and resolved and not any(on_loop for _, on_loop in resolved)
