"""Fixtures for the library tests: tiny deterministic model, small synthetic image sets."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_encoder():
    from clipforge.library import resolve_encoder

    return resolve_encoder("test-vit-tiny")


def _image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    # Smooth random colour fields: distinct images with distinct embeddings, compressible files.
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def write_images(folder: Path, count: int, seed: int = 0, prefix: str = "img",
                 formats: tuple[str, ...] = ("png", "jpg")) -> list[Path]:
    """`count` distinct small images cycling through `formats`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        ext = formats[i % len(formats)]
        path = folder / f"{prefix}{i:03d}.{ext}"
        image = _image(rng, (48 + i % 7, 40 + i % 5))
        if ext == "gif":
            frames = [image.convert("P"), _image(rng, image.size).convert("P")]
            frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
        else:
            image.save(path, quality=90) if ext == "jpg" else image.save(path)
        paths.append(path)
    return paths


def png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A PNG whose header declares width x height pixels (900 MP), in about 60 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def write_bad_files(folder: Path, source: Path) -> dict[str, str]:
    """Bad files of each kind; returns name -> a word their recorded reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image\n")
    png_bomb(folder / "bomb.png")
    return {"truncated.jpg": "truncated", "empty.png": "empty", "notes.jpg": "not an image",
            "bomb.png": "too many pixels"}


@pytest.fixture()
def images_factory() -> Callable[..., list[Path]]:
    return write_images


@pytest.fixture()
def bad_files_factory() -> Callable[[Path, Path], dict[str, str]]:
    return write_bad_files


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """HOST:PORT of a real Milvus server for the opt-in Milvus tests: $CLIPFORGE_TEST_MILVUS_ADDRESS, or one
    started from the optional `milvus` wheel (the milvus-server extra; ~8 s); skipped when neither."""
    address = os.environ.get("CLIPFORGE_TEST_MILVUS_ADDRESS")
    if address:
        yield address
        return
    from clipforge.library.milvus_server import start_local_server

    try:
        server = start_local_server(tmp_path_factory.mktemp("milvus-server"))
    except ImportError:
        pytest.skip("no Milvus server: install the milvus-server extra or set CLIPFORGE_TEST_MILVUS_ADDRESS")
    yield server.address
    server.stop(timeout=0)


@pytest.fixture()
def tagged_vector_store(tiny_encoder) -> Callable[..., object]:
    """`make(path, photos, labels)`: a `Store` at `path` holding `photos` photos (random unit vectors under the tiny
    encoder's fingerprint, no image decoded) tagged with `labels`, top 2; the caller closes it."""
    import hashlib

    from clipforge.library.store import Store
    from clipforge.library.tagging import tag_library

    def make(path: Path, photos: int, labels: list[str]) -> Store:
        store = Store(path)
        model, dim = tiny_encoder.fingerprint, int(tiny_encoder.embed_dim)
        rng = np.random.default_rng(0)
        with store.transaction() as tx:
            tx.ensure_model(model, "test-vit-tiny", dim)
            for number in range(photos):
                sha = hashlib.sha256(str(number).encode()).hexdigest()
                tx.upsert_image(f"/photos/p{number:04d}.jpg", sha, 1, 1, 8, 8, "ok", None)
                vector = rng.standard_normal(dim).astype(np.float32)
                tx.insert_embedding(sha, model, vector / np.linalg.norm(vector))
        tag_library(store, tiny_encoder, labels, "simple", top_k=2, progress=False)
        return store

    return make


@pytest.fixture()
def fail_line(capfd) -> Callable[..., str]:
    """`fail_line(*argv)`: run a CLI command that must fail; its status is 2 and stderr is exactly one line, returned."""
    from clipforge.cli.main import main

    def run(*argv: str) -> str:
        capfd.readouterr()
        assert main(list(argv)) == 2
        err = capfd.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        return err

    return run


def tiny_checkpoint_with(path: Path, source: Path | None = None, **changes: float) -> Path:
    """The safetensors file `source` (default clipforge-tiny's weights) written to `path` (its metadata kept) with
    each named tensor filled with one value (NaN, inf, a logit scale): the diverged and crafted checkpoints of the
    NaN-model tests. `source` may be `path` itself (edited in place)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    import clipforge

    tiny = Path(clipforge.__file__).resolve().parent / "pretrained" / "clipforge-tiny" / "model.safetensors"
    source = tiny if source is None else source
    state = load_file(str(source))
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    for name, value in changes.items():
        state[name] = torch.full_like(state[name], value)
    save_file(state, str(path), metadata=metadata)
    return path
