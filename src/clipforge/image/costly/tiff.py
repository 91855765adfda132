"""TIFF: image file directories (IFDs), walked before Pillow copies what their entries point at.

Pillow's `ImageFileDirectory_v2.load` reads every entry of an IFD in Python and copies the bytes each one
points at, one copy per entry, even when every entry points at the same block: a 10 MB TIFF of one pixel and
100 BYTE tags sharing one 10 MB block took 1.2 GB and 1.7 s to open (the server's header check) and 2.2 GB to
load here (opening loads the first IFD twice, `getexif` once more). The first IFD's strip (or tile) offsets
become one Python tile per strip: 2,500,000 one-row strips (a 10 MB file) took 5 s and 1 GB to open and
20 s to load. The same directories carry EXIF in JPEG, PNG and WebP (`exif`).

`walk` counts what Pillow would copy from one IFD; `refusal` refuses a TIFF whose first IFD (the only one a
reader here loads) has more than `MAX_IFD_ENTRIES` entries or `MAX_STRIPS` strips or tiles, or whose entries
point at more bytes than the file holds plus `SHARED_BYTES_SLACK` (distinct data never does: only entries
sharing one block multiply it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["MAGICS", "MAX_IFD_ENTRIES", "MAX_STRIPS", "SHARED_BYTES_SLACK", "Header", "IfdWalk", "header", "refusal",
           "walk"]

MAGICS = (b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a", b"MM\x00\x2b", b"II\x2b\x00")
"""Pillow's `TiffImagePlugin.PREFIXES`: what it opens as a TIFF (two of them malformed, read anyway)."""
MAX_IFD_ENTRIES = 4096
"""Entries in one IFD: photos' and scanners' TIFF IFDs hold 10-60, EXIF IFDs a few dozen."""
MAX_STRIPS = 65_536
"""Strip or tile offsets of the first IFD: Pillow makes one Python tile of each (65,536 one-row strips took
0.11 s to open and 0.23 s to load here, 20 MB; 2,500,000 took 5 s and 1 GB to open, 14-20 s to load).
libtiff writes strips of ~8 KB, one row each for rows over 8 KB, so a 6000x4000 RGB photo has 4,000 and the
tallest picture under the pixel limit with rows of 8 KB or more (RGB 2,731 wide) ~65,500; 256x256 tiles of
179 megapixels are 2,731."""
SHARED_BYTES_SLACK = 1 << 20
"""What entries may point at beyond the file's own size (a few small shared values)."""

# Pillow's `ImageFileDirectory_v2._load_dispatch`: bytes per value of each type it reads (others it skips).
_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
_STRIP_OFFSETS, _TILE_OFFSETS = 273, 324
_OFFSET_TYPES = {3: "H", 4: "L", 9: "l", 13: "L", 16: "Q"}  # integer types whose single value is an IFD's offset


@dataclass(frozen=True)
class Header:
    """Byte order ('<' or '>'), BigTIFF or not, and the first IFD's offset, as Pillow reads them."""

    endian: str
    big: bool
    first: int


@dataclass
class IfdWalk:
    """One IFD as Pillow loads it: the entries read, the bytes copied (each entry on its own), the strip or
    tile count, and the single integer value of each entry (offsets of IFDs within it)."""

    entries: int = 0
    copied: int = 0
    strips: int = 0
    values: dict[int, int] = field(default_factory=dict)


def header(data: bytes | bytearray | memoryview) -> Header | None:
    """The TIFF header at the start of `data` (as Pillow's `ImageFileDirectory_v2` reads it), or None."""
    if len(data) < 8 or bytes(data[:4]) not in MAGICS:
        return None
    endian = "<" if bytes(data[:2]) == b"II" else ">"
    big = data[2] == 0x2B
    if big:
        if len(data) < 16:
            return None
        return Header(endian, True, struct.unpack_from(endian + "Q", data, 8)[0])
    return Header(endian, False, struct.unpack_from(endian + "L", data, 4)[0])


def walk(data: bytes | bytearray | memoryview, head: Header, offset: int, max_entries: int = MAX_IFD_ENTRIES,
         max_copied: int | None = None) -> IfdWalk:
    """What Pillow's `ImageFileDirectory_v2.load` reads from the IFD at `offset`: entries as far as the data
    goes (stopping once `max_entries` is passed), and the bytes each entry's data would copy (never more than
    the data holds past its offset; stopping once `max_copied` is passed). Never raises on cut data."""
    result = IfdWalk()
    size = len(data)
    count_format, entry_format, entry_size, inline = ("Q", "HHQ8s", 20, 8) if head.big else ("H", "HHL4s", 12, 4)
    count_size = 8 if head.big else 2
    if offset < 0 or offset + count_size > size:
        return result
    declared = struct.unpack_from(head.endian + count_format, data, offset)[0]
    fits = (size - offset - count_size) // entry_size
    result.entries = min(declared, fits, max_entries + 1)
    unpack_entry = struct.Struct(head.endian + entry_format).unpack_from
    pointer = head.endian + ("Q" if head.big else "L")
    position = offset + count_size
    for _ in range(result.entries):
        tag, typ, count, raw = unpack_entry(data, position)
        position += entry_size
        unit = _UNIT.get(typ)
        if unit is None:
            continue
        if tag in (_STRIP_OFFSETS, _TILE_OFFSETS):
            result.strips = max(result.strips, count)
        length = count * unit
        if length > inline:
            at = struct.unpack(pointer, raw)[0]
            result.copied += min(length, max(0, size - at))
            if max_copied is not None and result.copied > max_copied:
                break
        elif count == 1 and typ in _OFFSET_TYPES:
            result.values[tag] = struct.unpack_from(head.endian + _OFFSET_TYPES[typ], raw)[0]
    return result


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this TIFF is refused (its first IFD too long, too many strips, or entries sharing data), or None."""
    head = header(data)
    if head is None:
        return None
    budget = len(data) + SHARED_BYTES_SLACK
    ifd = walk(data, head, head.first, max_copied=budget)
    if ifd.entries > MAX_IFD_ENTRIES:
        return f"TIFF with more than {MAX_IFD_ENTRIES:,} entries in a directory (crafted to cost seconds to parse)"
    if ifd.copied > budget:
        return ("TIFF whose directory entries point at more bytes than the file holds (entries sharing one block, "
                "each copied on its own: crafted to cost gigabytes of memory)")
    if ifd.strips > MAX_STRIPS:
        return f"TIFF with more than {MAX_STRIPS:,} strips or tiles (crafted to cost seconds and gigabytes to open)"
    return None
