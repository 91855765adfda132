"""Downloads against a local HTTP server that misbehaves in the ways real networks do."""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from clipforge.weights import DownloadError, download, download_pretrained, get_pretrained

GOOD = os.urandom(300_000)
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
FAST = {"backoff": 0.001, "progress": False, "timeout": 5.0}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _range_start(self) -> int:
        header = self.headers.get("Range", "")
        return int(header.removeprefix("bytes=").split("-")[0]) if header.startswith("bytes=") else 0

    def _send(self, body: bytes, start: int, total: int, claimed: int | None = None,
              honour_range: bool = True) -> None:
        if start and honour_range:
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(claimed if claimed is not None else len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        start = self._range_start()
        if self.path == "/good.bin":
            self._send(GOOD, start, len(GOOD))
        elif self.path == "/wrong.bin":
            self._send(GOOD[::-1], start, len(GOOD))
        elif self.path == "/truncated.bin":
            # Promises 100 bytes more than it ever sends, on every request.
            body = GOOD[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(GOOD) + 99}/{len(GOOD) + 100}")
            self.send_header("Content-Length", str(len(body) + 100))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
        elif self.path in ("/drop.bin", "/drop-norange.bin"):
            count = server.counts.get(self.path, 0)  # type: ignore[attr-defined]
            server.counts[self.path] = count + 1  # type: ignore[attr-defined]
            if count == 0:  # first request: send half, then hang up
                self.send_response(200)
                self.send_header("Content-Length", str(len(GOOD)))
                self.end_headers()
                self.wfile.write(GOOD[: len(GOOD) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            else:
                self._send(GOOD, start, len(GOOD), honour_range=self.path == "/drop.bin")
        elif self.path.startswith("/busy/"):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []  # type: ignore[attr-defined]
    httpd.counts = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _url(httpd, path: str) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}{path}"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_good_file_downloads_verifies_and_is_reused(server, tmp_path):
    path = download(_url(server, "/good.bin"), tmp_path, GOOD_SHA, **FAST)
    assert path == tmp_path / "good.bin"
    assert path.read_bytes() == GOOD
    assert _leftovers(tmp_path) == ["good.bin"]
    before = len(server.requests)
    again = download(_url(server, "/good.bin"), tmp_path, GOOD_SHA, **FAST)
    assert again == path and len(server.requests) == before  # cached, verified, no request


def test_cached_file_with_wrong_hash_is_downloaded_again(server, tmp_path):
    (tmp_path / "good.bin").write_bytes(b"corrupted by hand")
    path = download(_url(server, "/good.bin"), tmp_path, GOOD_SHA, **FAST)
    assert path.read_bytes() == GOOD
    assert len(server.requests) == 1


def test_hash_mismatch_is_refused_and_nothing_is_left(server, tmp_path):
    url = _url(server, "/wrong.bin")
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path, GOOD_SHA, **FAST)
    message = str(info.value)
    assert url in message and "sha256" in message and GOOD_SHA in message
    assert _leftovers(tmp_path) == []  # the bad bytes never reach the final name, nor linger
    assert len(server.requests) == 1  # a fresh full download that mismatches is not retried


def test_truncated_file_is_retried_then_refused(server, tmp_path):
    url = _url(server, "/truncated.bin")
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path, GOOD_SHA, retries=2, **FAST)
    assert "connection closed after" in str(info.value) and "3 attempts" in str(info.value)
    assert not (tmp_path / "truncated.bin").exists()
    assert len(server.requests) == 3
    # Every retry resumed from the bytes on disk rather than starting over.
    assert server.requests[1][1] == f"bytes={len(GOOD)}-"


def test_dropped_connection_resumes_with_range(server, tmp_path):
    slept: list[float] = []
    path = download(_url(server, "/drop.bin"), tmp_path, GOOD_SHA, sleep=slept.append,
                    **{**FAST, "backoff": 0.5})
    assert path.read_bytes() == GOOD
    assert [r for _, r in server.requests] == [None, f"bytes={len(GOOD) // 2}-"]
    assert slept == [0.5]  # backoff is injectable, so tests never really sleep
    assert _leftovers(tmp_path) == ["drop.bin"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    path = download(_url(server, "/drop-norange.bin"), tmp_path, GOOD_SHA, **FAST)
    assert path.read_bytes() == GOOD  # not the first half twice


def test_backoff_grows_exponentially(server, tmp_path):
    slept: list[float] = []
    url = _url(server, "/busy/ViT-B-32.pt")
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path, GOOD_SHA, retries=3, backoff=0.25, sleep=slept.append, progress=False)
    assert slept == [0.25, 0.5, 1.0]
    message = str(info.value)
    assert url in message and "HTTP 503" in message and "4 attempts" in message
    assert 'clipforge.load("/path/to/ViT-B-32.pt")' in message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")  # one sentence


def test_a_refused_connection_is_not_retried(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    slept: list[float] = []
    url = f"http://127.0.0.1:{port}/ViT-B-32.pt"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path, GOOD_SHA, retries=3, backoff=0.25, sleep=slept.append, progress=False)
    assert slept == []  # offline is not a hiccup: no waiting
    message = str(info.value)
    assert url in message and "refused" in message.lower() and "attempts" not in message


def test_404_fails_at_once_with_one_clear_sentence(server, tmp_path):
    url = _url(server, "/missing.pt")
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path, None, allow_unpinned=True, **FAST)
    message = str(info.value)
    assert "HTTP 404" in message and url in message and "clipforge.load(" in message
    assert len(server.requests) == 1
    assert _leftovers(tmp_path) == []


def test_partial_from_an_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / "good.bin.partial").write_bytes(GOOD[:1000])
    path = download(_url(server, "/good.bin"), tmp_path, GOOD_SHA, **FAST)
    assert path.read_bytes() == GOOD
    assert server.requests == [("/good.bin", "bytes=1000-")]


def test_stale_partial_with_bad_bytes_is_discarded_and_refetched(server, tmp_path):
    (tmp_path / "good.bin.partial").write_bytes(b"x" * 1000)
    path = download(_url(server, "/good.bin"), tmp_path, GOOD_SHA, **FAST)
    assert path.read_bytes() == GOOD
    assert [r for _, r in server.requests] == ["bytes=1000-", None]


def test_download_pretrained_uses_the_cache_without_network(tmp_path, monkeypatch):
    entry = get_pretrained("ViT-B-32")
    module = importlib.import_module("clipforge.weights.download")
    monkeypatch.setattr(module, "sha256_file", lambda path, chunk=0: entry.sha256)
    (tmp_path / entry.filename).write_bytes(b"pretend checkpoint")
    assert download_pretrained("ViT-B/32", root=tmp_path, progress=False) == tmp_path / "ViT-B-32.pt"
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    assert download("ViT-B-32", progress=False) == tmp_path / "ViT-B-32.pt"  # a name works as well
