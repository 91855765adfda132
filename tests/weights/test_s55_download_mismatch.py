"""A download or cached copy whose sha256 is not the pinned one is removed with one line saying so (session 55).

Before: a fresh download with other bytes said only "sha256 X does not match the expected Y" (not that the
bytes were removed, how many there were, or what to do), and a copy already in the cache with the wrong
sha256 was deleted without a word: replaced silently when the download worked, and, when it did not (offline,
a 404), the line named only the download's failure while the user's file was gone.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clipforge.errors import Notice
from clipforge.weights import DownloadError, download

GOOD = os.urandom(50_000)
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
WRONG = GOOD[::-1]
WRONG_SHA = hashlib.sha256(WRONG).hexdigest()
BAD = b"corrupted by hand"  # 17 bytes
BAD_SHA = hashlib.sha256(BAD).hexdigest()
FAST = {"backoff": 0.001, "progress": False, "timeout": 5.0}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        body = {"/good.bin": GOOD, "/wrong.bin": WRONG}.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _url(httpd: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}{path}"


def _cached_refusal(path: Path) -> str:
    return (f"{path} was refused (its sha256 is {BAD_SHA[:16]}..., not the pinned {GOOD_SHA[:16]}..., in 17 bytes: "
            "a copy saved there another way, perhaps cut short, or changed on disk) and removed")


def test_a_download_with_other_bytes_says_they_were_removed_and_why(server, tmp_path: Path) -> None:
    url = _url(server, "/wrong.bin")
    with pytest.raises(DownloadError) as caught:
        download(url, tmp_path, GOOD_SHA, retries=0, **FAST)
    assert str(caught.value) == (
        f"could not download {url} (sha256 {WRONG_SHA} does not match the expected {GOOD_SHA}: the 50,000 bytes "
        "received were removed; a transfer cut short unnoticed or altered by a proxy or mirror gives other bytes, "
        "and so does a file changed upstream: run again to download it anew, and if it fails alike, the file "
        'changed upstream); fetch the file another way and pass its path instead: clipforge.load("/path/to/wrong.bin").'
    )
    assert sorted(tmp_path.iterdir()) == []


def test_a_cached_copy_with_the_wrong_hash_is_named_when_the_download_fails(server, tmp_path: Path) -> None:
    cached = tmp_path / "gone.bin"
    cached.write_bytes(BAD)
    url = _url(server, "/gone.bin")
    with pytest.raises(DownloadError) as caught:
        download(url, tmp_path, GOOD_SHA, **FAST)
    assert str(caught.value) == (
        f"{_cached_refusal(cached)}; could not download {url} (HTTP 404 Not Found); fetch the file another way "
        'and pass its path instead: clipforge.load("/path/to/gone.bin").'
    )
    assert not cached.exists()


def test_a_cached_copy_with_the_wrong_hash_replaced_by_a_good_download_is_a_notice(server, tmp_path: Path) -> None:
    cached = tmp_path / "good.bin"
    cached.write_bytes(BAD)
    url = _url(server, "/good.bin")
    with pytest.warns(Notice) as caught:
        assert download(url, tmp_path, GOOD_SHA, **FAST) == cached
    assert cached.read_bytes() == GOOD
    assert [str(w.message) for w in caught if w.category is Notice] == [f"{_cached_refusal(cached)}; downloaded {url} anew"]


def test_the_registry_download_names_the_removed_copy_once(server, tmp_path: Path, monkeypatch) -> None:
    """`download_pretrained` says "<file> was refused (...) and removed" itself: the download's own line about
    the same file is not repeated inside its reasons."""
    from clipforge.weights import registry
    from clipforge.weights.download import download_pretrained

    url = _url(server, "/gone.bin")
    entry = registry.PretrainedWeights(name="ViT-B-32", url=url, sha256=GOOD_SHA, filename="gone.bin")
    monkeypatch.setattr(registry, "get_pretrained", lambda name, tag="openai": entry)
    cached = tmp_path / "gone.bin"
    cached.write_bytes(BAD)
    with pytest.raises(DownloadError) as caught:
        download_pretrained("ViT-B-32", tmp_path, progress=False, backoff=0.001)
    assert str(caught.value) == (
        f"{_cached_refusal(cached)}; could not download the ViT-B-32:openai weights (127.0.0.1:"
        f"{server.server_address[1]}: HTTP 404 Not Found); fetch {url} another way and save it as {cached}, or "
        "pass the file's path instead."
    )
    assert not cached.exists()
