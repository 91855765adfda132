"""JPEG 2000 (a raw codestream or a JP2 file): what OpenJPEG sets up before it decodes a sample, counted first.

OpenJPEG sets a tile up before reading its data: a structure for every code-block (~400 bytes) and, in every
band, for every precinct (~160 bytes with its tag trees), one tile at a time, and it walks every packet (one per
layer, precinct, resolution and component, ~140 ns each) whether the file holds bytes for it or not. The
codestream's header alone decides how many there are, so a file of a hundred bytes can ask for gigabytes.
Measured here (Pillow 12.3, OpenJPEG 2.5.4), against honest RGB encodes of 1 megapixel (0.1-0.4 s of CPU,
20 MB) and 12 megapixels (1.7-2.9 s, 223 MB):

- *Tiny precincts.* Precincts of 2x2 make every code-block 1x1: a 108-byte 1024x1024 file took 2.7 s and 1.7 GB
  (then failed); 4x4 ones, 0.7 s and 430 MB. Code-blocks of 4x4 (the least the standard allows) on 2048x2048:
  0.24 s and 320 MB from 102 bytes.
- *Layers times precincts.* 65,535 layers over the 128x128 precincts of a 1024x1024 picture, 17 million packets
  and no data: 2.4 s and 148 MB from 109 bytes.
- *Tiles.* 65,535 one-pixel tiles (a 255x257 picture): 0.8 s and 760 MB from 1.1 MB (~12 KB a tile).
- *Components.* A JP2 whose header says 3 components and whose codestream says 1,000, in 4,096 tiles: 2.1 s and
  4.3 GB from 3 KB, before Pillow refuses more than 4 (it checks a raw codestream's count itself, at open).

So `refusal` walks the main header and every tile-part header (COD and COC segments set a tile's resolutions,
code-blocks, precincts and layers; OpenJPEG applies them in order, and a tile is counted under every style it
took) and counts tiles, `blocks` (code-blocks plus half a block per precinct of each band) and packets (times the
progression changes of a POC) exactly as OpenJPEG lays them out. It refuses more than `MAX_COMPONENTS`
components; more than `FREE_TILES` tiles of fewer than `MIN_TILE_PIXELS` pixels (32x32: 11,750 of them on a
12-megapixel photo cost 184 MB and 3.2 s, a single tile 223 MB and 2.1 s); blocks beyond one per
`BLOCK_SAMPLES` samples past `FREE_BLOCKS` (at most ~17 bytes of set-up a sample: 8x8 code-blocks, one block per
~60 samples, cost 456 MB and 3.2 s on that photo; 4x4 ones, one per 16, 1.2 GB and 5.4 s, and are refused); and
packets beyond one per `PACKET_SAMPLES` samples past `FREE_PACKETS` (at most ~70 ns a sample). OpenJPEG's encodes
through Pillow of 100 ImageNet photos (every 10th of the shared sample) at the settings nearest the bounds give
at least 33.8 samples a block (precincts of 32, which OpenJPEG halves at each lower resolution down to 1x1) and
6.5 a packet (the same with 20 layers); 4 of them (one scaled to 4000x3000) at 26 settings (lossy rates, 3-20
layers, 1-8 resolutions, every progression order, tiles of 32-1024, code-blocks of 8-64, precincts of 32-256)
are refused only for code-blocks of 4x4 or precincts of 16 (which OpenJPEG then fails to decode). Headers are
walked, never data: ~0.1 ms for a single-tile photo, 1-3 ms for thousands of tiles; a file past `MAX_TILE_PARTS`
tile-parts, `MAX_SEGMENTS` header segments, `MAX_CODING_SEGMENTS` COD, COC and POC segments or `MAX_BOXES` JP2
boxes before its codestream (encoders write a few dozen; OpenJPEG parses 4 MB of them in ~0.3 s) is refused
rather than walked on (~30-60 ms to get there).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BLOCK_SAMPLES", "FREE_BLOCKS", "FREE_PACKETS", "FREE_TILES", "MAGICS", "MAX_BOXES", "MAX_CODING_SEGMENTS",
    "MAX_COMPONENTS", "MAX_SEGMENTS", "MAX_TILE_PARTS", "MIN_TILE_PIXELS", "PACKET_SAMPLES", "Layout", "TooLong",
    "layout", "refusal",
]

CODESTREAM = b"\xff\x4f\xff\x51"  # SOC then SIZ
SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
MAGICS = (CODESTREAM, SIGNATURE)

MAX_COMPONENTS = 4
"""Pillow decodes 1-4 components; OpenJPEG sets up all of them, in every tile, before Pillow can refuse more."""
MIN_TILE_PIXELS = 1024
"""Pixels of a tile (32x32) at least, once there are more than `FREE_TILES`."""
FREE_TILES = 1024
BLOCK_SAMPLES = 24
"""Samples a block must average once there are more than `FREE_BLOCKS` (~400 bytes of OpenJPEG's each)."""
FREE_BLOCKS = 1 << 16
PACKET_SAMPLES = 2
"""Samples a packet must average once there are more than `FREE_PACKETS` (~140 ns of OpenJPEG's each)."""
FREE_PACKETS = 1 << 20
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
_KNOWN = frozenset({0x90, 0x52, 0x53, 0x5E, 0x5C, 0x5D, 0x5F, 0x51, 0x55, 0x57, 0x58, 0x60, 0x61, 0x91, 0x63, 0x64,
                    0x74, 0x78, 0x50, 0x59, 0x75, 0x77})
_KNOWN_UNITS = np.zeros(1 << 16, dtype=bool)
_KNOWN_UNITS[[0xFF00 | marker for marker in _KNOWN]] = True
_MAX_TILES = 65535  # OpenJPEG refuses more
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


@dataclass(frozen=True)
class Layout:
    """What `refusal` bounds: pixels of the picture, samples of all its components, components, tiles and their
    nominal size (those at the right and bottom edges may be cut), blocks (code-blocks plus half a block per
    precinct of each band), packets (times progression changes), tile-parts and header segments. Blocks and
    packets are 0 (and the tile-parts not walked) when the components or tiles are refused already."""

    pixels: int
    samples: int
    components: int
    tiles: int
    tile_size: tuple[int, int]
    blocks: int
    packets: int
    tile_parts: int
    segments: int


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
    raise TooLong(f"JP2 file with more than {MAX_BOXES:,} boxes before its codestream (crafted to cost seconds to "
                  "walk)")


def _next_known(data: memoryview, pos: int) -> int:
    """Where OpenJPEG picks the main header up again after an unknown marker: it ignores the marker's length and
    reads two bytes at a time from `pos` until they are a marker it knows (the data's end where none is)."""
    units = np.frombuffer(data[pos:pos + (len(data) - pos) // 2 * 2], dtype=">u2")
    hits = np.flatnonzero(_KNOWN_UNITS[units])
    return pos + 2 * int(hits[0]) if len(hits) else len(data)


def _segments(data: memoryview, pos: int, seen: tuple[int, int],
              main: bool = False) -> tuple[int, int, list[tuple[int, memoryview]]]:
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
            raise TooLong(f"JPEG 2000 file with more than {MAX_SEGMENTS:,} header segments (crafted to cost seconds "
                          "to walk)")
        if marker not in _KNOWN:
            if not main:
                break
            pos = _next_known(data, pos + 2)
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _WANTED:
            found.append((marker, data[pos + 4:pos + 2 + length]))
            if len(found) > coding_left:
                raise TooLong(f"JPEG 2000 file with more than {MAX_CODING_SEGMENTS:,} COD, COC and POC segments "
                              "(crafted to cost seconds to walk)")
        if length < 2:
            break
        pos += 2 + length
    return end, count, found


def _style(segment: memoryview, at: int, custom_precincts: bool) -> _Style:
    levels = min(segment[at], _MAX_LEVELS)
    block = (segment[at + 1] + 2, segment[at + 2] + 2)
    if not custom_precincts:
        return _Style(levels, block, ((_UNSET_PRECINCT, _UNSET_PRECINCT),) * (levels + 1))
    raw = bytes(segment[at + 5:at + 6 + levels]).ljust(levels + 1, b"\xff")
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
    subsampling = [(max(1, siz[37 + 3 * c]), max(1, siz[38 + 3 * c])) if len(siz) >= 39 + 3 * c else (1, 1)
                   for c in range(min(components, MAX_COMPONENTS + 1))]
    header = _Header(fields[1:5], fields[5:9], components, subsampling,
                     _Coding(1, 1, [_DEFAULT_STYLE] * len(subsampling)))
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
                        coding = header.tiles[index] = _Coding(main.layers, main.progressions, list(main.styles),
                                                               [{style} for style in main.styles])
                    _apply(coding, marker, segment, components)
        if length < 14:  # 0: the last tile-part, which runs to the end of the codestream
            return
        pos += length
    if pos <= end and data[pos] == 0xFF and data[pos + 1] == _SOT:
        raise TooLong(f"JPEG 2000 file with more than {MAX_TILE_PARTS:,} tile-parts (crafted to cost seconds to walk)")


Extent = int | np.ndarray  # one tile's edge along an axis, or every column's (row's)


def _ceil(values: Extent, shift: int) -> Extent:
    return -((-values) >> shift)


def _sum(values: Extent) -> int:
    return int(values.sum()) if isinstance(values, np.ndarray) else values


def _axis(low: Extent, high: Extent, style: _Style, vertical: bool) -> list[tuple[int, ...]]:
    """For tile-components spanning [low, high) along one axis (one tile's, or every column's or row's, summed), at
    each resolution: the precincts across it and the code-blocks across its low band (and, above the lowest
    resolution, its high band), as OpenJPEG lays them out: code-blocks no larger than a band's precincts, which
    are half the resolution's."""
    out = []
    block = style.block[vertical]
    for resolution in range(style.levels + 1):
        level = style.levels - resolution
        precinct = style.precincts[resolution][vertical]
        res_low, res_high = _ceil(low, level), _ceil(high, level)
        present = res_high > res_low
        precincts = _sum(present * (_ceil(res_high, precinct) - (res_low >> precinct)))
        if resolution == 0:
            size = min(block, precinct)
            out.append((precincts, _sum(present * (_ceil(res_high, size) - (res_low >> size)))))
            continue
        size = min(block, max(precinct - 1, 0))
        bands = [precincts]
        for offset in (0, 1 << level):
            band_low, band_high = _ceil(low - offset, level + 1), _ceil(high - offset, level + 1)
            bands.append(_sum((band_high > band_low) * (_ceil(band_high, size) - (band_low >> size))))
        out.append(tuple(bands))
    return out


def _counts(xs: tuple[Extent, Extent], ys: tuple[Extent, Extent], style: _Style) -> tuple[int, int]:
    """(half-blocks, precincts) summed over the tile-components whose extents are `xs` (every column's, or one
    tile's) and `ys` (every row's, or that tile's): a grid's counts are sums of products, so products of sums."""
    half_blocks = precincts = 0
    for across, down in zip(_axis(*xs, style, False), _axis(*ys, style, True), strict=True):
        count = across[0] * down[0]
        precincts += count
        if len(across) == 2:
            half_blocks += 2 * across[1] * down[1] + count
        else:  # HL, LH and HH bands, each with the resolution's precincts
            half_blocks += 2 * (across[2] * down[1] + across[1] * down[2] + across[2] * down[2]) + 3 * count
    return half_blocks, precincts


def _edges(first: int, origin: int, end: int, size: int, count: int, scale: int) -> tuple[Extent, Extent]:
    """The component edges (a `scale`th of the picture's) of `count` tiles of `size` from `first`, clipped to
    [`origin`, `end`): Python integers for one tile, arrays for more."""
    if count == 1:
        return -(-max(first, origin) // scale), -(-min(first + size, end) // scale)
    starts = first + size * np.arange(count, dtype=np.int64)
    return -(-np.maximum(starts, origin) // scale), -(-np.minimum(starts + size, end) // scale)


def _blocks_and_packets(header: _Header) -> tuple[int, int]:
    """Blocks and packets of every tile, each tile counted under every style it took."""
    (x1, y1, x0, y0), (width, height, tile_x, tile_y) = header.size, header.tiling
    across, down = header.grid
    main = header.main
    own = {index: coding for index, coding in header.tiles.items() if index < across * down}
    half_blocks = packets = 0
    for component, (dx, dy) in enumerate(header.subsampling):
        xs, ys = _edges(tile_x, x0, x1, width, across, dx), _edges(tile_y, y0, y1, height, down, dy)
        grid_half_blocks, grid_precincts = _counts(xs, ys, main.styles[component])
        half_blocks += grid_half_blocks
        packets += grid_precincts * main.layers * main.progressions
        for index, coding in own.items():
            one_x = tuple(edge if isinstance(edge, int) else int(edge[index % across]) for edge in xs)
            one_y = tuple(edge if isinstance(edge, int) else int(edge[index // across]) for edge in ys)
            layers = max(coding.layers * coding.progressions, main.layers * main.progressions)
            packets += _counts(one_x, one_y, main.styles[component])[1] * (layers - main.layers * main.progressions)
            for style in coding.taken[component] - {main.styles[component]}:
                extra_half_blocks, extra_precincts = _counts(one_x, one_y, style)
                half_blocks += extra_half_blocks
                packets += extra_precincts * layers
    return half_blocks // 2, packets


def _early_refusal(counts: Layout) -> str | None:
    """Why a codestream is refused for its components or tiles (checked before its tile-parts are walked)."""
    if not 1 <= counts.components <= MAX_COMPONENTS:
        return (f"JPEG 2000 codestream with {counts.components:,} components (Pillow decodes 1 to "
                f"{MAX_COMPONENTS}; OpenJPEG sets every one up, in every tile, before it can be refused)")
    width, height = counts.tile_size
    if counts.tiles > FREE_TILES and width * height < MIN_TILE_PIXELS:
        return (f"JPEG 2000 codestream of {counts.tiles:,} tiles of {width}x{height} pixels, more than "
                f"{FREE_TILES:,} tiles smaller than {MIN_TILE_PIXELS:,} pixels (OpenJPEG sets each tile up, ~12 KB: "
                "crafted ones cost seconds and gigabytes)")
    return None


def layout(data: bytes | bytearray | memoryview) -> Layout | None:
    """What `refusal` bounds in a JPEG 2000 file, or None when it holds no codestream OpenJPEG would set up
    (damaged or cut headers are walked as far as they go). Raises `TooLong` where a walk bound is passed."""
    view = memoryview(data)
    start = _codestream_start(view)
    found = _main_header(view, start) if start is not None and bytes(view[start:start + 4]) == CODESTREAM else None
    if found is None:
        return None
    header, pos = found
    across, down = header.grid
    counts = Layout(header.pixels, header.samples, header.components, across * down, header.tiling[:2], 0, 0, 0,
                    header.segments)
    if across * down > _MAX_TILES or _early_refusal(counts) is not None:
        return counts
    _tile_parts(view, pos, header)
    blocks, packets = _blocks_and_packets(header)
    return dataclasses.replace(counts, blocks=blocks, packets=packets, tile_parts=header.tile_parts,
                               segments=header.segments)


def refusal(data: bytes | bytearray | memoryview) -> str | None:
    """Why this JPEG 2000 file is refused (more components, tiles, blocks or packets than its pixels justify, or
    headers too long to walk), or None."""
    try:
        counts = layout(data)
    except TooLong as refused:
        return str(refused)
    except (IndexError, ValueError, struct.error):
        return None
    if counts is None:
        return None
    early = _early_refusal(counts)
    if early is not None:
        return early
    if counts.blocks > counts.samples // BLOCK_SAMPLES + FREE_BLOCKS:
        return (f"JPEG 2000 codestream laid out in {counts.blocks:,} code-blocks and precincts for "
                f"{counts.samples:,} samples, more than one per {BLOCK_SAMPLES} samples past {FREE_BLOCKS:,} "
                "(OpenJPEG allocates each before decoding: crafted ones cost seconds and gigabytes)")
    if counts.packets > counts.samples // PACKET_SAMPLES + FREE_PACKETS:
        return (f"JPEG 2000 codestream of {counts.packets:,} packets for {counts.samples:,} samples, more than one "
                f"per {PACKET_SAMPLES} samples past {FREE_PACKETS:,} (OpenJPEG walks each, data or none: crafted "
                "layers and precincts cost seconds)")
    return None
