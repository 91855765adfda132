"""How OpenJPEG lays a JPEG 2000 codestream out: the blocks and packets of every tile, from a walked header.

`jp2_header` walks the headers into a `_Header`; this module counts, per component and tile, the code-blocks
and precincts of every band at every resolution (whole tile grids at once, as sums of products) and the packets
they make, each tile counted under every style it took. `jp2.layout` asks `_blocks_and_packets` and `jp2.refusal`
bounds the answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clipforge.image.costly.jp2_header import _Header, _Style

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
            packets += _counts(one_x, one_y, main.styles[component])[1] * (
                layers - main.layers * main.progressions
            )
            for style in coding.taken[component] - {main.styles[component]}:
                extra_half_blocks, extra_precincts = _counts(one_x, one_y, style)
                half_blocks += extra_half_blocks
                packets += extra_precincts * layers
    return half_blocks // 2, packets
