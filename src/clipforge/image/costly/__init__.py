"""Files crafted to cost far more to read than their bytes, refused from their structure first.

Decoding is bounded by the pixel limit, but some formats can be made to cost seconds or minutes per
megabyte without more pixels: a JPEG's scans or segments (`jpeg`), a GIF's blocks (`gif`), a PNG's chunks
(`png`), a TIFF's strips (`tiff`), an RLE BMP (`bmp`, decoded in Python); or gigabytes of memory: the TIFF
directories of a TIFF (its first, EXIF, GPS and interoperability ones) or of the EXIF in a JPEG, PNG, WebP,
AVIF or HEIF (`tiff`, `exif`, `webp`, `isobmff`), whose entries Pillow copies one by one even when they all
point at the same block, and the groups of prefix codes of a lossless WebP picture, whose tables libwebp
allocates up front (`vp8l`); or both: a JPEG 2000 codestream's tiles, code-blocks, precincts and packets,
which OpenJPEG sets up from the header alone (`jp2`), an icon's embedded picture, which Pillow decodes while
opening the file, before any pixel limit (`ico`), and a Netpbm file's header and samples, which Pillow reads
in Python (`ppm`). `refusal` walks a file's structure (fast: a fraction of a millisecond for a 2 MB
photo; 0.1-0.5 ms for 12-72 MB TIFF, JPEG, PNG and lossy WebP photos; 1-70 ms for a 12-megapixel lossless WebP,
whose small transform images are decoded in Python; ~0.1 ms for a JPEG 2000 photo) and says why it would be
refused, or None.
`clipforge.image.loading` asks `source_refusal` before Pillow opens any file, and the server asks `refusal`
before it reads an upload's header, so no request, `index add` or dataset pays for such a file.
"""

from __future__ import annotations

import os
from typing import IO

from clipforge.image.costly import bmp, exif, gif, ico, isobmff, jp2, jpeg, png, ppm, tiff, webp

__all__ = ["refusal", "source_refusal"]

_MAGIC_BYTES = 12  # a WebP's RIFF header


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this file would be refused (a crafted JPEG, GIF, PNG, TIFF, BMP, WebP, AVIF, HEIF, JPEG 2000, ICO or
    Netpbm file), or None (any other file too)."""
    head = bytes(data[:_MAGIC_BYTES])
    if head.startswith(jpeg.MAGIC):
        return jpeg.refusal(data)
    if head.startswith(png.MAGIC):
        return png.refusal(data)
    if head.startswith(gif.MAGICS):
        return gif.refusal(data)
    if head.startswith(tiff.MAGICS):
        return tiff.refusal(data) or exif.tiff_refusal(data)
    if head.startswith(bmp.MAGIC):
        return bmp.refusal(data)
    if webp.is_webp(head):
        return webp.refusal(data)
    if isobmff.is_isobmff(head):
        return isobmff.refusal(data)
    if head.startswith(jp2.MAGICS):
        return jp2.refusal(data)
    if head.startswith(ico.MAGIC):
        return ico.refusal(data)
    if ppm.is_netpbm(head):
        return ppm.refusal(bytes(data[:ppm.HEADER_READ]), len(data))
    return None


def _checked_format(head: bytes) -> bool:
    return (head.startswith((jpeg.MAGIC, png.MAGIC, *gif.MAGICS, *tiff.MAGICS, bmp.MAGIC, *jp2.MAGICS, ico.MAGIC))
            or webp.is_webp(head) or isobmff.is_isobmff(head) or ppm.is_netpbm(head))


def source_refusal(source: str | os.PathLike[str] | IO[bytes]) -> str | None:
    """`refusal` of a file or of a seekable stream, from its start as Pillow reads it (its position kept).
    What cannot be read here is left to the decoder, which says what is wrong with it."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb", buffering=0) as handle:  # unbuffered: read whole in one allocation
                magic = handle.read(_MAGIC_BYTES)
                if not _checked_format(magic):
                    return None
                if ppm.is_netpbm(magic):  # its header and its size are all that count: not read whole
                    head = magic + handle.read(ppm.HEADER_READ - len(magic))
                    return ppm.refusal(head, os.fstat(handle.fileno()).st_size)
                handle.seek(0)  # read, not mapped: a file truncated meanwhile would kill a mapping reader (SIGBUS)
                return refusal(handle.read())
        except (OSError, ValueError):
            return None
    try:
        position = source.tell()
    except (OSError, AttributeError, ValueError):
        return None
    try:
        source.seek(0)
        magic = source.read(_MAGIC_BYTES)
        if not _checked_format(magic):
            return None
        if ppm.is_netpbm(magic):
            head = magic + source.read(ppm.HEADER_READ - len(magic))
            return ppm.refusal(head, source.seek(0, os.SEEK_END))
        getbuffer = getattr(source, "getbuffer", None)
        if getbuffer is not None:
            with getbuffer() as view:
                return refusal(view)
        source.seek(0)
        return refusal(source.read())
    except (OSError, ValueError):
        return None
    finally:
        source.seek(position)
