"""What a mirror, a proxy or a dead network can do to a registry download (issue 21.4, 20.3).

Every attack runs against a local 127.0.0.1 server: a hub that announces no hash and serves a
small model under a big model's name, a Content-Length that lies, redirects to ftp:// and
file://, a server that trickles, and hosts that refuse or cannot be resolved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from clipforge.models import create_model_from_config, get_config
from clipforge.weights import DownloadError, download, download_pretrained
from clipforge.weights import registry as registry_module

HUB_FILE = "/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_pytorch_model.bin"  # (.safetensors: 404)


def _state_bytes(arch: str) -> bytes:
    """A torch.save'd state dict with `arch`'s names and shapes, one stored element per tensor."""
    with torch.device("meta"):
        meta = create_model_from_config(get_config(arch))
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in meta.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vit_b32() -> bytes:
    return _state_bytes("ViT-B-32")


@pytest.fixture(scope="module")
def tiny() -> bytes:
    return _state_bytes("test-vit-tiny")


class _Hub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _headers(self, code: int, length: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        server = self.server
        server.requests.append(self.path)  # type: ignore[attr-defined]
        body: bytes = server.body  # type: ignore[attr-defined]
        if self.path == HUB_FILE or self.path == "/file.pt":
            self._headers(200, len(body))  # no X-Linked-Etag: the hub announces no hash
            self.wfile.write(body)
        elif self.path == "/short-claim.pt":  # says half, sends half: a truncated file that looks complete
            self._headers(200, len(body) // 2)
            self.wfile.write(body[: len(body) // 2])
        elif self.path == "/long-claim.pt":  # says more than it ever sends
            self._headers(200, len(body) + 500)
            self.wfile.write(body)
            self.close_connection = True
        elif self.path == "/to-ftp":
            self._headers(302, 0, {"Location": "ftp://127.0.0.1/ViT-B-32.pt"})
        elif self.path == "/to-file":
            self._headers(302, 0, {"Location": "file:///etc/passwd"})
        elif self.path == "/trickle.pt":
            self._headers(200, 10_000)
            try:
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                pass
        elif self.path == "/busy.pt":
            self._headers(503, 0)
        else:
            self._headers(404, 0)


@pytest.fixture()
def hub(monkeypatch, vit_b32):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    server.requests, server.body = [], vit_b32  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("CLIPFORGE_ALLOW_UNPINNED", raising=False)
    yield server
    server.shutdown()
    server.server_close()


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAST = {"progress": False, "backoff": 0.001, "timeout": 5.0}


def test_a_hub_file_without_a_pinned_hash_is_refused_before_any_request(hub, tmp_path):
    with pytest.raises(DownloadError) as info:
        download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", **FAST)
    message = str(info.value)
    assert "no full sha256 pinned" in message and "CLIPFORGE_ALLOW_UNPINNED=1" in message
    assert "\n" not in message and hub.requests == [] and list(tmp_path.iterdir()) == []


def test_a_mirror_cannot_pass_a_small_model_off_as_vit_b32(hub, tmp_path, monkeypatch, tiny):
    """The red team's swap: the hub announces no hash and serves a 7 M-parameter model. Even with the
    opt-in, its shapes are not ViT-B-32's: refused, nothing cached."""
    hub.body = tiny
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")
    with pytest.raises(DownloadError) as info:
        download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", **FAST)
    message = str(info.value)
    assert "does not hold ViT-B-32 weights" in message and "parameters where ViT-B-32 has 151,277,313" in message
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a partial


def test_with_the_opt_in_the_right_shapes_are_cached_and_recorded(hub, tmp_path, monkeypatch, vit_b32):
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")
    path = download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", **FAST)
    assert path.read_bytes() == vit_b32
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().strip() == hashlib.sha256(vit_b32).hexdigest()
    hub.requests.clear()
    assert download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", **FAST) == path
    assert hub.requests == []  # the record re-checks the cached copy without network
    monkeypatch.delenv("CLIPFORGE_ALLOW_UNPINNED")  # accepted once under the opt-in: later runs use it
    assert download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", **FAST) == path
    assert registry_module.is_cached("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k") and hub.requests == []
    monkeypatch.setenv("CLIPFORGE_ALLOW_UNPINNED", "1")
    path.write_bytes(_state_bytes("test-vit-tiny"))  # swapped in the cache by hand
    assert download_pretrained("ViT-B-32", tmp_path, tag="laion2b_s34b_b79k", **FAST).read_bytes() == vit_b32
    assert hub.requests[-1] == HUB_FILE  # refused and fetched again


def test_openai_name_offline_never_falls_back_to_an_unpinned_mirror(hub, tmp_path, monkeypatch):
    """ViT-B/32: the pinned OpenAI URL is unreachable (refused); the hub copy has no pin, so it is not
    tried, and nothing is cached under the name. One line, no retries."""
    entry = registry_module.PRETRAINED[("ViT-B/32", "openai")]
    dead = f"http://127.0.0.1:{_closed_port()}/{entry.sha256}/ViT-B-32.pt"
    monkeypatch.setitem(registry_module.PRETRAINED, ("ViT-B/32", "openai"), dataclasses.replace(entry, url=dead))
    slept: list[float] = []
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_pretrained("ViT-B/32", tmp_path, sleep=slept.append, **FAST)
    assert time.monotonic() - started < 3 and slept == []
    message = str(info.value)
    assert "refused" in message.lower() and "attempts" not in message
    assert f"fetch {dead} another way and save it as {tmp_path / 'ViT-B-32.pt'}" in message
    assert hub.requests == [] and list(tmp_path.iterdir()) == []
    assert not registry_module.is_cached("ViT-B/32", tmp_path)


def test_name_resolution_failure_is_not_retried(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    slept: list[float] = []
    with pytest.raises(DownloadError) as info:
        download("http://weights.example.invalid/x/ViT-B-32.pt", tmp_path, "a" * 64, sleep=slept.append,
                 progress=False)
    assert slept == [] and "cannot resolve the host name" in str(info.value)
    assert "attempts" not in str(info.value)


def test_server_errors_are_still_retried_with_backoff(hub, tmp_path):
    slept: list[float] = []
    with pytest.raises(DownloadError) as info:
        download(_url(hub, "/busy.pt"), tmp_path, "a" * 64, retries=2, backoff=0.25, sleep=slept.append,
                 progress=False)
    assert slept == [0.25, 0.5] and "HTTP 503" in str(info.value) and "3 attempts" in str(info.value)


@pytest.mark.parametrize("path", ["/short-claim.pt", "/long-claim.pt"])
def test_a_content_length_lie_never_leaves_a_final_file(hub, tmp_path, path):
    with pytest.raises(DownloadError):
        download(_url(hub, path), tmp_path, None, retries=1, allow_unpinned=True,
                 verify=lambda p: __import__("clipforge.weights.loading", fromlist=["x"]).check_architecture(
                     p, "ViT-B-32"), **FAST)
    assert not (tmp_path / path.lstrip("/")).exists()


@pytest.mark.parametrize("path", ["/to-ftp", "/to-file"])
def test_redirects_to_another_scheme_are_refused(hub, tmp_path, path):
    with pytest.raises(DownloadError) as info:
        download(_url(hub, path), tmp_path, "a" * 64, filename="x.pt", **FAST)
    assert "redirect" in str(info.value).lower() and hub.requests == [path]
    assert list(tmp_path.iterdir()) == []


def test_only_http_urls_are_fetched(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"file://{tmp_path}")
    with pytest.raises(DownloadError, match="only http:// and https://"):
        download(f"file://{tmp_path}/x.pt", tmp_path / "cache", "a" * 64, progress=False)


def test_a_trickling_server_meets_the_deadline(hub, tmp_path):
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(_url(hub, "/trickle.pt"), tmp_path, "a" * 64, deadline=0.5, timeout=1.0, progress=False)
    assert "deadline" in str(info.value) and time.monotonic() - started < 3
    assert not Path(tmp_path / "trickle.pt").exists()


def test_a_trickle_below_the_minimum_rate_is_cut(hub, tmp_path):
    with pytest.raises(DownloadError) as info:
        download(_url(hub, "/trickle.pt"), tmp_path, "a" * 64, retries=0, rate_window=0.3, min_rate=1000,
                 timeout=1.0, progress=False)
    assert "bytes/s" in str(info.value) and not (tmp_path / "trickle.pt").exists()


def test_a_stray_unpinned_file_in_the_cache_is_not_counted_or_used(hub, tmp_path, tiny):
    """What a mirror cached before hashes were pinned: not 'cached' (so not the default model), not used."""
    entry = registry_module.get_pretrained("ViT-B/32")
    stray = tmp_path / entry.sources()[1].filename  # the hub copy's name, no record beside it
    stray.write_bytes(tiny)
    assert not registry_module.is_cached("ViT-B/32", tmp_path)
    assert registry_module.cached_path("ViT-B/32", tmp_path) == tmp_path / "ViT-B-32.pt"
