"""How many scans a JPEG holds, read from its markers before libjpeg decodes anything.

Each scan of a progressive JPEG walks every block of the picture, and an end-of-band run codes up to
32,767 empty blocks in a few bits, so a scan over a 16-megapixel grey picture is ~31 bytes of file:
a 187 KB file of 4,000 such scans took 4.4 s of CPU to decode here, a 20 MB one would take many
minutes, at a reduced DCT scale too (libjpeg-turbo's report "Two Issues with the JPEG Standard",
LJT-01-003; the libjpeg API that Pillow uses has no scan limit of its own). Ordinary encoders write 1
scan per component set (baseline) or about 10 (progressive: libjpeg's default script has 10 for colour,
6 for grey). `loading` refuses a progressive JPEG with more than `MAX_JPEG_SCANS` scans.

The count follows the markers as libjpeg does: each segment's length is skipped (so bytes that look
like a scan marker inside an EXIF thumbnail or an ICC profile are not counted), and a scan's
entropy-coded data ends at the first 0xFF that is neither stuffing (0xFF00) nor a restart marker.
"""

from __future__ import annotations

import mmap
import re
from typing import IO

__all__ = ["MAX_JPEG_SCANS", "progressive_scans", "stream_scans"]

MAX_JPEG_SCANS = 100
"""Progressive JPEGs with more scans are refused: 10x libjpeg's default script, while decoding at most this
many scans of a picture at the pixel limit stays a fraction of a second a scan set."""

_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOS, _EOI = 0xDA, 0xD9
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn stand alone


def progressive_scans(data: bytes | bytearray | memoryview | mmap.mmap, stop_after: int | None = None) -> int:
    """The number of start-of-scan segments before the end of the first image (counting stops once it
    passes `stop_after`). Damaged or cut data is counted as far as it goes, never raised on: decoding
    says what is wrong with it."""
    count, i, size = 0, 2, len(data)
    while i + 1 < size:
        if data[i] != 0xFF:  # bytes between segments: libjpeg skips to the next marker
            found = _NEXT_MARKER.search(data, i)
            if found is None:
                break
            i = found.start()
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == _EOI:
            break
        if marker in _NO_LENGTH or marker == 0x00:
            i += 2
            continue
        if marker == _SOS:
            count += 1
            if stop_after is not None and count > stop_after:
                break
        if i + 3 >= size:
            break
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
        if marker == _SOS:  # the entropy-coded data runs to the next real marker
            found = _NEXT_MARKER.search(data, i)
            if found is None:
                break
            i = found.start()
    return count


def stream_scans(stream: IO[bytes], stop_after: int | None = None) -> int:
    """`progressive_scans` of a whole seekable file or stream, its position kept. A real file is mapped,
    not read into memory."""
    position = stream.tell()
    try:
        try:
            fileno = stream.fileno()
        except (OSError, AttributeError, ValueError):
            fileno = None
        if fileno is not None:
            try:
                with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as mapped:
                    return progressive_scans(mapped, stop_after)
            except (OSError, ValueError):  # not mappable (a pipe, an empty file): read it
                pass
        stream.seek(0)
        getbuffer = getattr(stream, "getbuffer", None)
        if getbuffer is not None:
            with getbuffer() as view:
                return progressive_scans(view, stop_after)
        return progressive_scans(stream.read(), stop_after)
    finally:
        stream.seek(position)
