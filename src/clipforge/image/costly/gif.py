"""GIF: the blocks Pillow parses in Python before the first picture is decoded, counted first.

Pillow reads a GIF's blocks in Python, one call per block: opening walks the first frame's extensions,
`is_animated` (asked by `clipforge.image.loading`) skips the first frame's data sub-blocks and walks the
second frame's extensions, and bytes between blocks are skipped one at a time. Comment text is joined
by repeated concatenation (quadratic). Measured here: a 5 MB GIF of a million 1-byte comments took 22 s
to open; a 20 MB one, minutes. Encoders write image data in full 255-byte sub-blocks and a handful of
extensions, so `refusal` walks the same ground and refuses a GIF whose walk is dominated by what only a
crafted file holds: more than `MAX_SHORT_BLOCKS` sub-blocks shorter than 255 bytes, `MAX_EXTENSIONS`
extensions, `MAX_COMMENT_BYTES` of comments or `MAX_JUNK_BYTES` between blocks.
"""

from __future__ import annotations

import re

__all__ = ["MAGICS", "MAX_COMMENT_BYTES", "MAX_EXTENSIONS", "MAX_JUNK_BYTES", "MAX_SHORT_BLOCKS", "refusal"]

MAGICS = (b"GIF87a", b"GIF89a")
MAX_SHORT_BLOCKS = 10_000
"""Sub-blocks shorter than 255 bytes (one ends each extension and each frame's data)."""
MAX_EXTENSIONS = 10_000
MAX_COMMENT_BYTES = 1 << 16
MAX_JUNK_BYTES = 1 << 16
"""Bytes between blocks, which Pillow skips one by one."""

_EXTENSION, _IMAGE, _TRAILER, _COMMENT = 0x21, 0x2C, 0x3B, 0xFE
_NEXT_BLOCK = re.compile(rb"[\x21\x2c\x3b]")


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this GIF is refused, or None. Walks up to the second frame's image descriptor (what opening and
    `is_animated` read); cut or damaged data is walked as far as it goes, decoding says what is wrong."""
    size = len(data)
    if size < 13:
        return None
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frames = short = extensions = comment = junk = 0
    while pos < size:
        kind = data[pos]
        if kind == _TRAILER:
            break
        if kind not in (_EXTENSION, _IMAGE):
            found = _NEXT_BLOCK.search(data, pos)
            end = found.start() if found is not None else size
            junk += end - pos
            if junk > MAX_JUNK_BYTES:
                return f"GIF with more than {MAX_JUNK_BYTES:,} bytes between its blocks (crafted to cost seconds to parse)"
            pos = end
            continue
        if kind == _EXTENSION:
            extensions += 1
            if extensions > MAX_EXTENSIONS:
                return f"GIF with more than {MAX_EXTENSIONS:,} extension blocks (crafted to cost seconds to parse)"
            is_comment = pos + 1 < size and data[pos + 1] == _COMMENT
            pos += 2
        else:
            frames += 1
            if frames == 2:
                break
            if pos + 10 > size:
                break
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1  # descriptor, palette, LZW code size
            is_comment = False
        while pos < size:  # sub-blocks: a length byte, then that many bytes; 0 ends them
            length = data[pos]
            pos += 1 + length
            if length == 0:
                break
            if length < 255:
                short += 1
                if short > MAX_SHORT_BLOCKS:
                    return (f"GIF with more than {MAX_SHORT_BLOCKS:,} short data blocks (crafted to cost seconds to "
                            f"parse)")
            if is_comment:
                comment += length
                if comment > MAX_COMMENT_BYTES:
                    return f"GIF with more than {MAX_COMMENT_BYTES:,} bytes of comments (crafted to cost minutes to parse)"
    return None
