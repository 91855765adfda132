"""Downloads: one downloader of a file at a time, and every refused cached copy said (review of session 55).

Found in review, with a server on 127.0.0.1:
- Two downloads of one file at once (two commands, two server requests) both wrote ``<file>.partial``: the
  second truncated it and the first went on writing at its own offset, then each checked the sha256 of the
  bytes *it* received and renamed the file into place. One run in three left a file of the wrong sha256 at the
  final path, returned as verified; the other raised a raw FileNotFoundError from the rename. A download now
  holds ``<file>.lock`` (flock), and the second finds the first one's verified copy without fetching.
- `download_pretrained` removed a refused copy of one source (a wrong sha256) while trying it, and when another
  source then worked, said nothing; when all failed, it named only the first source's copy.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clipforge.errors import Notice
from clipforge.weights import DownloadError, download

GOOD = os.urandom(200_000)
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
BAD = b"corrupted by hand"  # 17 bytes
BAD_SHA = hashlib.sha256(BAD).hexdigest()
FAST = {"backoff": 0.001, "progress": False, "timeout": 5.0}


class _Handler(BaseHTTPRequestHandler):
    """Serves GOOD at any path ending in good.bin (resuming a Range), else 404. The first request of a server
    with a `gate` sends half the file, then waits for the gate before the rest."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        with server.lock:  # type: ignore[attr-defined]
            server.requests.append(self.path)  # type: ignore[attr-defined]
            first = len(server.requests) == 1  # type: ignore[attr-defined]
        if not self.path.endswith("good.bin"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        start = int(self.headers.get("Range", "bytes=0-").split("=")[1].rstrip("-") or 0)
        body = GOOD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(GOOD) - 1}/{len(GOOD)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        gate = server.gate if first else None  # type: ignore[attr-defined]
        if gate is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        gate.wait(10)
        self.wfile.write(body[len(body) // 2:])


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests, httpd.lock, httpd.gate = [], threading.Lock(), None  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    if httpd.gate is not None:  # type: ignore[attr-defined]
        httpd.gate.set()  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _base(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def test_a_second_download_of_the_same_file_waits_and_takes_the_first_ones_copy(server, tmp_path: Path) -> None:
    server.gate = threading.Event()
    url = f"{_base(server)}/good.bin"
    results: dict[str, object] = {}

    def fetch(name: str) -> None:
        try:
            results[name] = download(url, tmp_path, GOOD_SHA, **FAST)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[name] = exc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Notice)  # the second one's "waiting for it to finish"
        first = threading.Thread(target=fetch, args=("first",))
        first.start()
        for _ in range(500):  # the first download is half way, its server answer held at the gate
            if server.requests and (tmp_path / "good.bin.partial").is_file():
                break
            time.sleep(0.01)
        second = threading.Thread(target=fetch, args=("second",))
        second.start()
        time.sleep(0.3)  # unguarded, the second one sends its own request meanwhile
        server.gate.set()
        first.join(20)
        second.join(20)
    assert results == {"first": tmp_path / "good.bin", "second": tmp_path / "good.bin"}
    assert (tmp_path / "good.bin").read_bytes() == GOOD
    assert server.requests == ["/good.bin"]  # fetched once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.bin"]  # no .partial, no .lock


def test_a_lock_file_left_by_a_killed_download_does_not_hold_the_next_one(server, tmp_path: Path) -> None:
    """The kernel drops a dead holder's flock; the file itself stays until the next download removes it."""
    (tmp_path / "good.bin.lock").write_bytes(b"")
    assert download(f"{_base(server)}/good.bin", tmp_path, GOOD_SHA, **FAST) == tmp_path / "good.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.bin"]


def _refusal(path: Path) -> str:
    return (f"{path} was refused (its sha256 is {BAD_SHA[:16]}..., not the pinned {GOOD_SHA[:16]}..., in 17 bytes: "
            "a copy saved there another way, perhaps cut short, or changed on disk) and removed")


@pytest.fixture()
def two_sources(server, monkeypatch: pytest.MonkeyPatch):
    """An entry with a release URL and one hub file, both pinned; `make(release, hub)` names their server paths."""
    from clipforge.weights import registry, zoo_data

    monkeypatch.setenv(registry.HF_ENDPOINT_ENV, _base(server))

    def make(release: str, hub_file: str) -> registry.PretrainedWeights:
        entry = registry.PretrainedWeights(name="ViT-B-32", url=f"{_base(server)}/{release}", sha256=GOOD_SHA,
                                           filename=release, hf_repo="org/repo", hf_files=(hub_file,))
        monkeypatch.setattr(registry, "get_pretrained", lambda name, tag="openai": entry)
        monkeypatch.setitem(zoo_data.PINNED_SHA256, f"org/repo/{hub_file}", GOOD_SHA)
        return entry

    return make


def test_a_copy_removed_before_another_source_worked_is_a_notice(server, two_sources, tmp_path: Path) -> None:
    from clipforge.weights.download import download_pretrained

    two_sources("gone.bin", "good.bin")
    cached = tmp_path / "gone.bin"
    cached.write_bytes(BAD)
    with pytest.warns(Notice) as caught:
        got = download_pretrained("ViT-B-32", tmp_path, progress=False, backoff=0.001)
    assert got == tmp_path / "org--repo--good.bin" and got.read_bytes() == GOOD
    assert not cached.exists()
    assert [str(w.message) for w in caught if w.category is Notice] == [
        f"{_refusal(cached)}; the ViT-B-32:openai weights came from 127.0.0.1:{server.server_address[1]} instead"]


def test_every_removed_copy_is_named_when_all_sources_fail(server, two_sources, tmp_path: Path) -> None:
    from clipforge.weights.download import download_pretrained

    entry = two_sources("gone.bin", "missing.bin")
    cached = [tmp_path / "gone.bin", tmp_path / "org--repo--missing.bin"]
    for path in cached:
        path.write_bytes(BAD)
    with pytest.raises(DownloadError) as caught:
        download_pretrained("ViT-B-32", tmp_path, progress=False, backoff=0.001)
    host = f"127.0.0.1:{server.server_address[1]}"
    assert str(caught.value) == (
        f"{_refusal(cached[0])}; {_refusal(cached[1])}; could not download the ViT-B-32:openai weights ({host}: "
        f"HTTP 404 Not Found; {host}: HTTP 404 Not Found); fetch {entry.url} another way and save it as "
        f"{cached[0]}, or pass the file's path instead."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []
