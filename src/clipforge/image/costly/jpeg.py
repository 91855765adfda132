"""JPEG: scans and segments, counted from the markers before anything decodes the file.

Two shapes of JPEG cost far more to decode than their bytes suggest:

- *Scans.* Each scan of a progressive JPEG walks every block of the picture, and an end-of-band run
  codes up to 32,767 empty blocks in a few bits, so a scan over a 16-megapixel grey picture is ~31 bytes
  of file: a 187 KB file of 4,000 such scans took 4.4 s of CPU to decode here, a 20 MB one would take
  many minutes, at a reduced DCT scale too (libjpeg-turbo's report "Two Issues with the JPEG Standard",
  LJT-01-003; the libjpeg API that Pillow uses has no scan limit of its own). Encoders write 1 scan per
  component set (baseline) or about 10 (progressive: libjpeg's default script has 10 for colour, 6 for
  grey).
- *Segments.* A 4-byte comment or APPn segment is parsed one at a time by Pillow (in Python) and again
  by libjpeg: 4 MB of them took 0.6 s to open and 1.0 s to load, ~10x a photo's decode per byte.
  Photos hold a few dozen (tables, EXIF, ICC chunks, one Huffman table per progressive scan).

`refusal` says why a JPEG goes past `MAX_JPEG_SCANS` or `MAX_JPEG_SEGMENTS` (None within them). The
count follows the markers as libjpeg does: each segment's length is skipped (so bytes that look like a
marker inside an EXIF thumbnail or an ICC profile are not counted), and a scan's entropy-coded data ends
at the first 0xFF that is neither stuffing (0xFF00) nor a restart marker. It stops at the first image's
end (an MPO's other images are never decoded) and as soon as a limit is passed.

Opening a JPEG also loads TIFF directories: its EXIF (the APP1 segments Pillow joins, read for the dpi) and
its MPF index (APP2, every value unpacked); `refusal` checks both with `exif.refusal` (entries sharing one
block, each copied on its own: up to ~90 MB from one 64 KB segment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clipforge.image.costly import exif

__all__ = ["MAGIC", "MAX_JPEG_SCANS", "MAX_JPEG_SEGMENTS", "MarkerCount", "count_markers", "refusal"]

MAX_JPEG_SCANS = 100
"""JPEGs with more scans are refused: 10x libjpeg's default progressive script."""
MAX_JPEG_SEGMENTS = 1000
"""JPEGs with more marker segments (scans included) are refused: photos hold a few dozen."""

MAGIC = b"\xff\xd8\xff"
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOS, _EOI = 0xDA, 0xD9
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn stand alone
_PROGRESSIVE_FRAMES = frozenset({0xC2, 0xC6, 0xCA, 0xCE})  # SOF2, SOF6, SOF10, SOF14
_APP1, _APP2, _EXIF, _MPF = 0xE1, 0xE2, b"Exif\x00\x00", b"MPF\x00"


@dataclass(frozen=True)
class MarkerCount:
    """Scans and segments counted; `exif` and `mpf`: where the payloads of the APP1 EXIF and APP2 MPF segments
    before the first scan lie (start, end), which Pillow reads as TIFF directories when it opens the file."""

    scans: int
    segments: int
    exif: tuple[tuple[int, int], ...] = ()
    mpf: tuple[tuple[int, int], ...] = ()


def count_markers(data: bytes | bytearray | memoryview, max_scans: int | None = None,
                  max_segments: int | None = None) -> MarkerCount:
    """Start-of-scan segments and all segments with a length, up to the first image's end; counting stops
    once either passes its maximum, and at a sequential (baseline) file's first scan: libjpeg refuses a
    second one (measured: "broken data stream"), so its entropy-coded data is not walked. Damaged or cut data
    is counted as far as it goes, never raised on: decoding says what is wrong with it."""
    scans = segments = 0
    progressive = False
    exif_spans: list[tuple[int, int]] = []
    mpf_spans: list[tuple[int, int]] = []
    i, size = 2, len(data)
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
        segments += 1
        progressive = progressive or marker in _PROGRESSIVE_FRAMES
        scans += marker == _SOS
        if marker == _SOS and not progressive:  # libjpeg refuses a sequential file's second scan: done
            break
        if (max_scans is not None and scans > max_scans) or (max_segments is not None and segments > max_segments):
            break
        if i + 3 >= size:
            break
        end = i + 2 + ((data[i + 2] << 8) | data[i + 3])
        if not scans and marker in (_APP1, _APP2):
            prefix = bytes(data[i + 4:i + 10])
            if marker == _APP1 and prefix == _EXIF:
                exif_spans.append((i + 4, min(end, size)))
            elif marker == _APP2 and prefix.startswith(_MPF):
                mpf_spans.append((i + 8, min(end, size)))
        i = end
        if marker == _SOS:  # the entropy-coded data runs to the next real marker
            found = _NEXT_MARKER.search(data, i)
            if found is None:
                break
            i = found.start()
    return MarkerCount(scans, segments, tuple(exif_spans), tuple(mpf_spans))


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this JPEG is refused (too many scans or segments, crafted EXIF or MPF directories), or None."""
    count = count_markers(data, MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS)
    if count.scans > MAX_JPEG_SCANS:
        return (f"JPEG with more than {MAX_JPEG_SCANS} scans (each scan walks the whole picture; such files are "
                f"crafted to take minutes to decode)")
    if count.segments > MAX_JPEG_SEGMENTS:
        return (f"JPEG with more than {MAX_JPEG_SEGMENTS} marker segments (tiny segments crafted to cost "
                f"seconds to parse)")
    return _directory_refusal(data, count)


def _directory_refusal(data: bytes | bytearray | memoryview, count: MarkerCount) -> str | None:
    """`exif.refusal` of the EXIF block Pillow builds (the first APP1 EXIF segment, then each later one without
    its prefix) and of the MPF index it keeps (the last APP2 MPF segment's)."""
    if count.exif:
        view = memoryview(data)
        block = b"".join([view[count.exif[0][0]:count.exif[0][1]],
                          *(view[start + len(_EXIF):end] for start, end in count.exif[1:])])
        refused = exif.refusal(block, "JPEG EXIF")
        if refused is not None:
            return refused
    if count.mpf:
        start, end = count.mpf[-1]
        return exif.refusal(memoryview(data)[start:end], "JPEG MPF index")
    return None
