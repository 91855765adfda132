"""Fixtures shared by the whole suite.

The reference implementation (OpenAI's `clip/model.py` and `clip/simple_tokenizer.py`, from the
PyPI package `clip-anytorch` installed with --no-deps) is imported by file path: its package
`__init__` imports torchvision, which has no CPU build here.
"""

from __future__ import annotations

import os

# Before anything imports grpc (pymilvus at collection): gRPC core's own log lines ("Got goaway ... too_many_pings"
# from a milvus-lite client of an earlier test) land in whatever stderr a test is capturing; the product sets the
# same when it first imports pymilvus (`library.milvus_store`).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")


import hashlib
import importlib.util
import io
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest


def _share_the_cores_between_workers() -> None:
    """Each pytest-xdist worker (and every process it starts) gets its share of the cores as torch's thread
    count, unless OMP_NUM_THREADS is already set. torch otherwise gives each of the two workers a thread per
    core, four OpenMP threads on two cores, and a thread that waits at the end of each parallel operation
    for a partner the other worker holds off the core spins: the parity tests took 70 s instead of 47 s and
    126 s of CPU instead of 83 s. Set before torch is imported (torch reads it once). The tests of
    multi-threaded paths (`split_batch`, thread tuning) set their thread counts themselves; `-n 0` keeps
    torch's default."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))


_share_the_cores_between_workers()


import torch  # noqa: E402  (after the thread count above is set)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every cache clipforge writes (fingerprints, class embeddings, features, downloads) goes to a folder
    of this run, for the tests and the commands they start: the suite leaves the user's
    ~/.cache/clipforge as it was and never reads what an earlier run left there. A test that needs
    its own cache still sets $CLIPFORGE_CACHE itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPFORGE_CACHE", str(tmp_path_factory.mktemp("clipforge-cache")))
        patch.delenv("CLIPFORGE_CACHE_DIR", raising=False)
        yield


def _reference_file(name: str) -> Path | None:
    for entry in sys.path:
        candidate = Path(entry) / "clip" / name
        if candidate.is_file() and (Path(entry) / "clip" / "simple_tokenizer.py").is_file():
            return candidate
    return None


def load_reference_module(name: str) -> ModuleType:
    """Import `clip/<name>.py` from clip-anytorch without running its package __init__."""
    path = _reference_file(f"{name}.py")
    if path is None:
        pytest.skip("reference clip-anytorch is not installed (pip install --no-deps clip-anytorch)")
    key = f"_clip_reference_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="session")
def reference_model_module() -> ModuleType:
    return load_reference_module("model")


@pytest.fixture(scope="session")
def reference_tokenizer_module() -> ModuleType:
    return load_reference_module("simple_tokenizer")


def shared_data_dir(name: str) -> Path:
    """Path to a folder of ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is absent (tests using ../shared/data skip without it)")
    return path


@pytest.fixture(scope="session")
def without_root_override() -> list[str]:
    """A command prefix that runs a process without root's permission override (root writes read-only
    folders), so read-only files stop it as they stop any user; skips where that is impossible."""
    import os
    import shutil

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: cannot run as a user that read-only permissions stop")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture()
def tiny_vit():
    from clipforge.models import create_model_from_config, get_config

    torch.manual_seed(0)
    return create_model_from_config(get_config("test-vit-tiny")).eval()


@pytest.fixture()
def tiny_rn():
    from clipforge.models import create_model_from_config, get_config

    torch.manual_seed(0)
    return create_model_from_config(get_config("test-rn-tiny")).eval()


@pytest.fixture()
def local_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Mapping[str, bytes]], list[str]]]:
    """A Hugging Face hub on 127.0.0.1 (`HF_ENDPOINT` points at it): ``served = local_hub(routes)``
    answers a GET of a path in `routes` with its bytes and the hub's announced sha256 (the
    ``X-Linked-Etag`` header), any other path with 404, and appends each path it served to `served`.
    `routes` is read at request time, so a test may fill it later. Stopped after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(routes: Mapping[str, bytes]) -> list[str]:
        served: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = routes.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                served.append(self.path)
                self.send_response(200)
                self.send_header("X-Linked-Etag", f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        return served

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def largest_jpeg_decode(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """`[pixels]`: the most pixels any JPEG decoded during the test had (0: none was decoded); a reduced DCT
    scale (`draft`) counts as its reduced size. For tests that bound what decoding a photo costs."""
    from PIL import JpegImagePlugin

    largest = [0]
    load = JpegImagePlugin.JpegImageFile.load

    def measured(self: JpegImagePlugin.JpegImageFile, *args: object, **kwargs: object) -> object:
        out = load(self, *args, **kwargs)
        largest[0] = max(largest[0], self.size[0] * self.size[1])
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", measured)
    return largest


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, bytes) of each segment after SOI; a scan's entropy-coded data stays with its SOS."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append((marker, data[i:i + 2]))
            break
        end = i + 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, data[i:end]))
        i = end
    return out


def _progressive_jpeg(side: int = 256, extra_scans: int = 0, app_payload: bytes = b"") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    segments = _jpeg_segments(data)
    scans = [s for m, s in segments if m == 0xDA]
    ac = min((s for s in scans if s[5 + 2 * s[4]] > 0), key=len)  # spectral start > 0: an AC scan
    out = bytearray(data[:2])
    if app_payload:
        out += b"\xff\xef" + struct.pack(">H", len(app_payload) + 2) + app_payload
    for marker, segment in segments:
        if marker == 0xD9:
            out += ac * extra_scans
        out += segment
    return bytes(out)


@pytest.fixture(scope="session")
def progressive_jpeg() -> Callable[..., bytes]:
    """`progressive_jpeg(side=256, extra_scans=0, app_payload=b"")`: a grey progressive JPEG (libjpeg's script:
    6 scans) whose smallest AC scan is repeated `extra_scans` more times before EOI (libjpeg decodes such a
    file with a warning; thousands of repeats are the scan bomb of `clipforge.image.costly.jpeg`), with an
    APP15 segment holding `app_payload` after SOI."""
    return _progressive_jpeg
