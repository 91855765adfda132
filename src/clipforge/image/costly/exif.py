"""EXIF blocks (and a JPEG's MPF index): TIFF directories inside another format, walked before Pillow loads them.

Pillow reads a JPEG's EXIF (to find its dpi) and MPF index when it opens the file, and every image's EXIF when
`clipforge.image.geometry.exif_orientation` asks for the orientation; rotating a photo re-reads its EXIF,
GPS and interoperability directories and unpacks every value into Python objects (`ImageOps.exif_transpose`
-> `Exif.tobytes`). Each entry's data is copied on its own (`clipforge.image.costly.tiff`), so entries
sharing one block multiply it: a 5 MB PNG whose eXIf chunk holds 100 entries pointing at one ~5 MB block
took 0.5 GB more to load here, a 1.7 KB PNG whose compressed "Raw profile type exif" text holds 300 entries
sharing 100 KB copied 30 MB, and a single 64 KB JPEG segment can hold 2,700 entries sharing 32 KB (89 MB
per open). Cameras write EXIF of a few KB to 64 KB (the most a JPEG segment holds): the 74 EXIF blocks of the
2,250 JPEGs of the shared sample data are 64 KB at most, their directories point at 30 KB at most and hold
40 entries at most. So `refusal` refuses a block whose directories, as Pillow loads them, point at more than
`MAX_EXIF_BYTES` in all or hold more than `tiff.MAX_IFD_ENTRIES` entries.
"""

from __future__ import annotations

from clipforge.image.costly import tiff

__all__ = ["MAX_EXIF_BYTES", "PREFIX", "refusal", "tiff_refusal"]

MAX_EXIF_BYTES = 1 << 20
"""Bytes the directories of one EXIF block may point at, each entry counted as Pillow copies it."""
PREFIX = b"Exif\x00\x00"

_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005


def _sub_directories(data: memoryview, head: tiff.Header, first: tiff.IfdWalk) -> list[tiff.IfdWalk]:
    """The EXIF and GPS directories `first` points at and the interoperability directory the EXIF one points at:
    what Pillow's `Exif.get_ifd` loads (for a TIFF file, every time the picture is loaded)."""
    walks = []
    if _EXIF_IFD in first.values:
        walks.append(tiff.walk(data, head, first.values[_EXIF_IFD], max_copied=MAX_EXIF_BYTES))
        if _INTEROP_IFD in walks[-1].values:
            walks.append(tiff.walk(data, head, walks[-1].values[_INTEROP_IFD], max_copied=MAX_EXIF_BYTES))
    if _GPS_IFD in first.values:
        walks.append(tiff.walk(data, head, first.values[_GPS_IFD], max_copied=MAX_EXIF_BYTES))
    return walks


def _walks_refusal(walks: list[tiff.IfdWalk], what: str) -> str | None:
    for ifd in walks:
        if ifd.entries > tiff.MAX_IFD_ENTRIES:
            return f"{what} with more than {tiff.MAX_IFD_ENTRIES:,} entries in a directory (crafted to cost seconds)"
    if sum(ifd.copied for ifd in walks) > MAX_EXIF_BYTES:
        return (f"{what} whose directory entries point at more than {MAX_EXIF_BYTES:,} bytes (each entry's data "
                f"is copied on its own; photos' EXIF is under 64 KB: crafted to cost gigabytes of memory)")
    return None


def refusal(block: bytes | bytearray | memoryview, what: str = "EXIF") -> str | None:
    """Why this EXIF block (a TIFF header and directories, after any ``Exif\\0\\0``) is refused, or None.

    Walks what Pillow may load from it: the first directory, the EXIF and GPS directories it points at and
    the interoperability directory the EXIF one points at; damaged or cut data is walked as far as it goes."""
    data = memoryview(block)
    while bytes(data[:len(PREFIX)]) == PREFIX:  # Pillow strips every leading prefix
        data = data[len(PREFIX):]
    head = tiff.header(data)
    if head is None or head.big:  # Pillow reads an 8-byte header here: a BigTIFF one fails before any entry
        return None
    first = tiff.walk(data, head, head.first, max_copied=MAX_EXIF_BYTES)
    return _walks_refusal([first, *_sub_directories(data, head, first)], what)


def tiff_refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why the EXIF, GPS or interoperability directory of a TIFF file is refused, or None. Pillow loads them
    whenever it loads the picture (`TiffImageFile.load_end`); a 1 MB TIFF whose EXIF directory held 200 entries
    sharing one block took 195 MB to load. The first directory is `tiff.refusal`'s (strip tables and ICC
    profiles make it larger than an EXIF block)."""
    view = memoryview(data)
    head = tiff.header(view)
    if head is None:
        return None
    first = tiff.walk(view, head, head.first)
    return _walks_refusal(_sub_directories(view, head, first), "TIFF EXIF")
