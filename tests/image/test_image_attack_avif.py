"""An AVIF whose EXIF item is crafted to multiply memory is refused before Pillow's AVIF plugin opens it.

Pillow loads an AVIF's EXIF as TIFF directories as it opens the file, copying each entry's data on its own:
measured here, a 505 KB AVIF whose EXIF held 400 entries sharing one 500 KB block took 199 MB to load, and the
server's header check alone ~200 MB (4,096 entries sharing a 20 MB block: 80 GB). `clipforge.image.costly`
finds the EXIF items of the ISO base media file (``iinf``, ``iloc``) and checks them as it checks a JPEG's.
"""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image, features

from clipforge.image import ImageLoadError, load_image
from clipforge.image.costly import refusal
from tests.image.peak_memory import load_peak

pytestmark = pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")

_SHARED = "AVIF/HEIF EXIF whose directory entries point at more than 1,048,576 bytes"


def _shared_exif(entries: int, block: int) -> bytes:
    """EXIF of `entries` directory entries all pointing at one `block`-byte block (no orientation: Pillow's
    AVIF encoder keeps such EXIF as it is)."""
    data_at = 8 + 2 + 12 * entries + 4
    tags = b"".join(struct.pack("<HHII", 40000 + i, 1, block, data_at) for i in range(entries))
    return b"Exif\0\0II*\0" + struct.pack("<IH", 8, entries) + tags + b"\0\0\0\0" + b"\0" * block


def _avif(exif: bytes | Image.Exif | None = None, size: tuple[int, int] = (64, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 20, 20)).save(buffer, "AVIF", **({"exif": exif} if exif is not None else {}))
    return buffer.getvalue()


def test_an_avif_whose_exif_entries_share_one_block_costs_little_memory(tmp_path):
    path = tmp_path / "evil.avif"
    path.write_bytes(_avif(_shared_exif(400, 500_000)))
    assert path.stat().st_size < 600_000
    result = load_peak(path)
    assert _SHARED in result["outcome"]
    assert result["mb"] < 64, result  # 199 MB before


def test_the_refusal_names_the_file_and_is_the_servers_too(tmp_path):
    data = _avif(_shared_exif(100, 20_000))
    path = tmp_path / "evil.avif"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError, match=_SHARED) as info:
        load_image(path)
    assert "evil.avif" in str(info.value)
    assert refusal(data) == info.value.reason  # what the server's header check answers (422)


def test_an_avif_with_ordinary_exif_loads_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the encoder moves it to the irot box
    exif[0x010F] = "Camera"
    exif[0x8769] = {0x9003: "2024:01:01 12:00:00"}
    data = _avif(exif.tobytes(), size=(64, 48))
    assert refusal(data) is None
    assert load_image(data).size == (48, 64)
    assert refusal(_avif()) is None
