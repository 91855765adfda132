"""A full disk and a stopped server: a clear 507 with nothing left behind, and no upload outliving the server.

The disk is "full" through RLIMIT_FSIZE (what `ulimit -f` sets): every write past the limit fails
with EFBIG, as ENOSPC would, without filling a real disk. It applies to the whole test process,
so it is set only around the one request, with SIGXFSZ ignored so the write fails instead of
killing the process.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from clipforge.server import create_app


@contextlib.contextmanager
def full_disk(max_file_bytes: int = 512):
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, previous_handler)


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def test_a_rest_upload_on_a_full_disk_is_a_507_and_leaves_nothing(make_client, library, kit):
    client = make_client()
    data = kit.encode(kit.picture((10, 120, 240), seed=77), "PNG")
    assert len(data) > 1024
    before, count = _tree(library.paths.uploads_dir), library.stats()["images"]["ok"]
    with full_disk():
        answer = client.post("/api/images", files={"file": ("blue.png", data, "image/png")})
    assert answer.status_code == 507, answer.text
    assert answer.json()["error"] == "insufficient_storage" and "disk is full" in answer.json()["detail"]
    assert _tree(library.paths.uploads_dir) == before  # no half file, no empty folder
    assert library.stats()["images"]["ok"] == count
    assert client.post("/api/images", files={"file": ("blue.png", data, "image/png")}).status_code == 201


def test_a_ui_upload_on_a_full_disk_is_a_507_and_leaves_nothing(tmp_path, monkeypatch, library):
    from fastapi.testclient import TestClient

    upload_dir = tmp_path / "ui-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_dir))
    with TestClient(create_app(library, ui=True), raise_server_exceptions=False) as client:
        before = _tree(upload_dir)
        with full_disk():
            answer = client.post("/gradio_api/upload", files=[("files", ("x.png", os.urandom(4096), "image/png"))])
        assert answer.status_code == 507, answer.text
        assert "disk is full" in answer.json()["detail"]
        assert _tree(upload_dir) == before
        assert client.post("/gradio_api/upload", files=[("files", ("x.png", b"123", "image/png"))]).status_code == 200


def test_sigterm_removes_the_private_upload_folder(tmp_path, kit, photos):
    """uvicorn re-raises SIGTERM after its shutdown, which ended the process before `serve` could remove
    the private upload folder: every photo uploaded through the page stayed in /tmp."""
    from clipforge.library import Library

    with Library(tmp_path / "lib", model="test-vit-tiny") as library:
        library.add(photos[:1], workers=0, progress=False)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env.update(TMPDIR=str(scratch), GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    log = tmp_path / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clipforge", "serve", "--library", str(tmp_path / "lib"),
                                 "--model", "test-vit-tiny", "--port", "0", "--log-level", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        deadline, url = time.monotonic() + 180, None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"at (http://127\.0\.0\.1:\d+)/", log.read_text(errors="replace"))
            url = match.group(1) if match else time.sleep(0.2)
        assert url, log.read_text()[-2000:]
        folders = list(scratch.glob("clipforge-ui-uploads-*"))
        assert len(folders) == 1 and oct(folders[0].stat().st_mode & 0o777) == "0o700"
        uploaded = httpx.post(f"{url}/gradio_api/upload", files=[("files", ("red.png", photos[0].read_bytes()))],
                              timeout=60)
        assert uploaded.status_code == 200 and Path(uploaded.json()[0]).is_file()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not folders[0].exists(), f"{folders[0]} outlived the server: {sorted(_tree(folders[0]))[:5]}"


_READ_ONLY_SERVER = r'''
import json, sys
from fastapi.testclient import TestClient
from clipforge.library import Library, resolve_encoder
from clipforge.server import create_app

library = Library(sys.argv[1], resolve_encoder("test-vit-tiny"))
with TestClient(create_app(library, ui=False)) as client:
    found = client.post("/api/search", json={"text": "a red photo", "top_k": 3})
    added = client.post("/api/images", files={"file": ("new.png", open(sys.argv[2], "rb").read(), "image/png")})
    print(json.dumps({"search": [found.status_code, found.json()], "add": [added.status_code, added.json()]}))
'''


def test_a_read_only_library_is_served_for_search_and_refuses_uploads_in_one_line(library, kit, tmp_path,
                                                                                  without_root_override):
    """A library on a read-only folder or mount could not be served at all (SQLite's write-ahead log and shared
    memory are written even to read); it is now searched as it is, and an upload is a 403 saying why (it was a
    500 with a traceback in the log once the library could be opened), with nothing written."""
    import json

    folder = library.paths.root
    expected = [hit.id for hit in library.search("a red photo", top_k=3)]
    library.close()
    upload = tmp_path / "new.png"
    upload.write_bytes(kit.encode(kit.picture((10, 120, 240), seed=78), "PNG"))
    modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
    for path, mode in modes.items():
        path.chmod(mode & ~0o222)
    before = {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}
    try:
        done = subprocess.run([*without_root_override, sys.executable, "-c", _READ_ONLY_SERVER, str(folder),
                               str(upload)], capture_output=True, text=True, timeout=120)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    status, body = answers["search"]
    assert status == 200 and [hit["id"] for hit in body["results"]] == expected, body
    status, body = answers["add"]
    assert status == 403 and body["error"] == "read_only_library", body
    assert body["detail"] == ("this server's library is read-only (its folder or disk cannot be written): the image "
                              "was not added")
    assert {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_an_upload_while_another_process_holds_the_library_is_a_503_to_retry(make_client, library, kit, monkeypatch):
    """Another process writing the library past SQLite's 60 s busy wait (a `clipforge tag` of a large library
    clearing and inserting its tags) made an upload a 500 with "database is locked": it is a 503 with
    Retry-After, and nothing of the upload is kept."""
    import sqlite3

    client = make_client()
    data = kit.encode(kit.picture((240, 120, 10), seed=78), "PNG")
    before, count = _tree(library.paths.uploads_dir), library.stats()["images"]["ok"]
    real = library.add_bytes

    def busy(payload, filename=None):  # what SQLite says once its busy wait runs out
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(library, "add_bytes", busy)
    answer = client.post("/api/images", files={"file": ("orange.png", data, "image/png")})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "library_busy" and "another process" in answer.json()["detail"]
    assert answer.headers["retry-after"] == "10"
    assert _tree(library.paths.uploads_dir) == before and library.stats()["images"]["ok"] == count
    monkeypatch.setattr(library, "add_bytes", real)
    assert client.post("/api/images", files={"file": ("orange.png", data, "image/png")}).status_code == 201
