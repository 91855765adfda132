"""TIFF directories, EXIF, TIFF strips and RLE BMPs crafted to cost gigabytes or seconds are refused from their
structure, wherever images are read (`clipforge.image.costly`: `tiff`, `exif`, `bmp`, `webp`), and 16-bit or
float greyscale is scaled to 8 bits strip by strip (`clipforge.image.modes.to_eight_bit`).

Measured before the fix: a 10 MB TIFF of one pixel and 100 BYTE tags sharing one 10 MB block took 1.2 GB to
open and 2.2 GB to load (Pillow copies each entry's data on its own); a 5 MB PNG whose eXIf holds 100 such
entries, +0.5 GB to load; a 4 MB TIFF of 1,000,000 one-row strips 2 s and 0.5 GB to open, 5.7 s to load; a
1,084-byte 50,000,000x1 RLE8 BMP 5-6 s to decode (Pillow's RLE decoder is Python); a 7000x7000 16-bit PNG
converted to 8 bits took 1.2 GB more than its pixels (whole-image float64 copies).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin

from clipforge.image import ImageLoadError, load_image
from clipforge.image.costly import exif, refusal, source_refusal, tiff
from clipforge.image.costly.bmp import MAX_RLE_WORK
from clipforge.server.limits import ServerLimits
from clipforge.server.uploads import sniff_image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _entry(tag: int, typ: int, count: int, value: int) -> bytes:
    return struct.pack("<HHII", tag, typ, count, value)


def _directory(entries: list[bytes]) -> bytes:
    return struct.pack("<H", len(entries)) + b"".join(sorted(entries)) + b"\0\0\0\0"


def _tiff(shared_tags: int = 0, block: int = 0, strips: int = 1) -> bytes:
    """A little-endian 8-bit grey TIFF, one pixel wide and `strips` rows (one strip each), whose first IFD also
    holds `shared_tags` BYTE entries all pointing at one `block`-byte block."""
    count = 9 + shared_tags
    data_at = 8 + 2 + 12 * count + 4
    offsets_at = data_at + block
    counts_at = offsets_at + 4 * strips
    pixels_at = counts_at + 4 * strips
    tags = [_entry(40000 + i, 1, block, data_at) for i in range(shared_tags)]
    tags += [_entry(256, 4, 1, 1), _entry(257, 4, 1, strips), _entry(258, 3, 1, 8), _entry(259, 3, 1, 1),
             _entry(262, 3, 1, 1), _entry(277, 3, 1, 1), _entry(278, 4, 1, 1),
             _entry(273, 4, strips, offsets_at) if strips > 1 else _entry(273, 4, 1, pixels_at),
             _entry(279, 4, strips, counts_at) if strips > 1 else _entry(279, 4, 1, 1)]
    arrays = b"".join(struct.pack("<I", pixels_at + i) for i in range(strips)) + struct.pack("<I", 1) * strips \
        if strips > 1 else b""
    return b"II*\0" + struct.pack("<I", 8) + _directory(tags) + b"\0" * block + arrays + bytes(range(strips % 256)) \
        + b"\x80" * strips


def _exif_block(shared_tags: int, block: int, orientation: int = 6) -> bytes:
    """EXIF (``Exif\\0\\0``, a TIFF header and IFD0) with an orientation and `shared_tags` entries all pointing
    at one `block`-byte block."""
    count = 1 + shared_tags
    data_at = 8 + 2 + 12 * count + 4
    tags = [_entry(0x0112, 3, 1, orientation)] + [_entry(40000 + i, 1, block, data_at) for i in range(shared_tags)]
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + _directory(tags) + b"\0" * block


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(extra: bytes = b"") -> bytes:
    """A 2x2 grey PNG with `extra` chunks before its image data."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + extra + _chunk(b"IDAT", zlib.compress(b"\0\1\2\0\3\4")) + _chunk(b"IEND", b"")


def _raw_profile(block: bytes) -> bytes:
    """ImageMagick's hex text of an EXIF block, as Pillow's `getexif` reads it (after three lines)."""
    hexed = block.hex()
    return b"\nexif\n" + str(len(block)).encode() + b"\n" + \
        "\n".join(hexed[i:i + 72] for i in range(0, len(hexed), 72)).encode()


def _saved(fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 20, 20)).save(buffer, fmt, **params)
    return buffer.getvalue()


def _mpf_jpeg(shared_tags: int, block: int) -> bytes:
    """A JPEG with an APP2 MPF index (a TIFF directory) of `shared_tags` entries sharing one block."""
    count = 1 + shared_tags
    data_at = 8 + 2 + 12 * count + 4
    tags = [_entry(0xB001, 4, 1, 1)] + [_entry(40000 + i, 1, block, data_at) for i in range(shared_tags)]
    payload = b"MPF\0II*\0" + struct.pack("<I", 8) + _directory(tags) + b"\0" * block
    plain = _saved("JPEG")
    return plain[:2] + b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload + plain[2:]


def _bmp_rle(width: int, height: int, rle: bytes, bits: int = 8) -> bytes:
    colours = 16 if bits == 4 else 256
    palette = b"".join(struct.pack("<BBBB", i, i, i, 0) for i in range(colours))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 1 if bits == 8 else 2, len(rle), 2835, 2835,
                       colours, 0)
    offset = 14 + 40 + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle


# name -> (file, start of the refusal, the Pillow plugin that would open it)
CRAFTED = {
    "tiff-shared-tags": (_tiff(shared_tags=40, block=200_000), "TIFF whose directory entries point at more",
                         TiffImagePlugin.TiffImageFile),  # 8 MB of copies from a 200 KB file
    "tiff-strips": (_tiff(strips=tiff.MAX_STRIPS + 1), "TIFF with more than 65,536 strips",
                    TiffImagePlugin.TiffImageFile),
    "tiff-entries": (_tiff(shared_tags=tiff.MAX_IFD_ENTRIES), "TIFF with more than 4,096 entries",
                     TiffImagePlugin.TiffImageFile),
    "png-exif": (_png(_chunk(b"eXIf", _exif_block(40, 40_000)[6:])), "PNG EXIF whose directory entries point",
                 PngImagePlugin.PngImageFile),
    "png-text-exif": (_png(_chunk(b"tEXt", b"exif\0" + _exif_block(40, 40_000))),
                      "PNG EXIF whose directory entries point", PngImagePlugin.PngImageFile),
    "png-raw-profile": (_png(_chunk(b"zTXt", b"Raw profile type exif\0\0" +
                                    zlib.compress(_raw_profile(_exif_block(300, 100_000))))),
                        "PNG EXIF whose directory entries point", PngImagePlugin.PngImageFile),
    "jpeg-exif": (_saved("JPEG", exif=_exif_block(400, 60_000)[:65_000]), "JPEG EXIF whose directory entries",
                  JpegImagePlugin.JpegImageFile),
    "jpeg-mpf": (_mpf_jpeg(400, 60_000), "JPEG MPF index whose directory entries", JpegImagePlugin.JpegImageFile),
    "webp-exif": (_saved("WEBP", exif=_exif_block(40, 40_000)), "WebP EXIF whose directory entries",
                  WebPImagePlugin.WebPImageFile),
    "bmp-rle8-row": (_bmp_rle(50_000_000, 1, b"\x01\x07\x00\x00\x00\x01"), "RLE8 BMP of 50000000x1 pixels",
                     BmpImagePlugin.BmpImageFile),  # 1 KB: 6.2 s and 650 MB before the fix
    "bmp-rle4": (_bmp_rle(3000, 3000, b"\xff\x12" * 1000 + b"\x00\x01", bits=4), "RLE4 BMP of 3000x3000",
                 BmpImagePlugin.BmpImageFile),
}


@pytest.fixture()
def pillow_parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What Pillow parsed during the test: a plugin's header (`_open`) or any TIFF directory (`load`)."""
    parsed: list[str] = []
    for plugin in {entry[2] for entry in CRAFTED.values()}:
        monkeypatch.setattr(plugin, "_open", lambda self, _open=plugin._open: parsed.append("open") or _open(self))
    load = TiffImagePlugin.ImageFileDirectory_v2.load
    monkeypatch.setattr(TiffImagePlugin.ImageFileDirectory_v2, "load",
                        lambda self, fp: parsed.append("directory") or load(self, fp))
    return parsed


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_crafted_file_is_refused_before_pillow_parses_it(name, tmp_path, pillow_parsed):
    crafted, why, _ = CRAFTED[name]
    assert len(crafted) < 2_000_000
    path = tmp_path / f"evil-{name}"
    path.write_bytes(crafted)
    assert refusal(crafted).startswith(why), refusal(crafted)
    for source in (crafted, str(path), io.BytesIO(crafted)):
        with pytest.raises(ImageLoadError, match="cannot load image .*: " + why.replace("(", r"\(")):
            load_image(source, draft_size=224)
    with pytest.raises(ImageLoadError) as info:  # the server's header check, before Image.open
        sniff_image(crafted, ServerLimits(), "upload")
    assert info.value.reason.startswith(why)
    assert not pillow_parsed, pillow_parsed


def test_the_crafted_files_did_cost_what_the_fix_bounds():
    """Positive control: without the check, Pillow copies the shared block once per entry, and the RLE
    decoder would be asked for the whole picture."""
    crafted = CRAFTED["tiff-shared-tags"][0]
    with Image.open(io.BytesIO(crafted)) as image:  # Pillow alone: no refusal on this path
        copied = sum(len(data) for data in image.tag_v2._tagdata.values())
    assert copied > 40 * len(crafted) // 2
    block = _exif_block(40, 40_000)
    loaded = Image.Exif()
    loaded.load(block)
    assert sum(len(data) for data in loaded._info._tagdata.values()) >= 40 * 40_000
    assert exif.refusal(block) is not None and exif.refusal(_exif_block(2, 40_000)) is None
    width, height = Image.open(io.BytesIO(CRAFTED["bmp-rle8-row"][0])).size
    assert width * height > 10 * MAX_RLE_WORK


def test_the_walk_reads_tiff_directories_as_pillow_does():
    data = _tiff(shared_tags=3, block=100)
    head = tiff.header(data)
    assert head is not None and head.endian == "<" and not head.big and head.first == 8
    walked = tiff.walk(data, head, head.first)
    assert walked.entries == 12 and walked.copied == 300 and walked.strips == 1
    with Image.open(io.BytesIO(data)) as image:
        assert sum(len(d) for d in image.tag_v2._tagdata.values() if len(d) > 4) == 300  # what Pillow copied
    cut = data[:40]  # counted as far as it goes, never raised on
    assert tiff.walk(cut, head, head.first).entries == (40 - 10) // 12
    assert tiff.refusal(b"II*\0\xff\xff\xff\xff") is None and tiff.header(b"II*") is None
    assert exif.refusal(b"Exif\0\0") is None and exif.refusal(b"Exif\0\0MM\0+" + b"\0" * 12) is None
    # sub-directories Pillow loads when it rotates a photo are counted too
    sub_at = 8 + 2 + 12 * 1 + 4
    shared = [_entry(40000 + i, 1, 60_000, sub_at + 2 + 12 * 40 + 4) for i in range(40)]
    nested = b"II*\0" + struct.pack("<I", 8) + _directory([_entry(0x8769, 4, 1, sub_at)]) + _directory(shared) \
        + b"\0" * 60_000
    assert "EXIF whose directory entries" in exif.refusal(nested)
    stream = io.BytesIO(CRAFTED["tiff-strips"][0])
    stream.seek(3)
    assert "strips" in source_refusal(stream) and stream.tell() == 3


def test_ordinary_files_still_load(tmp_path):
    """Pillow's and libtiff's own TIFFs (strips, deflate, multi-page), EXIF with its sub-directories in JPEG,
    PNG and WebP (rotated as before), a small RLE8 BMP."""
    photo = Image.effect_mandelbrot((640, 480), (-2, -1.5, 1, 1.5), 100).convert("RGB")
    exif_data = Image.Exif()
    exif_data[0x0112] = 6  # rotate
    exif_data[0x010F] = "Camera maker"
    exif_data.get_ifd(0x8769)[0x9003] = "2024:01:01 00:00:00"
    exif_data.get_ifd(0x8825)[0x0001] = "N"
    for fmt, params in (("TIFF", {}), ("TIFF", {"compression": "tiff_deflate"}), ("TIFF", {"exif": exif_data}),
                        ("TIFF", {"save_all": True, "append_images": [photo]}), ("JPEG", {"exif": exif_data}),
                        ("PNG", {"exif": exif_data}), ("WEBP", {"exif": exif_data, "lossless": True})):
        buffer = io.BytesIO()
        photo.save(buffer, fmt, **params)
        data = buffer.getvalue()
        assert refusal(data) is None, (fmt, params, refusal(data))
        loaded = load_image(data)
        rotated = fmt != "TIFF" or "exif" in params
        assert loaded.size == ((480, 640) if rotated else (640, 480)), (fmt, params)
        if fmt in ("TIFF", "PNG", "WEBP"):
            expected = photo.transpose(Image.Transpose.ROTATE_270) if rotated else photo
            assert np.array_equal(np.asarray(loaded), np.asarray(expected)), (fmt, params)
        assert sniff_image(data, ServerLimits()).format == fmt
    big = Image.new("L", (3000, 6000), 7)  # libtiff strips of one 8 KB-ish block: thousands of strips
    buffer = io.BytesIO()
    big.save(buffer, "TIFF")
    assert refusal(buffer.getvalue()) is None and load_image(buffer.getvalue()).size == (3000, 6000)
    rows = (b"\x10\x05" + b"\x00\x00") * 16 + b"\x00\x01"  # 16 rows of 16 pixels of colour 5
    small = _bmp_rle(16, 16, rows)
    assert refusal(small) is None
    assert np.asarray(load_image(small)).max() == 5 and load_image(small).size == (16, 16)


@pytest.mark.skipif(not (SHARED_DATA / "imagenet_sample").is_dir(), reason="shared sample photos not present")
def test_the_sample_photos_exif_is_far_under_the_bound():
    """74 of the shared sample's 2,250 JPEGs carry EXIF: 64 KB at most, their directories pointing at 30 KB at
    most (the bound is 1 MB) and holding 40 entries at most (the bound is 4,096)."""
    checked = 0
    for path in sorted(SHARED_DATA.rglob("*")):
        if path.suffix.lower() in (".jpg", ".jpeg") and path.is_file():
            assert source_refusal(str(path)) is None, path
            checked += 1
    assert checked > 1000


# The conversion as it was (whole-image float64), to show the strip-wise one gives the same bytes.
def _old_to_eight_bit(image: Image.Image) -> Image.Image:
    def scale(values: np.ndarray, full_scale: float) -> np.ndarray:
        return np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)

    mode = image.mode
    values = np.asarray(image).astype(np.float64)
    if mode.startswith("I;16"):
        return Image.fromarray(scale(values + 32768.0 if mode == "I;16S" else values, 65535.0), mode="L")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= 0 and high <= 255 and not (mode == "F" and high <= 1.0):
        out = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    elif mode == "F" and low >= 0 and high <= 1.0:
        out = scale(values, 1.0)
    elif mode == "I" and low >= 0 and high <= 65535:
        out = scale(values, 65535.0)
    else:
        out = scale(values - low, high - low) if high > low else np.zeros(values.shape, np.uint8)
    return Image.fromarray(out, mode="L")


def _high_depth_images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    shape = (37, 53)

    def image(mode: str, values: np.ndarray, dtype: str) -> Image.Image:
        return Image.frombytes(mode, shape[::-1], values.astype(dtype).tobytes())

    # (Pillow 12 has no I;16S image mode: that branch cannot be reached from an image here)
    images = [image("I;16", rng.integers(0, 65536, shape), "<u2"), image("I;16B", rng.integers(0, 65536, shape), ">u2")]
    for values in (rng.integers(0, 256, shape), rng.integers(0, 65536, shape), rng.integers(-2**31, 2**31 - 1, shape),
                   np.full(shape, 9)):
        images.append(image("I", values, "=i4"))
    special = rng.normal(0, 1000, shape)
    special[0, :3] = [np.nan, np.inf, -np.inf]
    for values in (rng.random(shape), rng.random(shape) * 200, rng.normal(0, 1e6, shape), np.full(shape, 3.5), special):
        images.append(image("F", values, "=f4"))
    return images


@pytest.mark.parametrize("strip_pixels", [1 << 20, 100, 1])
def test_high_bit_depth_conversion_is_unchanged_strip_by_strip(strip_pixels, monkeypatch):
    from clipforge.image import modes

    monkeypatch.setattr(modes, "_STRIP_PIXELS", strip_pixels)  # several strips, across rows
    for image in _high_depth_images():
        new, old = modes.to_eight_bit(image), _old_to_eight_bit(image)
        assert new.mode == "L" and new.size == old.size
        assert np.array_equal(np.asarray(new), np.asarray(old)), (image.mode, strip_pixels)


def test_high_bit_depth_conversion_needs_a_strip_not_whole_image_copies():
    """A 4,000 x 2,000 16-bit image: whole-image float64 copies (64 MB each) peaked at 192 MB (tracemalloc, here,
    the old code); strip by strip, 33 MB: the 8 MB result and one strip's temporaries."""
    import tracemalloc

    from clipforge.image.modes import to_eight_bit

    image = Image.frombytes("I;16", (4000, 2000), np.arange(8_000_000).astype("<u2").tobytes())
    tracemalloc.start()
    try:
        to_eight_bit(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48_000_000, peak
