"""TIFF directories and EXIF crafted to cost gigabytes, TIFF strips and RLE BMPs crafted to cost seconds, are
refused by every image route before Pillow parses a byte (`clipforge.image.costly`: `tiff`, `exif`, `bmp`).

Measured against `clipforge serve` before the fix: a 10 MB TIFF (one pixel, 200 BYTE tags sharing one 10 MB
block) sent to anonymous /api/search took the server from 0.45 to 4.37 GB and 7.8 s of CPU (Pillow copies
each entry's data on its own); a 5 MB PNG whose eXIf holds 100 such entries +0.5 GB; a 10 MB TIFF of
2,500,000 one-row strips 19.7 s and 1.5 GB; a 1,084-byte 50,000,000x1 RLE8 BMP 6.2 s and 650 MB (Pillow's
RLE decoder is Python).
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin


def _entry(tag: int, typ: int, count: int, value: int) -> bytes:
    return struct.pack("<HHII", tag, typ, count, value)


def _tiff(shared_tags: int = 0, block: int = 0, strips: int = 1) -> bytes:
    """A one-pixel-wide grey TIFF of `strips` one-row strips, plus `shared_tags` entries sharing one block."""
    count = 9 + shared_tags
    data_at = 8 + 2 + 12 * count + 4
    arrays_at = data_at + block
    pixels_at = arrays_at + 8 * strips
    tags = sorted([_entry(40000 + i, 1, block, data_at) for i in range(shared_tags)] + [
        _entry(256, 4, 1, 1), _entry(257, 4, 1, strips), _entry(258, 3, 1, 8), _entry(259, 3, 1, 1),
        _entry(262, 3, 1, 1), _entry(277, 3, 1, 1), _entry(278, 4, 1, 1),
        _entry(273, 4, strips, arrays_at) if strips > 1 else _entry(273, 4, 1, pixels_at),
        _entry(279, 4, strips, arrays_at + 4 * strips) if strips > 1 else _entry(279, 4, 1, 1)])
    arrays = b"".join(struct.pack("<I", pixels_at + i) for i in range(strips)) + struct.pack("<I", 1) * strips \
        if strips > 1 else b""
    return (b"II*\0" + struct.pack("<IH", 8, count) + b"".join(tags) + b"\0" * 4 + b"\0" * block + arrays
            + b"\x80" * strips)


def _exif(shared_tags: int, block: int) -> bytes:
    data_at = 8 + 2 + 12 * (1 + shared_tags) + 4
    tags = [_entry(0x0112, 3, 1, 6)] + [_entry(40000 + i, 1, block, data_at) for i in range(shared_tags)]
    return b"Exif\0\0II*\0" + struct.pack("<IH", 8, len(tags)) + b"".join(tags) + b"\0" * 4 + b"\0" * block


def _saved(fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (20, 200, 20)).save(buffer, fmt, **params)
    return buffer.getvalue()


def _rle8_bmp(width: int, height: int, rle: bytes) -> bytes:
    palette = b"".join(struct.pack("<BBBB", i, i, i, 0) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rle), 2835, 2835, 256, 0)
    offset = 14 + 40 + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle


def _png_raw_profile(block: bytes) -> bytes:
    """A PNG whose zTXt ``Raw profile type exif`` holds `block` as hex: 1.7 KB for 30 MB of copies."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    text = b"\nexif\n" + str(len(block)).encode() + b"\n" + block.hex().encode()
    plain = _saved("PNG")
    at = plain.index(b"IDAT") - 4
    return plain[:at] + chunk(b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(text)) + plain[at:]


CRAFTED = {
    "tiff-shared-tags": lambda: (_tiff(shared_tags=40, block=200_000), "TIFF whose directory entries point at more"),
    "tiff-strips": lambda: (_tiff(strips=70_000), "TIFF with more than 65,536 strips"),
    "png-exif": lambda: (_saved("PNG", exif=_exif(40, 40_000)), "PNG EXIF whose directory entries point"),
    "png-raw-profile": lambda: (_png_raw_profile(_exif(300, 100_000)), "PNG EXIF whose directory entries point"),
    "jpeg-exif": lambda: (_saved("JPEG", exif=_exif(400, 60_000)[:65_000]), "JPEG EXIF whose directory entries"),
    "webp-exif": lambda: (_saved("WEBP", exif=_exif(40, 40_000)), "WebP EXIF whose directory entries"),
    "bmp-rle8": lambda: (_rle8_bmp(50_000_000, 1, b"\x01\x07\x00\x00\x00\x01"), "RLE8 BMP of 50000000x1 pixels"),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_a_crafted_file_is_refused_before_pillow_parses_it_on_every_image_route(kind, make_client, library,
                                                                                refused_by_every_image_route,
                                                                                monkeypatch):
    bomb, why = CRAFTED[kind]()
    assert len(bomb) < 1_500_000
    client = make_client(token="tok")
    before = library.stats()["images"]
    parsed: list[str] = []
    for plugin in (TiffImagePlugin.TiffImageFile, PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile,
                   WebPImagePlugin.WebPImageFile, BmpImagePlugin.BmpImageFile):
        monkeypatch.setattr(plugin, "_open", lambda self, _open=plugin._open: parsed.append("open") or _open(self))
    load = TiffImagePlugin.ImageFileDirectory_v2.load
    monkeypatch.setattr(TiffImagePlugin.ImageFileDirectory_v2, "load",
                        lambda self, fp: parsed.append("directory") or load(self, fp))
    refused_by_every_image_route(client, bomb, why)
    assert not parsed, parsed
    assert library.stats()["images"] == before


def test_ordinary_tiff_bmp_and_exif_photos_are_still_accepted(make_client):
    """A Pillow TIFF (strips), a plain BMP, and a JPEG whose EXIF says rotate, with its EXIF and GPS
    directories: searched as before."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0x9003] = "2024:01:01 00:00:00"
    exif.get_ifd(0x8825)[0x0001] = "N"
    client = make_client()
    for name, data in (("photo.tif", _saved("TIFF")), ("photo.bmp", _saved("BMP")),
                       ("photo.jpg", _saved("JPEG", exif=exif)), ("photo.webp", _saved("WEBP", exif=exif))):
        answer = client.post("/api/search", files={"image": (name, data, "application/octet-stream")},
                             data={"top_k": 1})
        assert answer.status_code == 200, (name, answer.text)
