"""WebP: the EXIF chunk, found by walking the RIFF chunks before Pillow (libwebp's demuxer) hands it over.

Pillow keeps a WebP's first EXIF chunk as it opens the file and loads it as TIFF directories when asked for
the orientation, so `refusal` checks that chunk with `exif.refusal` (entries sharing one block, each copied
on its own). libwebp keeps an EXIF chunk only in an extended (VP8X) file whose flags announce it, so only such
a file is walked, one step per chunk up to the first EXIF chunk; the EXIF chunk follows every frame of an
animation, and a walk past `MAX_CHUNKS` chunks (~30 ms here) is refused rather than continued.
"""

from __future__ import annotations

from clipforge.image.costly import exif

__all__ = ["MAX_CHUNKS", "is_webp", "refusal"]

MAX_CHUNKS = 65_536
"""Chunks walked before the EXIF chunk: one per animation frame, plus a handful."""

_RIFF, _WEBP, _VP8X, _EXIF = b"RIFF", b"WEBP", b"VP8X", b"EXIF"
_HEADER, _EXIF_FLAG = 12, 0x08


def is_webp(head: bytes) -> bool:
    """Whether a file starting with `head` (12 bytes or more) is a WebP."""
    return head[:4] == _RIFF and head[8:12] == _WEBP


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this WebP is refused (its EXIF crafted to multiply memory), or None; cut data is walked as far as
    it goes."""
    size = len(data)
    if bytes(data[_HEADER:_HEADER + 4]) != _VP8X or size <= _HEADER + 8 or not data[_HEADER + 8] & _EXIF_FLAG:
        return None
    pos, chunks = _HEADER, 0
    while pos + 8 <= size:
        chunks += 1
        if chunks > MAX_CHUNKS:
            return f"WebP with more than {MAX_CHUNKS:,} chunks before its EXIF (crafted to cost seconds to walk)"
        length = int.from_bytes(data[pos + 4:pos + 8], "little")
        if bytes(data[pos:pos + 4]) == _EXIF:
            return exif.refusal(memoryview(data)[pos + 8:min(pos + 8 + length, size)], "WebP EXIF")
        pos += 8 + length + (length & 1)  # chunks are padded to an even length
    return None
