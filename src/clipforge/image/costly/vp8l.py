"""Lossless WebP (VP8L): the groups of prefix codes libwebp builds, counted before it builds them.

A VP8L picture is coded with groups of five prefix codes; a small "prefix-code image" (one pixel per block of
4x4 to 512x512 pixels) names the group of each block, and libwebp allocates the tables of every group it names
up front, whatever the picture's size (`ReadHuffmanCodes`; ~5.7 KB a group measured here, at most 65,536
groups). A 295 KB file of a 1024 x 1024 picture whose prefix-code image names 65,536 groups of one-symbol
codes (20 bits a group) took 373 MB and 0.7-1.8 s of CPU to decode here; a normal 1-megapixel WebP takes
~16 MB. libwebp's encoder keeps that image at most 2,600 pixels (`MAX_HUFF_IMAGE_SIZE`), so it writes at most
2,600 groups: `refusal` refuses a stream naming more than `MAX_GROUPS` (~23 MB of tables). The same stream
codes a lossy WebP's alpha plane (an ALPH chunk, compression 1), without the 5-byte header.

Counting the groups means reading the stream up to and through the prefix-code image: the transforms before it
carry sub-images of their own (predictor modes, colour transforms, a palette) whose end is known only by
decoding them, here in Python, one step per literal pixel, back-reference or cache hit. libwebp's encoder
writes them at most max(2,600, pixels / 256) pixels each, so a walk longer than `MAX_STEPS` + pixels / 64
steps (a few tens of milliseconds plus ~10 ns a picture pixel, below libwebp's own decode) is refused rather
than finished: such a stream codes its small images finer than any encoder, to cost seconds to walk.
"""

from __future__ import annotations

from clipforge.image.costly.prefix_codes import BadStream, BitReader, read_code

__all__ = ["MAX_GROUPS", "MAX_STEPS", "SIGNATURE", "refusal"]

MAX_GROUPS = 4096
"""Groups of prefix codes a stream may name (libwebp's encoder: at most 2,600)."""
MAX_STEPS = 1 << 16
"""Steps of the walk allowed to any stream, on top of one per 64 pixels of its picture."""
SIGNATURE = 0x2F

_LITERALS, _LENGTH_CODES, _DISTANCE_CODES = 256, 24, 40
_PREDICTOR, _CROSS_COLOUR, _COLOUR_INDEXING = 0, 1, 3
_MAX_CACHE_BITS = 11


class _TooLong(Exception):
    """The walk ran out of steps."""


def _subsampled(size: int, bits: int) -> int:
    return (size + (1 << bits) - 1) >> bits


def _copy_value(symbol: int, bits: BitReader) -> int:
    """A back-reference's length or distance code from its prefix symbol and extra bits (libwebp's
    `GetCopyDistance`)."""
    if symbol < 4:
        return symbol + 1
    extra = (symbol - 2) >> 1
    return ((2 + (symbol & 1)) << extra) + bits.read(extra) + 1


def _cache_size(bits: BitReader) -> int:
    if not bits.read(1):
        return 0
    cache_bits = bits.read(4)
    if not 1 <= cache_bits <= _MAX_CACHE_BITS:
        raise BadStream("a colour cache outside 1-11 bits")
    return 1 << cache_bits


class _Walk:
    """One stream's walk: its bits and the steps it has left."""

    def __init__(self, bits: BitReader, steps: int) -> None:
        self.bits = bits
        self.steps_left = steps

    def sub_image(self, width: int, height: int, groups: set[int] | None = None) -> None:
        """Read past an entropy-coded sub-image (libwebp's `DecodeImageStream`, not level 0), adding the group
        each literal pixel names (its red and green bytes) to `groups` when given: every other pixel copies an
        earlier one."""
        bits = self.bits
        cache = _cache_size(bits)
        green = read_code(bits, _LITERALS + _LENGTH_CODES + cache)
        red, blue, alpha = (read_code(bits, _LITERALS) for _ in range(3))
        distance = read_code(bits, _DISTANCE_CODES)
        total, done = width * height, 0
        if green.trivial is not None and green.trivial < _LITERALS and None not in (
                red.trivial, blue.trivial, alpha.trivial):
            if groups is not None:  # every pixel the same literal, read with no bits at all
                groups.add(red.trivial << 8 | green.trivial)
            return
        while done < total:
            self.steps_left -= 1
            if self.steps_left < 0:
                raise _TooLong
            symbol = green.read(bits)
            if symbol < _LITERALS:
                value = red.read(bits) << 8 | symbol
                blue.read(bits)
                alpha.read(bits)
                if groups is not None:
                    groups.add(value)
                done += 1
            elif symbol < _LITERALS + _LENGTH_CODES:
                done += _copy_value(symbol - _LITERALS, bits)
                _copy_value(distance.read(bits), bits)
            else:
                done += 1

    def groups(self, width: int, height: int) -> int:
        """The groups of prefix codes a level-0 stream names: its transforms are read past, then its colour
        cache and prefix-code image (1 group without one)."""
        bits, seen = self.bits, set()
        while bits.read(1):
            kind = bits.read(2)
            if kind in seen:
                raise BadStream("a transform twice")
            seen.add(kind)
            if kind in (_PREDICTOR, _CROSS_COLOUR):
                block = bits.read(3) + 2
                self.sub_image(_subsampled(width, block), _subsampled(height, block))
            elif kind == _COLOUR_INDEXING:
                colours = bits.read(8) + 1
                self.sub_image(colours, 1)
                width = _subsampled(width, 0 if colours > 16 else 1 if colours > 4 else 2 if colours > 2 else 3)
        _cache_size(bits)
        if not bits.read(1):
            return 1
        block = bits.read(3) + 2
        named: set[int] = set()
        self.sub_image(_subsampled(width, block), _subsampled(height, block), named)
        return max(named, default=0) + 1  # libwebp reads the codes of every group up to the largest named


def refusal(stream: bytes | bytearray | memoryview, width: int | None = None, height: int | None = None,
            what: str = "lossless WebP") -> str | None:
    """Why this VP8L stream is refused (too many groups of prefix codes, or too long to walk), or None.

    With `width` and `height` the stream has no header (an alpha plane's, sized by its frame); without them
    it starts with the signature byte and the picture's size. Streams libwebp would reject are left to it."""
    bits = BitReader(stream)
    try:
        if width is None or height is None:
            if bits.read(8) != SIGNATURE:
                return None
            width, height = bits.read(14) + 1, bits.read(14) + 1
            bits.read(1)
            if bits.read(3):
                return None
        budget = MAX_STEPS + width * height // 64
        count = _Walk(bits, budget).groups(width, height)
    except BadStream:
        return None
    except _TooLong:
        return (f"{what} whose transform and prefix-code images take more than {budget:,} steps to read (coded "
                f"finer than encoders write them: crafted to cost seconds to walk)")
    if count > MAX_GROUPS:
        return (f"{what} naming {count:,} groups of prefix codes, more than {MAX_GROUPS:,} (libwebp builds every "
                f"group's tables up front, ~6 KB each whatever the picture's size: crafted to cost hundreds of "
                f"megabytes; encoders write at most 2,600)")
    return None
