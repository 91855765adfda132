"""Icons whose embedded picture Pillow decodes while opening them (before any pixel limit), and Netpbm files whose
header or samples Pillow reads in Python, are refused from their structure (`clipforge.image.costly.ico`,
`clipforge.image.costly.ppm`).

Measured before the fix: a 389 KB ICO whose directory says 256x256 and whose PNG is 20000x20000 took 0.55 s and
382 MB (then refused for its pixels); a 1.5 MB ICO whose RLE8 bitmap is 4000x3000, 1.9 s; a 1x1 PPM after a 4 MB
comment, 1.9 s; a 1000x1000 PPM of maxval 254, 1.9 s (255: 5 ms); a 16-bit one, 2.3 s; 3 MB of a plain P3, 2.8 s.
TGA (RLE decoded in C, 0.5 s for 164 megapixels as for the raw file) and plain PBM (~30 ns a pixel) cost what
their pixels cost and are not checked.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import IcoImagePlugin, Image, PpmImagePlugin

from clipforge.image import ImageLoadError, load_image
from clipforge.image.costly import refusal, source_refusal
from clipforge.image.modes import to_rgb
from tests.image.refused import assert_refused_everywhere

MAX_HEADER_BYTES = 65_536  # `MAX_HEADER_BYTES`, written out: this module imports against the code before `ppm`


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, extra: bytes = b"") -> bytes:
    """A grey PNG of `width` x `height` zeros (~1 KB a megapixel), `extra` chunks before its pixels."""
    pixels = zlib.compress((b"\0" * (width + 1)) * height, 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + extra
            + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))


def _dib_rle8(width: int, height: int, idle: int = 0) -> bytes:
    """An icon's RLE8 bitmap (its header's height doubled for the AND mask, which follows): `idle` escapes that
    make no pixel (a move by 0, 0), then each row one pixel and an end-of-line that Pillow's Python decoder pads a
    byte at a time."""
    rle = b"\x00\x02\x00\x00" * idle + b"\x01\x07\x00\x00" * height + b"\x00\x01"
    header = struct.pack("<IiiHHIIiiII", 40, width, 2 * height, 1, 8, 1, len(rle), 0, 0, 256, 0)
    return header + bytes(256 * 4) + rle + bytes((width + 31) // 32 * 4 * height)


def _ico(*entries: tuple[int, int, int, bytes]) -> bytes:
    """An icon of (directory width, directory height, bits, picture) entries (a size of 256 written as 0)."""
    at = 6 + 16 * len(entries)
    directory, pictures = b"", b""
    for width, height, bits, picture in entries:
        directory += struct.pack("<BBBBHHII", width % 256, height % 256, 0, 0, 1, bits, len(picture),
                                 at + len(pictures))
        pictures += picture
    return struct.pack("<HHH", 0, 1, len(entries)) + directory + pictures


def _saved(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


# name -> (file, start of the refusal, the Pillow plugin that would open it)
CRAFTED = {
    "ico-png": (_ico((256, 256, 32, _png(4000, 3000))), "ICO whose directory says 256x256 and whose picture is "
                "4000x3000", IcoImagePlugin.IcoImageFile),
    "ico-png-among-honest": (_ico((16, 16, 32, _png(16, 16)), (256, 256, 32, _png(2000, 2000))),
                             "ICO whose directory says 256x256 and whose picture is 2000x2000",
                             IcoImagePlugin.IcoImageFile),
    "ico-rle": (_ico((256, 256, 8, _dib_rle8(1500, 1000))), "ICO whose directory says 256x256 and whose picture is "
                "1500x1000", IcoImagePlugin.IcoImageFile),
    # a picture of 1024x1024 (the most allowed) after a million escapes that make no pixel: ~90 ns each in Python
    "ico-rle-idle-escapes": (_ico((256, 256, 8, _dib_rle8(1024, 1024, idle=1_000_000))),
                             "ICO picture in RLE8 of 1024x1024", IcoImagePlugin.IcoImageFile),
    "ppm-comment": (b"P6\n#" + b"x" * MAX_HEADER_BYTES + b"\n1 1\n255\n\0\0\0",
                    "Netpbm header longer than 65,536 bytes", PpmImagePlugin.PpmImageFile),
    "ppm-whitespace": (b"P6" + b" " * MAX_HEADER_BYTES + b"1 1\n255\n\0\0\0",
                       "Netpbm header longer than 65,536 bytes", PpmImagePlugin.PpmImageFile),
    "ppm-plain": (b"P3\n600 300\n255\n" + b"0 " * (600 * 300 * 3), "Netpbm P3 file (plain (ASCII)) of 600x300",
                  PpmImagePlugin.PpmImageFile),
    # 100 megapixels declared, 600,000 samples held: the Python decoder's work is what the file holds
    "pgm-plain-huge-declared": (b"P2\n10000 10000\n255\n" + b"7 " * 600_000, "Netpbm P2 file (plain (ASCII)) of "
                                "10000x10000 pixels whose 600,000 samples", PpmImagePlugin.PpmImageFile),
}


@pytest.fixture()
def pillow_opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    for plugin in (IcoImagePlugin.IcoImageFile, PpmImagePlugin.PpmImageFile):
        monkeypatch.setattr(plugin, "_open", lambda self, _open=plugin._open: opened.append("open") or _open(self))
    return opened


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_crafted_icon_or_netpbm_file_is_refused_before_pillow_opens_it(name, tmp_path, pillow_opened):
    crafted, why, _ = CRAFTED[name]
    assert len(crafted) < 5_000_000
    assert_refused_everywhere(crafted, why, tmp_path / f"evil-{name}")
    assert not pillow_opened, pillow_opened


def test_the_icon_checked_is_the_one_pillow_decodes():
    """Pillow decodes the entry largest in the directory, then the one of fewest colours (`IcoFile`); a large
    picture behind an entry it never decodes costs nothing."""
    honest = _png(48, 48)
    fewer_colours_second = _ico((256, 256, 32, _png(20, 20)), (256, 256, 8, _png(3000, 3000)))
    assert "3000x3000" in refusal(fewer_colours_second)
    unused = _ico((256, 256, 32, honest), (16, 16, 32, _png(3000, 3000)))
    assert refusal(unused) is None and load_image(unused).size == (48, 48)
    with Image.open(io.BytesIO(_ico((256, 256, 32, _png(20, 20)), (256, 256, 8, honest)))) as image:
        assert image.size == (48, 48)  # the second entry, as `ico` chooses
    assert refusal(_ico()) is None and refusal(_ico((256, 256, 32, b"junk"))) is None
    # the picture is checked as a PNG of its own: Pillow parses its chunks in Python while opening the icon
    chunks = _ico((256, 256, 32, _png(16, 16, _chunk(b"tEXt", b"") * 70_000)))
    assert refusal(chunks).startswith("ICO picture: PNG with more than 65,536 chunks")


def test_the_netpbm_header_is_read_as_pillow_reads_it():
    from clipforge.image.costly import ppm

    assert ppm.MAX_HEADER_BYTES == MAX_HEADER_BYTES
    assert ppm.is_netpbm(b"P6\n") and ppm.is_netpbm(b"Pf") and not ppm.is_netpbm(b"P7") and not ppm.is_netpbm(b"PK")
    commented = b"P5\n# a comment\n8#inside a token\n0 3\n# another\n4095\n" + bytes(80 * 3 * 2)
    assert refusal(commented) is None and load_image(commented).size == (80, 3)
    cut = b"P6\n600 300\n" + b"#" * 100
    assert refusal(cut) is None  # no maxval yet: left to Pillow, which says what is wrong
    with pytest.raises(ImageLoadError):
        load_image(cut)
    truncated = b"P6\n60000 60000\n254\n" + bytes(3 * 1000)  # the Python decoder stops at the end of the data
    assert refusal(truncated) is None
    stream = io.BytesIO(CRAFTED["ppm-plain"][0])
    stream.seek(4)
    assert "plain (ASCII)" in source_refusal(stream) and stream.tell() == 4


@pytest.mark.parametrize(("header", "dtype", "bands"), [
    (b"P6\n600 400\n65535\n", ">u2", 3),  # a 16-bit photo (dcraw -4): 2.3 s in Pillow's Python decoder
    (b"P5\n800 700\n4095\n", ">u2", 1),  # a 12-bit scientific PGM
    (b"P6\n600 300\n254\n", "u1", 3),  # an odd 8-bit maxval
])
def test_binary_netpbm_samples_pillow_scales_in_python_load_as_pillow_would(header, dtype, bands, tmp_path):
    """These were refused (the Python decoder's cost): read with numpy (`image.netpbm`), they load, and the picture
    is the one Pillow's own decoder makes, value for value."""
    from clipforge.image import netpbm

    width, height, maxval = (int(token) for token in header.split()[1:4])
    samples = np.random.default_rng(3).integers(0, maxval + 1, width * height * bands)
    data = header + samples.astype(dtype).tobytes()
    assert refusal(data) is None
    ours = load_image(data)
    with Image.open(io.BytesIO(data)) as reference:
        assert netpbm.decodes(reference)
        reference.load()
        expected = np.asarray(to_rgb(reference, None))
    assert ours.size == (width, height) and np.array_equal(np.asarray(ours), expected)
    cut = tmp_path / "cut.ppm"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated image data"):
        load_image(cut)


def test_honest_icons_and_netpbm_files_still_load(tmp_path):
    photo = Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 60).convert("RGB")
    icon = _saved(photo, "ICO", sizes=[(16, 16), (32, 32), (48, 48), (256, 256)])
    assert refusal(icon) is None and load_image(icon).size == (256, 256)
    bitmap_icon = _saved(photo.convert("P"), "ICO", sizes=[(32, 32)], bitmap_format="bmp")
    assert refusal(bitmap_icon) is None and load_image(bitmap_icon).size == (32, 32)
    small_rle = _ico((256, 256, 8, _dib_rle8(256, 256)))
    assert refusal(small_rle) is None and load_image(small_rle).size == (256, 256)
    big = photo.resize((1200, 900))
    for fmt_image in (big, big.convert("L"), big.convert("1")):
        data = _saved(fmt_image, "PPM")
        assert refusal(data) is None and load_image(data).size == (1200, 900)
        path = tmp_path / "photo.ppm"
        path.write_bytes(data)
        assert source_refusal(str(path)) is None
    sixteen = Image.fromarray(np.full((900, 1200), 1000, dtype=np.uint16))  # P5, maxval 65535: Pillow's C decoder
    data = _saved(sixteen, "PPM")
    assert data.startswith(b"P5\n1200 900\n65535\n") and refusal(data) is None
    assert load_image(data).size == (1200, 900)
    small_sixteen_rgb = b"P6\n256 170\n65535\n" + bytes(256 * 170 * 6)  # 130,560 samples in Python: ~0.1 s
    assert refusal(small_sixteen_rgb) is None and load_image(small_sixteen_rgb).size == (256, 170)
    plain = b"P3\n# GIMP\n64 48\n255\n" + b"12 34 56\n" * (64 * 48)
    assert refusal(plain) is None and load_image(plain).getpixel((0, 0)) == (12, 34, 56)
