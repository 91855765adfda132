"""ICO: the pictures inside an icon, sized before Pillow decodes one of them while *opening* the file.

Pillow's ICO opener decodes the embedded PNG or BMP (DIB) of the largest entry the moment it opens the file,
before `clipforge.image.loading` sees any size to hold against its pixel limit, and it reads the entry's own
header for the size, not the directory's (which says 256x256 at most). A DecompressionBombError raised there is
retried with Pillow's global limit lifted (so that ``max_pixels`` decides), so nothing bounds that decode.
Measured here: a 389 KB icon whose directory says 256x256 and whose PNG is 20000x20000 took 0.55 s and 382 MB
(then refused for its pixels, too late); a 1.5 MB one whose RLE8 bitmap is 4000x3000 (Pillow's RLE decoder is
Python), 1.9 s; an 8 MB one, 8000x8000, 9.9 s and 490 MB. An honest icon holds pictures of 256x256 or less
(Windows' largest), a few of 512 or 1024 at most.

`refusal` finds the entry Pillow decodes (the largest in the directory, then the fewest colours, then the first;
the others are never decoded), reads its picture's size as Pillow does (a PNG's IHDR; a DIB's header, half its
height being the AND mask) and refuses one larger than `MAX_ICON_PIXELS`, then checks the picture as a file of
its own: a PNG with `png.refusal` (Pillow parses its chunks in Python while opening the icon: 70,000 empty ones,
840 KB, 0.23 s), an RLE bitmap with `bmp`'s bound on Pillow's Python decoder (a million escapes that make no
pixel, 4 MB before a 1024x1024 picture, 0.85 s against 0.16 s without them). Directories of up to 65,535
entries cost Pillow ~2 us an entry (0.16 s for the largest, a 1 MB file) and are not refused.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from clipforge.image.costly import bmp, png

__all__ = ["MAGIC", "MAX_ICON_PIXELS", "refusal"]

MAGIC = b"\x00\x00\x01\x00"
MAX_ICON_PIXELS = 1024 * 1024
"""Pixels of any picture in an icon (Windows draws 256x256 at most)."""

_ENTRY = np.dtype([("width", "u1"), ("height", "u1"), ("colours", "u1"), ("reserved", "u1"), ("planes", "<u2"),
                   ("bits", "<u2"), ("size", "<u4"), ("offset", "<u4")])
_RLE = {1: "RLE8", 2: "RLE4"}


def _picture(data: bytes | bytearray | memoryview, offset: int) -> tuple[int, int, int] | None:
    """(width, height, compression) of the picture at `offset` as Pillow reads it (a PNG's compression 0; a DIB's
    height halved), or None where Pillow could not open one there."""
    if bytes(data[offset:offset + 8]) == png.MAGIC:
        if offset + 24 > len(data):
            return None
        width, height = struct.unpack_from(">II", data, offset + 16)
        return width, height, 0
    if offset + 16 > len(data):
        return None
    size = int.from_bytes(data[offset:offset + 4], "little")
    if size == 12:  # OS/2 1.x core header: 16-bit sizes, no compression
        width, height = struct.unpack_from("<HH", data, offset + 4)
        return width, height // 2, 0
    if size < 40 or offset + 20 > len(data):
        return None
    width, height, _, _, compression = struct.unpack_from("<iiHHI", data, offset + 4)
    return abs(width), abs(height) // 2, compression


# Pillow's key for choosing among entries of one size (`IcoFile`): the bit count, else the bits its colour count
# needs, else 256; here for each colour count a directory entry can give
_COLOUR_DEPTH = np.array([(colours != 0 and math.ceil(math.log(colours, 2))) or 256 for colours in range(256)])


def _decoded_entry(data: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(directory width, directory height, picture offset) of the entry Pillow decodes: the largest in the
    directory, then the one of fewest colours, then the first (`IcoFile` sorts them so), or None for none."""
    count = int.from_bytes(data[4:6], "little")
    directory = memoryview(data)[6:6 + 16 * count]
    entries = np.frombuffer(directory[:len(directory) - len(directory) % 16], dtype=_ENTRY)
    if not len(entries):
        return None  # Pillow fails on a cut directory anyway
    widths, heights = entries["width"].astype(np.int64), entries["height"].astype(np.int64)
    widths[widths == 0] = 256  # a 0 stands for 256
    heights[heights == 0] = 256
    squares = widths * heights
    largest = np.flatnonzero(squares == squares.max())
    depths = np.where(entries["bits"] != 0, entries["bits"], _COLOUR_DEPTH[entries["colours"]])
    index = int(largest[np.argmin(depths[largest])])
    return int(widths[index]), int(heights[index]), int(entries["offset"][index])


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this icon is refused (the picture Pillow decodes while opening it larger than `MAX_ICON_PIXELS`, or
    crafted as a PNG or an RLE bitmap would be), or None."""
    if len(data) < 6 or bytes(data[:4]) != MAGIC:
        return None
    entry = _decoded_entry(data)
    if entry is None:
        return None
    width, height, offset = entry
    picture = _picture(data, offset)
    if picture is None:
        return None
    if picture[0] * picture[1] > MAX_ICON_PIXELS:
        return (f"ICO whose directory says {width}x{height} and whose picture is {picture[0]}x{picture[1]}, "
                f"more than {MAX_ICON_PIXELS:,} pixels (Pillow decodes it while opening the file, before any "
                "pixel limit: crafted ones cost seconds and gigabytes)")
    if bytes(data[offset:offset + 8]) == png.MAGIC:
        refused = png.refusal(memoryview(data)[offset:])
        return None if refused is None else f"ICO picture: {refused}"
    if picture[2] in _RLE and picture[0] * picture[1] + len(data) - offset > bmp.MAX_RLE_WORK:
        return (f"ICO picture in {_RLE[picture[2]]} of {picture[0]}x{picture[1]} pixels and {len(data) - offset:,} "
                f"bytes, more than {bmp.MAX_RLE_WORK:,} pixels plus bytes (Pillow decodes RLE in Python, ~0.1 us "
                "each, while opening the file)")
    return None
