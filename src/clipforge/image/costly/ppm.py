"""PPM, PGM and PBM (Netpbm): headers Pillow reads a byte at a time, and samples it decodes in Python.

Pillow parses a Netpbm header one byte per call (whitespace and ``#`` comments skipped byte by byte) and decodes
in Python, one sample per loop step, every file that its raw C decoder cannot take: plain (ASCII) PGM and PPM
(P2, P3) and binary ones whose maxval is not 255 (not 65535 either, for PGM): 16-bit PPMs, 10- or 12-bit PGMs.
Measured here against a binary 1000x1000 PPM of maxval 255 (5 ms): a 1x1 PPM after a 4 MB comment, 1.9 s (4 MB
of whitespace, 2.1 s); the same picture with maxval 254, 1.9 s; at 16 bits (6 MB), 2.3 s; a 2000x1000 PGM of
maxval 4095 (4 MB), 2.3 s; 3 MB of ``0 `` tokens in a P3 PPM, 2.8 s (P2, 1.1 s for 2 MB). The Python decoders
stop at the end of the data, so their work is the samples the file holds, whatever size it declares.

`refusal` refuses a header longer than `MAX_HEADER_BYTES` (encoders write a line or two) and a file whose Python
decode would take more than `MAX_PYTHON_SAMPLES` samples (~0.3-0.6 s at the 0.55-1.1 us a sample measured): plain
P2/P3 files, and binary files of Pillow's own PPM variants. Binary PGM and PPM samples of any maxval are not
Pillow's to decode here: `clipforge.image.netpbm` reads them with numpy to the same values (a 1200x900 16-bit
RGB PPM: 27 ms against Pillow's 2.2 s), so a 16-bit photo from a raw converter loads like any other. Plain PBM
(P1) is decoded with bytes operations (~30 ns a pixel) and binary files of maxval 255 in C: all of these are
bounded by the pixel limit alone.
"""

from __future__ import annotations

import re

__all__ = ["HEADER_READ", "MAX_HEADER_BYTES", "MAX_PYTHON_SAMPLES", "is_netpbm", "refusal"]

MAX_HEADER_BYTES = 1 << 16
"""Bytes before the first sample (~30 ms of Pillow's header parsing)."""
MAX_PYTHON_SAMPLES = 1 << 19
"""Samples Pillow may decode in Python (524,288)."""
HEADER_READ = MAX_HEADER_BYTES + 1
"""Bytes of a file `refusal` reads (with its size)."""

# Pillow's magic numbers and how many values a pixel has; which ones take a maxval; the plain (ASCII) ones
_BANDS = {b"P1": 1, b"P2": 1, b"P3": 3, b"P4": 1, b"P5": 1, b"P6": 3, b"P0CMYK": 4, b"Pf": 1, b"PyP": 1,
          b"PyRGBA": 4, b"PyCMYK": 4}
_NO_MAXVAL = frozenset({b"P1", b"P4", b"Pf"})
_PLAIN = frozenset({b"P2", b"P3"})
# a separator as Pillow's `_read_token` skips it: whitespace and comments (to a CR, an LF or the end)
_SKIP = re.compile(rb"(?:[ \t\n\x0b\x0c\r]+|#[^\r\n]*[\r\n]?)*")
_TOKEN_PART = re.compile(rb"[^ \t\n\x0b\x0c\r#]+")
_COMMENT = re.compile(rb"#[^\r\n]*[\r\n]?")


def is_netpbm(head: bytes) -> bool:
    """Whether Pillow's PPM opener takes a file starting with `head`."""
    return len(head) >= 2 and head[:1] == b"P" and head[1] in b"0123456fy"


def _tokens(data: bytes, count: int) -> tuple[list[bytes], int] | None:
    """The first `count` header tokens after the magic number as Pillow reads them (a comment inside a token is
    skipped, the token goes on) and where the data starts (one byte after the last), or None where the header is
    not complete within the data given."""
    tokens: list[bytes] = []
    pos = len(data[:6].split(maxsplit=1)[0]) if data[:6].split() else 0
    for _ in range(count):
        pos = _SKIP.match(data, pos).end()
        token = b""
        while True:
            part = _TOKEN_PART.match(data, pos) or _COMMENT.match(data, pos)  # a comment inside a token: skipped
            if part is None:
                break
            if part.group()[:1] != b"#":
                token += part.group()
            pos = part.end()
        if not token or pos >= len(data):
            return None
        tokens.append(token)
    return tokens, pos + 1


def refusal(head: bytes, size: int) -> str | None:
    """Why a Netpbm file of `size` bytes starting with `head` (its first `HEADER_READ` bytes or all of it) is
    refused (a header longer than `MAX_HEADER_BYTES`, or more than `MAX_PYTHON_SAMPLES` samples for Pillow's
    Python decoders), or None."""
    head = head[:HEADER_READ]
    magic = head[:6].split(maxsplit=1)[0] if head[:6].split() else b""
    bands = _BANDS.get(magic)
    if bands is None:
        return None
    found = _tokens(head, 2 if magic in _NO_MAXVAL else 3)
    if found is None:
        if len(head) > MAX_HEADER_BYTES:
            return (f"Netpbm header longer than {MAX_HEADER_BYTES:,} bytes (Pillow reads comments and whitespace a "
                    "byte at a time: crafted ones cost seconds)")
        return None
    tokens, start = found
    if not all(token.isdigit() for token in tokens[:3]) or magic in _NO_MAXVAL:
        return None
    width, height, maxval = (int(token) for token in tokens)
    if magic in _PLAIN:
        held = (size - start + 1) // 2  # a value and a separator at least
        how = "plain (ASCII)"
    elif maxval == 255 or magic in (b"P5", b"P6") or not 0 < maxval < 65536:
        return None  # decoded in C, binary PGM/PPM samples with numpy (`image.netpbm`), or refused by Pillow
    else:
        per_sample = 1 if maxval < 256 else 2
        held = (size - start) // (per_sample * bands) * bands
        how = f"maxval {maxval}"
    samples = min(width * height * bands, held)
    if samples > MAX_PYTHON_SAMPLES:
        return (f"Netpbm {magic.decode('ascii')} file ({how}) of {width}x{height} pixels whose {samples:,} samples "
                f"Pillow would decode in Python, more than {MAX_PYTHON_SAMPLES:,} (~1 us each); a PNG or TIFF keeps "
                "them and decodes in C: convert it (e.g. `magick FILE.ppm FILE.png`)")
    return None
