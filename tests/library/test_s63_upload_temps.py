"""An upload's "file already holding these bytes" is a finished file holding them, never a writer's temporary
(audit 63 concurrency #1, #2).

* Two `serve` processes on one library uploading the same photo indexed each other's atomic-write temporaries
  (``.<name>.<pid>-<rand>.tmp@<host>.jpg``): junk records of vanished paths, 500s, two records of one photo.
* A temporary left by a `kill -9` mid-upload blocked that photo for good: every re-upload answered 201 with the
  partial file's record and stored nothing.

Now the lookup skips hidden names and files not holding the bytes, a dead writer's temporaries in the upload's
folders are removed when an upload lands there (a live writer's stay), and two writers of the same bytes take
turns (a lock under ``uploads/``), so the second finds the first's file: one file, one record.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from clipforge.atomic import host_tag
from clipforge.library import Library, media


def _jpeg(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10 + seed, 200, 30)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _temp(folder: Path, name: str, pid: int, host: str, data: bytes) -> Path:
    """What `atomic_path` leaves of `folder/name` when its writer stops before the rename."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{pid}-deadbeef.tmp@{host}{Path(name).suffix}"
    tmp.write_bytes(data)
    return tmp


def _records(library: Library, sha: str) -> list:
    return [r for r in library.store.list_images() if r.sha256 == sha or ".tmp@" in r.path]


def test_a_dead_writers_temporary_is_ignored_and_removed_and_the_upload_stored(tmp_path, tiny_encoder):
    """Before: both answers were 201 created with the partial temporary's record (its sha256, 20 bytes short)."""
    from fastapi.testclient import TestClient

    from clipforge.server import create_app

    data = _jpeg()
    sha = hashlib.sha256(data).hexdigest()
    with Library(tmp_path / "lib", tiny_encoder) as library:
        folder = library.paths.uploads_dir / sha[:2] / sha
        left = _temp(folder, "cat.jpg", _dead_pid(), host_tag(), data[:-20])  # a kill -9 mid-write
        with TestClient(create_app(library)) as client:
            first = client.post("/api/images", files={"file": ("cat.jpg", data, "image/jpeg")})
            retry = client.post("/api/images", files={"file": ("door.jpg", data, "image/jpeg")})
        assert first.status_code == 201, first.text
        assert first.json()["created"] is True
        image = first.json()["image"]
        assert (image["filename"], image["size"], image["sha256"]) == ("cat.jpg", len(data), sha)
        assert retry.status_code == 200, retry.text
        assert retry.json()["created"] is False
        assert retry.json()["image"]["id"] == image["id"]
        assert not left.exists()
        assert sorted(p.name for p in folder.iterdir()) == ["cat.jpg"]
        assert (folder / "cat.jpg").read_bytes() == data
        records = _records(library, sha)
        assert [(r.id, r.path, r.status) for r in records] == [(image["id"], str(folder / "cat.jpg"), "ok")]
        assert library.image_bytes(image["id"])[0] == data


def test_a_dead_writers_temporary_of_an_unnamed_upload_is_removed(tmp_path, tiny_encoder):
    """The layout without a name (``uploads/<ab>/<sha><ext>``): its temporaries sit in the shard folder."""
    data = _jpeg(1)
    sha = hashlib.sha256(data).hexdigest()
    with Library(tmp_path / "lib", tiny_encoder) as library:
        shard = library.paths.uploads_dir / sha[:2]
        left = _temp(shard, f"{sha}.jpg", _dead_pid(), host_tag(), data[:100])
        record = library.add_bytes(data)
        assert record.path == str(shard / f"{sha}.jpg")
        assert (record.sha256, record.size, record.status) == (sha, len(data), "ok")
        assert not left.exists()
        assert sorted(p.name for p in shard.iterdir()) == [f"{sha}.jpg"]


@pytest.mark.parametrize("whose", ["live pid here", "another host"])
def test_a_live_writers_temporary_is_ignored_but_kept(tmp_path, tiny_encoder, whose):
    """A temporary another process may still be writing (a live pid here; another host's, whose pid says nothing
    here, until a day old) is not the stored upload, and is not removed."""
    data = _jpeg(2)
    sha = hashlib.sha256(data).hexdigest()
    pid, host = (os.getppid(), host_tag()) if whose == "live pid here" else (_dead_pid(), "otherhost")
    with Library(tmp_path / "lib", tiny_encoder) as library:
        folder = library.paths.uploads_dir / sha[:2] / sha
        writing = _temp(folder, "one.jpg", pid, host, data[:50])
        record = library.add_bytes(data, "two.jpg")
        assert record.path == str(folder / "two.jpg")
        assert (record.sha256, record.size, record.status) == (sha, len(data), "ok")
        assert writing.read_bytes() == data[:50]
        assert sorted(p.name for p in folder.iterdir()) == sorted([writing.name, "two.jpg"])
        assert [r.path for r in _records(library, sha)] == [record.path]


def test_a_finished_file_not_holding_the_bytes_is_not_the_upload(tmp_path, tiny_encoder):
    """A file in the hash folder with other bytes (cut short by a copy, edited by hand) is not these bytes."""
    data = _jpeg(3)
    sha = hashlib.sha256(data).hexdigest()
    with Library(tmp_path / "lib", tiny_encoder) as library:
        folder = library.paths.uploads_dir / sha[:2] / sha
        folder.mkdir(parents=True)
        (folder / "a.jpg").write_bytes(data[:-1])
        target = media.store_upload(library.paths, data, filename="b.jpg")
        assert target == folder / "b.jpg"
        assert target.read_bytes() == data
        assert media.store_upload(library.paths, data, filename="c.jpg") == target  # now found: stored once


def test_two_writers_of_the_same_bytes_end_with_one_file_and_one_record(tmp_path, tiny_encoder, monkeypatch):
    """Two libraries over one folder (two servers) add the same bytes at once: the second looks for the stored file
    while the first is about to write its own. Before: both wrote (one.jpg and two.jpg), two records of one photo.
    The hook starts the second add when the first is about to write, and lets the first go on once the second
    reaches its own write (before) or after 1 s (now: it waits for the first, then finds one.jpg)."""
    data = _jpeg(4)
    sha = hashlib.sha256(data).hexdigest()
    real_write = media.write_bytes_atomic
    second_writing = threading.Event()
    answers: dict[str, object] = {}
    root = tmp_path / "lib"
    Library(root, tiny_encoder).close()
    first_lib, second_lib = Library(root, tiny_encoder), Library(root, tiny_encoder)

    def second() -> None:
        try:
            answers["second"] = second_lib.add_bytes(data, "two.jpg")
        except BaseException as exc:  # noqa: BLE001 - shown by the assertion below
            answers["second"] = exc

    worker = threading.Thread(target=second)

    def hooked(target, payload):
        if threading.current_thread() is worker:
            second_writing.set()
        elif not worker.is_alive() and "second" not in answers:
            worker.start()
            second_writing.wait(1.0)
        return real_write(target, payload)

    monkeypatch.setattr(media, "write_bytes_atomic", hooked)
    try:
        first = first_lib.add_bytes(data, "one.jpg")
        worker.join(30)
        got = answers["second"]
        assert not isinstance(got, BaseException), repr(got)
        folder = root / "uploads" / sha[:2] / sha
        assert sorted(p.name for p in folder.iterdir()) == ["one.jpg"]
        assert (got.id, got.path) == (first.id, first.path) == (first.id, str(folder / "one.jpg"))
        assert [(r.id, r.path) for r in _records(first_lib, sha)] == [(first.id, first.path)]
    finally:
        first_lib.close()
        second_lib.close()
