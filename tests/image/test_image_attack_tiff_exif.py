"""A TIFF whose EXIF directory is crafted to multiply memory is refused before Pillow loads it.

Pillow loads a TIFF's EXIF, GPS and interoperability directories every time it loads the picture
(`TiffImageFile.load_end`), copying each entry's data on its own: measured here, a 1 MB one-pixel TIFF whose EXIF
directory held 200 entries sharing one 1 MB block took 195 MB to load (and 4,096 entries sharing 20 MB would be
80 GB). `clipforge.image.costly` checked only the first directory; it now checks those three as it checks a
JPEG's EXIF. Later directories (pages) are never loaded: `is_animated` reads only the first one's link.
"""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from clipforge.image import ImageLoadError, load_image
from clipforge.image.costly import refusal
from tests.image.peak_memory import load_peak

_REFUSED = "TIFF EXIF whose directory entries point at more than 1,048,576 bytes"


def _entry(tag: int, typ: int, count: int, value: int) -> bytes:
    return struct.pack("<HHII", tag, typ, count, value)


def _tiff_with_exif_directory(entries: int, block: int, pointer: int = 0x8769) -> bytes:
    """A 1x1 grey TIFF, upright-rotated (orientation 6), whose IFD0 points (`pointer`: EXIF or GPS) at a
    directory of `entries` entries all pointing at one `block`-byte block."""
    first_tags = 9
    sub_at = 8 + 2 + 12 * first_tags + 4
    pixel_at = sub_at + 2 + 12 * entries + 4
    block_at = pixel_at + 2
    first = [_entry(256, 3, 1, 1), _entry(257, 3, 1, 1), _entry(258, 3, 1, 8), _entry(259, 3, 1, 1),
             _entry(262, 3, 1, 1), _entry(273, 4, 1, pixel_at), _entry(274, 3, 1, 6), _entry(279, 4, 1, 1),
             _entry(pointer, 4, 1, sub_at)]
    sub = [_entry(40000 + i, 7, block, block_at) for i in range(entries)]
    return (b"II*\0" + struct.pack("<IH", 8, first_tags) + b"".join(first) + b"\0" * 4
            + struct.pack("<H", entries) + b"".join(sub) + b"\0" * 4 + b"\x80\0" + b"\0" * block)


def test_a_tiff_whose_exif_entries_share_one_block_costs_little_memory(tmp_path):
    path = tmp_path / "evil.tif"
    path.write_bytes(_tiff_with_exif_directory(200, 1_000_000))
    result = load_peak(path)
    assert _REFUSED in result["outcome"]
    assert result["mb"] < 64, result  # 195 MB before


@pytest.mark.parametrize("pointer", [0x8769, 0x8825], ids=["exif", "gps"])
def test_the_refusal_names_the_file_and_is_the_servers_too(pointer, tmp_path):
    data = _tiff_with_exif_directory(50, 30_000, pointer)
    path = tmp_path / "evil.tif"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError, match=_REFUSED) as info:
        load_image(path)
    assert "evil.tif" in str(info.value)
    assert refusal(data) == info.value.reason


def test_a_tiff_with_ordinary_exif_and_pages_loads_its_first_page():
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Scanner"
    pages = [Image.new("RGB", (40, 20), (i * 60, 0, 0)) for i in range(4)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", exif=exif, save_all=True, append_images=pages[1:])
    data = buffer.getvalue()
    assert refusal(data) is None
    image = load_image(data)
    assert image.size == (20, 40) and image.getpixel((0, 0)) == (0, 0, 0)
    assert load_image(_tiff_with_exif_directory(3, 100)).size == (1, 1)  # an EXIF directory of a few entries
