"""JPEG 2000 header walking for `clipforge.image.costly.jp2`: the codestream found, its main header and every
tile-part header read, and the coding each sets (COD, COC and POC segments) applied as OpenJPEG applies them.

Only headers are walked, never data. The walk bounds (`MAX_TILE_PARTS`, `MAX_SEGMENTS`, `MAX_CODING_SEGMENTS`,
`MAX_BOXES`) raise `TooLong` rather than walk on; `jp2` says why each is where it is, counts what the walk found
(`jp2_counts`) and decides the refusal. Every public name here is imported back into `jp2`, where callers take it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CODESTREAM",
    "MAGICS",
    "MAX_BOXES",
    "MAX_CODING_SEGMENTS",
    "MAX_COMPONENTS",
    "MAX_SEGMENTS",
    "MAX_TILE_PARTS",
    "SIGNATURE",
    "TooLong",
]

CODESTREAM = b"\xff\x4f\xff\x51"  # SOC then SIZ
SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
MAGICS = (CODESTREAM, SIGNATURE)

MAX_COMPONENTS = 4
"""Pillow decodes 1-4 components; OpenJPEG sets up all of them, in every tile, before Pillow can refuse more."""
MAX_TILE_PARTS = 1 << 16
MAX_SEGMENTS = 1 << 16
"""Marker segments in the main and tile-part headers (SOT excepted)."""
MAX_CODING_SEGMENTS = 1 << 14
"""COD, COC and POC segments among them (a main header holds one COD and a COC or two; a tile rarely any)."""
MAX_BOXES = 4096

_SOT, _SOD, _EOC = 0x90, 0x93, 0xD9
_SIZ, _COD, _COC, _POC = 0x51, 0x52, 0x53, 0x5F
_MAIN_STOPS = frozenset({_SOT})  # OpenJPEG knows no SOD or EOC there
_TILE_STOPS = frozenset({_SOT, _SOD, _EOC})
_WANTED = frozenset({_SIZ, _COD, _COC, _POC})
# the markers OpenJPEG's decoder has a handler for (`j2k_memory_marker_handler_tab`), SOT and SOP included
# fmt: off
_KNOWN = frozenset({0x90, 0x52, 0x53, 0x5E, 0x5C, 0x5D, 0x5F, 0x51, 0x55, 0x57, 0x58, 0x60, 0x61, 0x91, 0x63, 0x64,
                    0x74, 0x78, 0x50, 0x59, 0x75, 0x77})
# fmt: on
_KNOWN_UNITS = np.zeros(1 << 16, dtype=bool)
_KNOWN_UNITS[[0xFF00 | marker for marker in _KNOWN]] = True
_MAX_LEVELS = 32  # and more decomposition levels
_WIDE_COMPONENTS = 257  # from here component indices take 2 bytes
_UNSET_PRECINCT = 15


class TooLong(Exception):
    """A walk bound passed (too many boxes, tile-parts or header segments); the message says which."""


@dataclass(frozen=True)
class _Style:
    """What a COD or COC sets for a component: decomposition levels, code-block exponents (width, height) and the
    precinct exponents of each resolution, lowest first."""

    levels: int
    block: tuple[int, int]
    precincts: tuple[tuple[int, int], ...]


_DEFAULT_STYLE = _Style(5, (6, 6), ((_UNSET_PRECINCT, _UNSET_PRECINCT),) * 6)


@dataclass
class _Coding:
    """The layers, progression changes and component styles in force in the main header or one tile; for a tile,
    also every style each component took there."""

    layers: int
    progressions: int
    styles: list[_Style]
    taken: list[set[_Style]] = field(default_factory=list)


def _codestream_start(data: memoryview) -> int | None:
    """Where the codestream starts: 0 for a raw one, the first ``jp2c`` box's payload for a JP2 file."""
    if bytes(data[:4]) == CODESTREAM:
        return 0
    if bytes(data[:12]) != SIGNATURE:
        return None
    pos = 0
    for _ in range(MAX_BOXES):
        if pos + 8 > len(data):
            return None
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= len(data):
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = len(data) - pos
        if kind == b"jp2c":
            return pos + header
        if size < header:
            return None
        pos += size
    raise TooLong(
        f"JP2 file with more than {MAX_BOXES:,} boxes before its codestream (crafted to cost seconds to walk)"
    )


def _next_known(data: memoryview, pos: int) -> int:
    """Where OpenJPEG picks the main header up again after an unknown marker: it ignores the marker's length and
    reads two bytes at a time from `pos` until they are a marker it knows (the data's end where none is)."""
    units = np.frombuffer(data[pos : pos + (len(data) - pos) // 2 * 2], dtype=">u2")
    hits = np.flatnonzero(_KNOWN_UNITS[units])
    return pos + 2 * int(hits[0]) if len(hits) else len(data)


def _segments(
    data: memoryview, pos: int, seen: tuple[int, int], main: bool = False
) -> tuple[int, int, list[tuple[int, memoryview]]]:
    """From `pos` to the next SOT (SOD or EOC in a tile-part header), or to the first bytes that are no marker (then
    the data's end): where that is, how many marker segments lie before it, and the SIZ, COD, COC and POC ones among
    them. `seen`: segments and coding segments walked before, counted against `MAX_SEGMENTS` and
    `MAX_CODING_SEGMENTS`. In the `main` header an unknown marker is skipped as OpenJPEG skips it (`_next_known`);
    in a tile-part header OpenJPEG fails on one, and the walk stops there."""
    found: list[tuple[int, memoryview]] = []
    end, count, left, coding_left = len(data), 0, MAX_SEGMENTS - seen[0], MAX_CODING_SEGMENTS - seen[1]
    stops = _MAIN_STOPS if main else _TILE_STOPS
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in stops:
            return pos, count, found
        count += 1
        if count > left:
            raise TooLong(
                f"JPEG 2000 file with more than {MAX_SEGMENTS:,} header segments (crafted to cost seconds "
                "to walk)"
            )
        if marker not in _KNOWN:
            if not main:
                break
            pos = _next_known(data, pos + 2)
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _WANTED:
            found.append((marker, data[pos + 4 : pos + 2 + length]))
            if len(found) > coding_left:
                raise TooLong(
                    f"JPEG 2000 file with more than {MAX_CODING_SEGMENTS:,} COD, COC and POC segments "
                    "(crafted to cost seconds to walk)"
                )
        if length < 2:
            break
        pos += 2 + length
    return end, count, found


def _style(segment: memoryview, at: int, custom_precincts: bool) -> _Style:
    levels = min(segment[at], _MAX_LEVELS)
    block = (segment[at + 1] + 2, segment[at + 2] + 2)
    if not custom_precincts:
        return _Style(levels, block, ((_UNSET_PRECINCT, _UNSET_PRECINCT),) * (levels + 1))
    raw = bytes(segment[at + 5 : at + 6 + levels]).ljust(levels + 1, b"\xff")
    return _Style(levels, block, tuple((value & 15, value >> 4) for value in raw))


def _apply(coding: _Coding, marker: int, segment: memoryview, components: int) -> None:
    """A COD, COC or POC segment applied to `coding` as OpenJPEG applies it (a COD sets every component)."""
    if marker == _COD and len(segment) >= 10:
        coding.layers = max(1, (segment[2] << 8) | segment[3])
        style = _style(segment, 5, bool(segment[0] & 1))
        coding.styles = [style] * components
        for taken in coding.taken:
            taken.add(style)
    elif marker == _COC:
        at = 2 if components >= _WIDE_COMPONENTS else 1
        if len(segment) < at + 6:
            return
        component = int.from_bytes(segment[:at], "big")
        if component < components:
            style = coding.styles[component] = _style(segment, at + 1, bool(segment[at] & 1))
            if coding.taken:
                coding.taken[component].add(style)
    elif marker == _POC:
        coding.progressions = max(1, len(segment) // (9 if components >= _WIDE_COMPONENTS else 7))


@dataclass
class _Header:
    """A codestream's size segment and the codings its headers set."""

    size: tuple[int, int, int, int]  # Xsiz, Ysiz, XOsiz, YOsiz
    tiling: tuple[int, int, int, int]  # XTsiz, YTsiz, XTOsiz, YTOsiz
    components: int
    subsampling: list[tuple[int, int]]  # of the first `MAX_COMPONENTS` + 1 components at most
    main: _Coding
    tiles: dict[int, _Coding] = field(default_factory=dict)
    tile_parts: int = 0
    segments: int = 0
    coding_segments: int = 0

    @property
    def grid(self) -> tuple[int, int]:
        """Tiles across and down."""
        (x1, y1, _, _), (width, height, x0, y0) = self.size, self.tiling
        return -(-(x1 - x0) // width), -(-(y1 - y0) // height)

    @property
    def pixels(self) -> int:
        x1, y1, x0, y0 = self.size
        return (x1 - x0) * (y1 - y0)

    @property
    def samples(self) -> int:
        x1, y1, x0, y0 = self.size
        return sum((-(-x1 // dx) + x0 // dx) * (-(-y1 // dy) + y0 // dy) for dx, dy in self.subsampling)


def _main_header(data: memoryview, start: int) -> tuple[_Header, int] | None:
    """The main header and where its first tile-part starts, or None where OpenJPEG refuses the size segment."""
    pos, count, segments = _segments(data, start + 2, (0, 0), main=True)
    siz = next((segment for marker, segment in segments if marker == _SIZ), None)
    if siz is None or len(siz) < 36:
        return None
    fields = struct.unpack_from(">HIIIIIIIIH", siz)
    (x1, y1, x0, y0), (width, height, tile_x, tile_y), components = fields[1:5], fields[5:9], fields[9]
    if x1 <= x0 or y1 <= y0 or not width or not height or tile_x > x0 or tile_y > y0:
        return None
    subsampling = [
        (max(1, siz[37 + 3 * c]), max(1, siz[38 + 3 * c])) if len(siz) >= 39 + 3 * c else (1, 1)
        for c in range(min(components, MAX_COMPONENTS + 1))
    ]
    header = _Header(
        fields[1:5], fields[5:9], components, subsampling, _Coding(1, 1, [_DEFAULT_STYLE] * len(subsampling))
    )
    header.segments, header.coding_segments = count, len(segments)
    for marker, segment in segments:
        _apply(header.main, marker, segment, len(subsampling))
    return header, pos


def _tile_parts(data: memoryview, pos: int, header: _Header) -> None:
    """Walk the tile-parts from `pos` (each SOT's Psot leads to the next), applying their COD, COC and POC."""
    components, end, sot = len(header.subsampling), len(data) - 14, struct.Struct(">HHHIBBH")
    for _ in range(MAX_TILE_PARTS):
        if pos > end:
            return
        marker, _, index, length, _, _, next_marker = sot.unpack_from(data, pos)
        if marker != 0xFF90:
            return
        header.tile_parts += 1
        if next_marker != 0xFF93:  # not straight to SOD: a tile-part header with segments of its own
            _, count, segments = _segments(data, pos + 12, (header.segments, header.coding_segments))
            header.segments += count
            header.coding_segments += len(segments)
            for marker, segment in segments:
                if marker != _SIZ:
                    coding = header.tiles.get(index)
                    if coding is None:
                        main = header.main
                        coding = header.tiles[index] = _Coding(
                            main.layers,
                            main.progressions,
                            list(main.styles),
                            [{style} for style in main.styles],
                        )
                    _apply(coding, marker, segment, components)
        if length < 14:  # 0: the last tile-part, which runs to the end of the codestream
            return
        pos += length
    if pos <= end and data[pos] == 0xFF and data[pos + 1] == _SOT:
        raise TooLong(
            f"JPEG 2000 file with more than {MAX_TILE_PARTS:,} tile-parts (crafted to cost seconds to walk)"
        )
