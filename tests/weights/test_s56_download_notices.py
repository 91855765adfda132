"""The downloader's notices survive ``-W error``, and a hub mirror with a path is read as the hub (session 56).

Before:
- `spec_for_url` compared only the host of ``HF_ENDPOINT``: with a mirror at ``http://127.0.0.1:8080/mirror`` the
  repository of ``.../mirror/timm/ViT-B-16-SigLIP/resolve/main/...`` was read as ``mirror/timm``, so a user who
  passed that URL as the model was told to download it by hand instead of which registry spec fetches it.
- The downloader's notices were `Notice` warnings, which ``python -W error`` (or ``simplefilter("error")``) turns
  into exceptions: a download that had worked raised ``Notice: ... downloaded ... anew`` instead of returning
  its verified file, and a download waiting for another one's lock failed with "... is under way; waiting".
  They are still `Notice` warnings (the CLI prints them as ``notice:`` lines, ``--quiet`` hides them, a program may
  filter them); where the filters make them errors, they are printed as that one line on stderr instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.weights import download
from clipforge.weights.registry import spec_for_url

GOOD = os.urandom(20_000)
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
BAD = b"corrupted by hand"  # 17 bytes
BAD_SHA = hashlib.sha256(BAD).hexdigest()
FAST = {"backoff": 0.001, "progress": False, "timeout": 5.0}
_MIRROR = "http://127.0.0.1:8080/mirror"
_SIGLIP = "timm/ViT-B-16-SigLIP/resolve/main/open_clip_model.safetensors"


# ---- HF_ENDPOINT with a path ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "spec"), [
    (f"{_MIRROR}/{_SIGLIP}", "ViT-B-16-SigLIP:webli"),
    (f"{_MIRROR}/OFA-Sys/chinese-clip-rn50/resolve/main/clip_cn_rn50.pt", "cn-RN50"),
    (f"{_MIRROR}/", None),  # the endpoint itself names no repository
    (f"http://127.0.0.1:8080/{_SIGLIP}", None),  # the mirror's host, outside its path: not the hub
    (f"http://127.0.0.1:8080/other/{_SIGLIP}", None),
    (f"https://huggingface.co/{_SIGLIP}", "ViT-B-16-SigLIP:webli"),  # the hub itself, whatever HF_ENDPOINT says
])
def test_urls_under_an_endpoint_with_a_path_are_hub_files(monkeypatch, url: str, spec: str | None) -> None:
    monkeypatch.setenv("HF_ENDPOINT", _MIRROR + "/")
    assert spec_for_url(url) == spec


def test_the_command_line_names_the_spec_of_a_mirrors_url(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("HF_ENDPOINT", _MIRROR)
    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (220, 20, 20)).save(image)
    url = f"{_MIRROR}/{_SIGLIP}"
    assert main(["classify", str(image), "--labels", "a,b", "--model", url, "-q"]) == 2
    assert capsys.readouterr().err == (
        f"error: model {url!r} is a URL: clipforge does not load models from URLs directly; these are the registry's "
        "ViT-B-16-SigLIP:webli weights: pass 'ViT-B-16-SigLIP:webli' instead, which downloads them and checks their "
        "sha256\n")


# ---- notices under warnings-as-errors --------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = GOOD if self.path.endswith("good.bin") else None
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture()
def url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/good.bin"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _replaced(path: Path, url: str) -> str:
    return (f"notice: {path} was refused (its sha256 is {BAD_SHA[:16]}..., not the pinned {GOOD_SHA[:16]}..., in 17 "
            f"bytes: a copy saved there another way, perhaps cut short, or changed on disk) and removed; downloaded "
            f"{url} anew\n")


def test_a_replaced_copy_is_said_on_stderr_when_warnings_are_errors(url: str, tmp_path: Path, capsys) -> None:
    cached = tmp_path / "good.bin"
    cached.write_bytes(BAD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert download(url, tmp_path, GOOD_SHA, **FAST) == cached
    assert cached.read_bytes() == GOOD
    assert capsys.readouterr().err == _replaced(cached, url)


def test_python_w_error_downloads_and_prints_the_notice(url: str, tmp_path: Path) -> None:
    cached = tmp_path / "good.bin"
    cached.write_bytes(BAD)
    code = ("import sys; from clipforge.weights import download; "
            f"print(download({url!r}, {str(tmp_path)!r}, {GOOD_SHA!r}, backoff=0.001, progress=False, timeout=5.0))")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{cached}\n", _replaced(cached, url))
    assert cached.read_bytes() == GOOD


def test_a_download_waiting_for_another_survives_warnings_as_errors(url: str, tmp_path: Path, capsys) -> None:
    """Another downloader holds ``good.bin.lock``: this one says it waits, then fetches once the lock is let go."""
    lock = tmp_path / "good.bin.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    result: dict[str, object] = {}

    def fetch() -> None:
        try:
            result["got"] = download(url, tmp_path, GOOD_SHA, **FAST)
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            result["got"] = exc

    err = ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        thread = threading.Thread(target=fetch)
        thread.start()
        for _ in range(500):  # until it says it waits (or has failed)
            err += capsys.readouterr().err
            if err or not thread.is_alive():
                break
            time.sleep(0.01)
        lock.unlink()  # as a holder lets go: the waiter finds the lock file gone and locks anew
        os.close(fd)
        thread.join(20)
    assert result == {"got": tmp_path / "good.bin"}
    assert err + capsys.readouterr().err == (
        f"notice: another download of good.bin into {tmp_path} is under way; waiting for it to finish\n")
    assert (tmp_path / "good.bin").read_bytes() == GOOD
