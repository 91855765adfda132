"""PNG: chunks counted before Pillow parses them one by one in Python, and the EXIF it would load.

Pillow reads every chunk of a PNG in Python (the headers before the picture, each image-data chunk while
decoding, the rest after): 12 MB of a million empty unknown chunks took 2.5 s to load here. Encoders write
a few ancillary chunks and image data in 8-64 KB chunks, so `refusal` refuses more than `MAX_CHUNKS`.

A PNG carries EXIF in an eXIf chunk, a tEXt chunk keyed ``exif``, or hex text keyed ``Raw profile type
exif`` (ImageMagick's; tEXt, zTXt or iTXt), all of which Pillow loads as TIFF directories when asked for the
orientation: `refusal` checks the one Pillow would use with `exif.refusal` (a 5 MB eXIf chunk of 100
entries sharing one block took 0.5 GB more to load; 1.7 KB of compressed hex text, 30 MB).
"""

from __future__ import annotations

import zlib

from clipforge.image.costly import exif

__all__ = ["MAGIC", "MAX_CHUNKS", "refusal"]

MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_CHUNKS = 65_536
"""A 500 MB PNG in libpng's 8 KB image-data chunks has ~61,000."""

_IEND = b"IEND"
_TEXT = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_RAW_PROFILE = b"Raw profile type exif"
_MAX_TEXT_CHUNK = 1 << 20  # Pillow's PngImagePlugin.MAX_TEXT_CHUNK: a larger decompressed text fails to open


def _raw_profile(kind: bytes, text: bytes) -> bytes | None:
    """The EXIF bytes of a ``Raw profile type exif`` chunk's text (after its key), as Pillow's `getexif` reads
    them (hex after the first three lines), or None where Pillow would fail or skip it."""
    try:
        if kind == b"zTXt":
            if not text or text[0] != 0:
                return None
            inflater = zlib.decompressobj()
            text = inflater.decompress(text[1:], _MAX_TEXT_CHUNK)
            if inflater.unconsumed_tail:
                return None
            value = text.decode("latin-1")
        elif kind == b"iTXt":
            if len(text) < 2 or (text[0] and text[1]):  # compressed by an unknown method: skipped
                return None
            _, _, raw = text[2:].split(b"\0", 2)
            if text[0]:
                inflater = zlib.decompressobj()
                raw = inflater.decompress(raw, _MAX_TEXT_CHUNK)
                if inflater.unconsumed_tail:
                    return None
            value = raw.decode("utf-8")
        else:
            value = text.decode("latin-1")
        return bytes.fromhex("".join(value.split("\n")[3:]))
    except (ValueError, zlib.error):
        return None


def _exif_refusal(data: bytes | bytearray | memoryview, direct: tuple[bytes, int, int] | None,
                  profile: tuple[bytes, int, int] | None) -> str | None:
    """`exif.refusal` of the EXIF Pillow would use: the last eXIf chunk or tEXt ``exif`` (its `info["exif"]`),
    else the last ``Raw profile type exif`` text."""
    if direct is not None:
        kind, start, end = direct
        block = memoryview(data)[start:end]
        return exif.refusal(block if kind == b"eXIf" else block[len(b"exif\0"):], "PNG EXIF")
    if profile is not None:
        kind, start, end = profile
        block = _raw_profile(kind, bytes(data[start + len(_RAW_PROFILE) + 1:end]))
        return exif.refusal(block, "PNG EXIF") if block is not None else None
    return None


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this PNG is refused (too many chunks, or crafted EXIF), or None; cut or damaged data is walked as far
    as it goes."""
    pos, size, chunks = len(MAGIC), len(data), 0
    direct: tuple[bytes, int, int] | None = None
    profile: tuple[bytes, int, int] | None = None
    while pos + 8 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks += 1
        if chunks > MAX_CHUNKS:
            return f"PNG with more than {MAX_CHUNKS:,} chunks (crafted to cost seconds to parse)"
        kind = bytes(data[pos + 4:pos + 8])
        if kind == _IEND:
            break
        start, end = pos + 8, min(pos + 8 + length, size)
        if kind == b"eXIf":
            direct = (kind, start, end)
        elif kind in _TEXT:
            key = bytes(data[start:start + len(_RAW_PROFILE) + 1])
            if kind == b"tEXt" and key.startswith(b"exif\0"):
                direct = (kind, start, end)
            elif key == _RAW_PROFILE + b"\0":
                profile = (kind, start, end)
        pos += 12 + length
    return _exif_refusal(data, direct, profile)
