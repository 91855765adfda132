"""AVIF and HEIF: the EXIF items of the ISO base media file, walked before libavif (or libheif) hands them over.

Pillow's AVIF plugin loads the primary picture's EXIF as TIFF directories the moment it opens the file (to
reconcile its orientation with the ``irot``/``imir`` boxes), and `clipforge.image.geometry` does again when
asked for the orientation. Each entry's data is copied on its own (`clipforge.image.costly.exif`): a 505 KB
AVIF whose EXIF item held 400 entries sharing one 500 KB block took 199 MB to load and ~200 MB for the
server's header check alone (measured here); 4,096 entries sharing a 20 MB block would be 80 GB. `refusal`
finds every item of type ``Exif`` (the ``iinf`` box) and its bytes (the ``iloc`` box: extents in the file or
in the ``idat`` box), skips the 4-byte offset that starts its payload as libavif does, and checks the rest with
`exif.refusal`. A file declaring more than `MAX_ITEMS` items is refused rather than walked (a 48-megapixel
phone HEIC holds ~200: grid tiles, thumbnails, metadata).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from clipforge.image.costly import exif

__all__ = ["MAX_ITEMS", "is_isobmff", "refusal"]

MAX_ITEMS = 4096
"""Items (pictures, grid tiles, metadata) one file may declare."""

_EXIF_PAYLOAD_HEADER = 4  # unsigned int(32) exif_tiff_header_offset (ISO/IEC 23008-12, annex A.2.1)
_FILE, _IDAT = 0, 1  # iloc construction methods walked (2, "item", is not)
_OTHER_BOXES = 64  # boxes beside the items' own in one box


def is_isobmff(head: bytes) -> bool:
    """Whether a file starting with `head` (12 bytes or more) is an ISO base media file (AVIF, HEIF, ...)."""
    return head[4:8] == b"ftyp"


class _TooMany(Exception):
    """More items than `MAX_ITEMS`."""


def _boxes(data: memoryview, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box from `pos` to `end`; cut ones as far as they go; more than
    `MAX_ITEMS` boxes side by side (one per item at most) raise `_TooMany`."""
    count = 0
    while pos + 8 <= end:
        count += 1
        if count > MAX_ITEMS + _OTHER_BOXES:
            raise _TooMany
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, min(pos + size, end)
        pos += size


def _uint(data: memoryview, pos: int, size: int) -> int:
    return int.from_bytes(data[pos:pos + size], "big") if size else 0


def _exif_items(data: memoryview, start: int, end: int) -> set[int]:
    """The ids of the items of type ``Exif`` listed in an ``iinf`` box's payload."""
    version = data[start]
    count = _uint(data, start + 4, 2 if version == 0 else 4)
    if count > MAX_ITEMS:
        raise _TooMany
    found = set()
    for kind, at, stop in _boxes(data, start + (6 if version == 0 else 8), end):
        if kind == b"infe" and data[at] >= 2:
            id_size = 2 if data[at] == 2 else 4
            if at + 4 + id_size + 6 <= stop and bytes(data[at + 6 + id_size:at + 10 + id_size]) == b"Exif":
                found.add(_uint(data, at + 4, id_size))
    return found


def _locations(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """(item id, construction method, [(offset, length), ...]) of each item of an ``iloc`` box's payload; more
    than 4 x `MAX_ITEMS` extents in all raise `_TooMany`."""
    version = data[start]
    sizes, more = data[start + 4], data[start + 5]
    offset_size, length_size, base_size = sizes >> 4, sizes & 15, more >> 4
    index_size = more & 15 if version in (1, 2) else 0
    id_size = 4 if version == 2 else 2
    count = _uint(data, start + 6, id_size)
    if count > MAX_ITEMS:
        raise _TooMany
    pos, extents_left = start + 6 + id_size, MAX_ITEMS * 4
    for _ in range(count):
        if pos + id_size + 2 > end:
            return
        item = _uint(data, pos, id_size)
        pos += id_size
        method = _FILE
        if version in (1, 2):
            method = _uint(data, pos, 2) & 15
            pos += 2
        base = _uint(data, pos + 2, base_size)
        pos += 2 + base_size
        extents = []
        count, pos = _uint(data, pos, 2), pos + 2
        extents_left -= count
        if extents_left < 0:  # an extent may take no byte of the box: counted, not walked
            raise _TooMany
        for _ in range(count):
            pos += index_size
            extents.append((base + _uint(data, pos, offset_size), _uint(data, pos + offset_size, length_size)))
            pos += offset_size + length_size
            if pos > end:
                return
        yield item, method, extents


def _item_bytes(data: memoryview, method: int, extents: list[tuple[int, int]], idat: tuple[int, int]) -> bytes | None:
    """An item's bytes, its extents joined as libavif joins them, or None when they add up to more than the file
    holds (extents may repeat one block: libavif would allocate all of it)."""
    origin, limit = (0, len(data)) if method == _FILE else idat
    spans = [(origin + offset, limit if length == 0 else min(origin + offset + length, limit))
             for offset, length in extents]
    if sum(max(0, stop - at) for at, stop in spans) > len(data):
        return None
    return b"".join(data[at:stop] for at, stop in spans)


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this AVIF/HEIF is refused (an EXIF item crafted to multiply memory, or too many items), or None;
    cut or damaged data is walked as far as it goes."""
    view = memoryview(data)
    try:
        meta = next(((start, stop) for kind, start, stop in _boxes(view, 0, len(view)) if kind == b"meta"), None)
        if meta is None or meta[1] - meta[0] < 4:
            return None
        boxes = {kind: (start, stop) for kind, start, stop in _boxes(view, meta[0] + 4, meta[1])}  # a FullBox
        if b"iinf" not in boxes or b"iloc" not in boxes:
            return None
        wanted = _exif_items(view, *boxes[b"iinf"])
        located = [(method, extents) for item, method, extents in _locations(view, *boxes[b"iloc"])
                   if item in wanted and method in (_FILE, _IDAT)]
    except _TooMany:
        return f"AVIF/HEIF file with more than {MAX_ITEMS:,} items or boxes in one box (crafted to cost seconds to walk)"
    except (IndexError, struct.error):
        return None
    for method, extents in located:
        payload = _item_bytes(view, method, extents, boxes.get(b"idat", (0, 0)))
        if payload is None:
            return "AVIF/HEIF EXIF item whose extents add up to more bytes than the file holds (crafted to cost memory)"
        refused = exif.refusal(payload[_EXIF_PAYLOAD_HEADER:], "AVIF/HEIF EXIF")
        if refused is not None:
            return refused
    return None
