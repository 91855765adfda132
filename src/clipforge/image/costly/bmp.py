"""BMP: run-length encoded files, which Pillow decodes in Python, bounded before it does.

Pillow decodes RLE8 and RLE4 BMPs (compression 1 and 2) with `BmpRleDecoder`, a Python loop: measured here
~110 ns a pixel at worst (an end-of-line escape pads the row one byte at a time: a 1,084-byte 50,000,000x1
file took 6.2 s and 650 MB), ~46 ns a pixel of RLE4 runs, and ~90 ns a byte of escapes that make no pixel
(a 20 MB file of them: ~1.8 s for one pixel). RLE holds only 4- and 8-bit palette pictures, rare in photo
collections and small where they occur (icons, old Windows wallpapers), so `refusal` refuses an RLE BMP whose
pixels plus file bytes pass `MAX_RLE_WORK`: at most ~0.5 s of Pillow's loop. Uncompressed and bit-field BMPs
are decoded in C and bounded by the pixel limit alone.
"""

from __future__ import annotations

__all__ = ["MAGIC", "MAX_RLE_WORK", "refusal"]

MAGIC = b"BM"
MAX_RLE_WORK = 1 << 22
"""Pixels plus bytes of an RLE BMP (4,194,304: a 2048x2048 picture, less its file's size)."""

_RLE = {1: "RLE8", 2: "RLE4"}
_CORE_HEADER = 12  # OS/2 1.x: 16-bit sizes and no compression field


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this BMP is refused (RLE-compressed and too large for Pillow's Python decoder), or None."""
    if len(data) < 34 or bytes(data[:2]) != MAGIC:
        return None
    if int.from_bytes(data[14:18], "little") <= _CORE_HEADER:
        return None
    compression = int.from_bytes(data[30:34], "little")
    if compression not in _RLE:
        return None
    width = abs(int.from_bytes(data[18:22], "little", signed=True))
    height = abs(int.from_bytes(data[22:26], "little", signed=True))
    work = width * height + len(data)
    if work > MAX_RLE_WORK:
        return (f"{_RLE[compression]} BMP of {width}x{height} pixels and {len(data):,} bytes, more than "
                f"{MAX_RLE_WORK:,} pixels plus bytes (Pillow decodes RLE in Python, ~0.1 us each: crafted ones "
                f"cost seconds and gigabytes)")
    return None
