"""PNG: chunks counted before Pillow parses them one by one in Python.

Pillow reads every chunk of a PNG in Python (the headers before the picture, each image-data chunk while
decoding, the rest after): 12 MB of a million empty unknown chunks took 2.5 s to load here. Encoders write
a few ancillary chunks and image data in 8-64 KB chunks, so `refusal` refuses more than `MAX_CHUNKS`.
"""

from __future__ import annotations

__all__ = ["MAGIC", "MAX_CHUNKS", "refusal"]

MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_CHUNKS = 65_536
"""A 500 MB PNG in libpng's 8 KB image-data chunks has ~61,000."""

_IEND = b"IEND"


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this PNG is refused, or None; cut or damaged data is walked as far as it goes."""
    pos, size, chunks = len(MAGIC), len(data), 0
    while pos + 8 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks += 1
        if chunks > MAX_CHUNKS:
            return f"PNG with more than {MAX_CHUNKS:,} chunks (crafted to cost seconds to parse)"
        if bytes(data[pos + 4:pos + 8]) == _IEND:
            break
        pos += 12 + length
    return None
