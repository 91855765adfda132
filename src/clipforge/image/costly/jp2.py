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

The walk lives in `jp2_header` (the codestream found, its headers read, the codings applied) and the counting
in `jp2_counts` (blocks and packets of every tile); this module holds the bounds, `layout` and `refusal`, and
imports back every name callers take from it.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from clipforge.image.costly.jp2_counts import _blocks_and_packets
from clipforge.image.costly.jp2_header import (
    CODESTREAM,
    MAGICS,
    MAX_BOXES,
    MAX_CODING_SEGMENTS,
    MAX_COMPONENTS,
    MAX_SEGMENTS,
    MAX_TILE_PARTS,
    TooLong,
    _codestream_start,
    _main_header,
    _tile_parts,
)

__all__ = [
    "BLOCK_SAMPLES", "FREE_BLOCKS", "FREE_PACKETS", "FREE_TILES", "MAGICS", "MAX_BOXES", "MAX_CODING_SEGMENTS",
    "MAX_COMPONENTS", "MAX_SEGMENTS", "MAX_TILE_PARTS", "MIN_TILE_PIXELS", "PACKET_SAMPLES", "Layout", "TooLong",
    "layout", "refusal",
]

MIN_TILE_PIXELS = 1024
"""Pixels of a tile (32x32) at least, once there are more than `FREE_TILES`."""
FREE_TILES = 1024
BLOCK_SAMPLES = 24
"""Samples a block must average once there are more than `FREE_BLOCKS` (~400 bytes of OpenJPEG's each)."""
FREE_BLOCKS = 1 << 16
PACKET_SAMPLES = 2
"""Samples a packet must average once there are more than `FREE_PACKETS` (~140 ns of OpenJPEG's each)."""
FREE_PACKETS = 1 << 20
_MAX_TILES = 65535  # OpenJPEG refuses more


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
