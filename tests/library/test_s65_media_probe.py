"""Review 65: the originals and uploads of the library named their format by Pillow's own `Image.open`, whose global
bomb check warned DecompressionBombWarning on every request for a photo of 89-179 megapixels (under clipforge's
own cap) and refused one past twice a global another library of the process lowered. They open the header as the
loader does now (`image.loading.open_header`), which runs no such check.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings

import pytest
from PIL import Image

from clipforge.library.media import image_bytes, store_upload
from clipforge.library.paths import LibraryPaths
from clipforge.library.records import ImageRecord


@pytest.fixture()
def lowered_global(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # another library of the process lowered it


def _png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def test_an_originals_format_is_read_without_pillows_bomb_check(tmp_path, lowered_global) -> None:
    photo = tmp_path / "big.png"
    photo.write_bytes(_png(100))  # 10,000 pixels: past 2x the lowered global, far under clipforge's cap
    stat = photo.stat()
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    record = ImageRecord(1, str(photo), sha, stat.st_size, stat.st_mtime_ns, 100, 100, 0.0, "ok", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning fails the test
        assert image_bytes(record) == (photo.read_bytes(), "image/png")


def test_an_upload_is_stored_without_pillows_bomb_check(tmp_path, lowered_global) -> None:
    paths = LibraryPaths(tmp_path / "lib")
    os.makedirs(paths.root, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stored = store_upload(paths, _png(100), filename="big.png")
    assert str(stored).endswith(".png")
