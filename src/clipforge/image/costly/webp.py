"""WebP: the first picture's lossless streams and the EXIF chunk, found by walking the RIFF chunks before Pillow
(libwebp's demuxer) hands them over.

Opening and loading a WebP decodes its first frame only (Pillow's `WebPAnimDecoder`, one frame per `load`), so
`refusal` checks the VP8L streams of that picture: a lossless picture's own (a ``VP8L`` chunk) and a lossy
one's alpha plane (an ``ALPH`` chunk, compression 1), sized by the canvas or by the first ``ANMF`` frame,
with `vp8l.refusal` (groups of prefix codes that libwebp allocates up front: 373 MB for a 295 KB file).

Pillow also keeps a WebP's first EXIF chunk as it opens the file and loads it as TIFF directories when asked
for the orientation, so `refusal` checks that chunk with `exif.refusal` (entries sharing one block, each copied
on its own). libwebp keeps an EXIF chunk only in an extended (VP8X) file whose flags announce it; the EXIF
chunk follows every frame of an animation, and a walk past `MAX_CHUNKS` chunks (~30 ms here) is refused
rather than continued.
"""

from __future__ import annotations

from collections.abc import Iterator

from clipforge.image.costly import exif, vp8l

__all__ = ["MAX_CHUNKS", "is_webp", "refusal"]

MAX_CHUNKS = 65_536
"""Chunks walked before the EXIF chunk: one per animation frame, plus a handful."""

_RIFF, _WEBP, _VP8X, _VP8L, _ALPH, _ANMF, _EXIF = b"RIFF", b"WEBP", b"VP8X", b"VP8L", b"ALPH", b"ANMF", b"EXIF"
_HEADER, _EXIF_FLAG = 12, 0x08
_LOSSLESS_ALPHA = 1  # an ALPH chunk's compression (its first byte's two low bits)
_FRAME_HEADER = 16  # an ANMF chunk's offsets, size, duration and flags before its own chunks


def is_webp(head: bytes) -> bool:
    """Whether a file starting with `head` (12 bytes or more) is a WebP."""
    return head[:4] == _RIFF and head[8:12] == _WEBP


def _size24(data: bytes | bytearray | memoryview, at: int) -> int:
    return int.from_bytes(data[at:at + 3], "little") + 1


def _chunks(data: bytes | bytearray | memoryview, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(kind, payload start, payload end) of each chunk from `pos` to `end`, cut ones as far as they go."""
    while pos + 8 <= end:
        length = int.from_bytes(data[pos + 4:pos + 8], "little")
        yield bytes(data[pos:pos + 4]), pos + 8, min(pos + 8 + length, end)
        pos += 8 + length + (length & 1)  # chunks are padded to an even length


def _picture_refusal(data: memoryview, pos: int, end: int, width: int, height: int) -> str | None:
    """`vp8l.refusal` of the lossless streams of the one picture whose chunks lie from `pos` to `end`."""
    for kind, start, stop in _chunks(data, pos, end):
        if kind == _VP8L:
            return vp8l.refusal(data[start:stop])
        if kind == _ALPH and stop > start and data[start] & 3 == _LOSSLESS_ALPHA:
            refused = vp8l.refusal(data[start + 1:stop], width, height, "WebP alpha plane")
            if refused is not None:
                return refused
        elif kind != _ALPH:
            return None
    return None


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this WebP is refused (its first picture's lossless streams or its EXIF crafted to multiply memory),
    or None; cut data is walked as far as it goes."""
    view, size = memoryview(data), len(data)
    kind = bytes(view[_HEADER:_HEADER + 4])
    if kind == _VP8L:
        return _picture_refusal(view, _HEADER, size, 0, 0)
    if kind != _VP8X or size < _HEADER + 18:
        return None
    width, height = _size24(view, _HEADER + 12), _size24(view, _HEADER + 15)
    wants_exif = view[_HEADER + 8] & _EXIF_FLAG
    pictured = False
    for chunks, (kind, start, stop) in enumerate(_chunks(view, _HEADER, size), 1):
        if chunks > MAX_CHUNKS:
            return f"WebP with more than {MAX_CHUNKS:,} chunks before its EXIF (crafted to cost seconds to walk)"
        if not pictured and kind in (_ALPH, _VP8L):
            pictured = True
            refused = _picture_refusal(view, start - 8, size, width, height)
        elif not pictured and kind == _ANMF and stop - start >= _FRAME_HEADER:
            pictured = True
            refused = _picture_refusal(view, start + _FRAME_HEADER, stop, _size24(view, start + 6),
                                       _size24(view, start + 9))
        elif kind == _EXIF and wants_exif:
            return exif.refusal(view[start:stop], "WebP EXIF")
        else:
            continue
        if refused is not None:
            return refused
        if not wants_exif:
            return None
    return None
