"""Fixtures for the server tests: a tiny random CLIP, small libraries of distinct images, app clients."""

from __future__ import annotations

import io
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "white": (245, 245, 245), "black": (10, 10, 10), "purple": (140, 30, 160), "orange": (250, 140, 20)}


@pytest.fixture(scope="session")
def tiny_encoder():
    """test-vit-tiny with seeded random weights (the same weights `--model test-vit-tiny` gives)."""
    import torch

    from clipforge.image import build_preprocess
    from clipforge.library import Encoder
    from clipforge.models import create_model_from_config, get_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model_from_config(get_config("test-vit-tiny")).eval()
    return Encoder(model, build_preprocess(32), name="test-vit-tiny")


def picture(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A mostly-`colour` picture with a little texture, so every file has its own bytes and vector."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.int16)[None, None, :]
    noise = rng.integers(-25, 26, (4, 4, 3))
    small = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_photos(folder: Path) -> list[Path]:
    """One picture per colour of COLOURS, alternating PNG and JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, colour) in enumerate(COLOURS.items()):
        path = folder / f"{name}.{'png' if i % 2 == 0 else 'jpg'}"
        picture(colour, i).save(path, quality=92) if path.suffix == ".jpg" else picture(colour, i).save(path)
        paths.append(path)
    return paths


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid-looking PNG whose header claims width x height pixels, in under 100 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture()
def library(tmp_path, tiny_encoder, photos):
    """A fresh library over `photos` (function scope: tests may add to it)."""
    from clipforge.library import Library

    lib = Library(tmp_path / "lib", tiny_encoder)
    report = lib.add(photos[0].parent, workers=0, progress=False)
    assert report.added == len(photos)
    yield lib
    lib.close()


@pytest.fixture()
def make_client(library) -> Callable[..., object]:
    """`make_client(token=None, limits=None, ui=False)` -> TestClient over `library`."""
    from fastapi.testclient import TestClient

    from clipforge.server import create_app

    clients = []

    def make(token: str | None = None, limits=None, ui: bool = False, **kwargs):
        client = TestClient(create_app(library, token=token, limits=limits, ui=ui), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture()
def ui_client(library, tmp_path, monkeypatch):
    """A TestClient over the app with the web UI mounted, gradio's files under this test's folder; a server
    error is an answer (500), not an exception, as a client would see it."""
    from fastapi.testclient import TestClient

    from clipforge.server import create_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    with TestClient(create_app(library, ui=True), raise_server_exceptions=False) as client:
        yield client


class ImageKit:
    """Image helpers for tests (a fixture, since test modules cannot import conftest here)."""

    colours = COLOURS
    picture = staticmethod(picture)
    encode = staticmethod(encode)
    png_bomb = staticmethod(png_bomb)
    write_photos = staticmethod(write_photos)


@pytest.fixture(scope="session")
def kit() -> type[ImageKit]:
    return ImageKit


# Every file opened while `_opened_active[0]` is set, recorded by a process-wide audit hook (hooks
# cannot be removed, so one is installed once and switched on only inside `opened_paths`).
_opened: list[str] = []
_opened_active = [False]
_hook_installed = False


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened_active[0] and args and isinstance(args[0], (str, bytes)):
        _opened.append(args[0] if isinstance(args[0], str) else args[0].decode(errors="replace"))


@pytest.fixture()
def opened_paths():
    """The list of paths opened (by any thread) during the test."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    _opened.clear()
    _opened_active[0] = True
    yield _opened
    _opened_active[0] = False


@pytest.fixture()
def live_server():
    """`live_server(app, limits, log_level="warning")`: a context manager giving the base URL of `app` served by
    the same uvicorn setup as `clipforge serve`, on a loopback socket, in a thread."""
    import contextlib
    import threading
    import time

    from clipforge.server.runner import bind_socket, build_server

    @contextlib.contextmanager
    def serve(app, limits, log_level: str = "warning"):
        sock = bind_socket("127.0.0.1", 0)
        server = build_server(app, limits, log_level=log_level)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            sock.close()

    return serve


class HeldCalls:
    """A stand-in for a service call: each call waits for `release`, then runs the real one; `peak` is how
    many ran at once. `wait_placed(gate, n)` returns once n calls are running or waiting in `gate` (an
    order of events, not a time), so a test can check that a flood was admitted in turn."""

    def __init__(self, real: Callable) -> None:
        self.real = real
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.inside = self.peak = self.entered = 0

    def __call__(self, *args, **kwargs):
        with self._lock:
            self.inside += 1
            self.entered += 1
            self.peak = max(self.peak, self.inside)
        self.release.wait(60)
        try:
            return self.real(*args, **kwargs)
        finally:
            with self._lock:
                self.inside -= 1

    def wait_placed(self, gate, n: int) -> None:
        for _ in range(6000):
            with self._lock:
                if self.entered + gate.waiting() >= n:
                    return
            threading.Event().wait(0.01)


@pytest.fixture()
def held_calls() -> type[HeldCalls]:
    """`HeldCalls`, for attack tests that hold a service call while a flood arrives."""
    return HeldCalls


@pytest.fixture()
def ui_classify(library, tmp_path, photos):
    """`classify(labels) -> (probabilities, status)`: the web UI's classify handler on an uploaded photo, no browser."""
    pytest.importorskip("gradio")
    import asyncio

    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    upload = tmp_path / "f00d" / "p.png"
    upload.parent.mkdir()
    upload.write_bytes(photos[0].read_bytes())
    handlers = _Handlers(LibraryService(library), str(tmp_path))
    image = {"path": str(upload), "orig_name": "p.png", "meta": {"_type": "gradio.FileData"}}
    return lambda labels: asyncio.run(handlers.classify(image, labels, ""))


IMAGE_ROUTES = (("/api/search", "image", {"top_k": 1}, "query image"),
                ("/api/classify", "image", {"labels": "cat, dog"}, "image"),
                ("/api/images", "file", {}, "upload"))


@pytest.fixture(scope="session")
def refused_by_every_image_route():
    """`check(client, data, why)`: every REST route that takes an image answers 422 "<field> could not be decoded:
    <why>..." for `data` (the client's token, if any, is "tok")."""
    def check(client, data: bytes, why: str) -> None:
        for route, field, extra, what in IMAGE_ROUTES:
            answer = client.post(route, files={field: ("bomb.img", data, "application/octet-stream")}, data=extra,
                                 headers={"X-Token": "tok"})
            assert answer.status_code == 422, (route, answer.text)
            assert answer.json()["detail"].startswith(f"{what} could not be decoded: {why}"), answer.json()["detail"]
    return check
