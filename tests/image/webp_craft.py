"""Hand-written lossless WebP (VP8L) streams for the attack tests: a bit writer and the few codes they need.

Bits are written least significant first and prefix codes first bit first, as libwebp reads them (RFC 9649).
"""

from __future__ import annotations

import io

from PIL import Image


class Bits:
    """An LSB-first bit writer (whole bytes go to a bytearray: one big integer would make writing quadratic)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.value = 0
        self.count = 0

    def put(self, value: int, count: int) -> None:
        self.value |= (value & ((1 << count) - 1)) << self.count
        self.count += count
        while self.count >= 8:
            self.out.append(self.value & 0xFF)
            self.value >>= 8
            self.count -= 8

    def code8(self, symbol: int) -> None:
        """`symbol` in a code where all 256 literals are 8 bits long (canonical code = the symbol itself)."""
        self.put(int(f"{symbol:08b}"[::-1], 2), 8)  # sent first bit first

    def tobytes(self) -> bytes:
        return bytes(self.out) + (bytes([self.value]) if self.count else b"")


def one_symbol(bits: Bits, symbol: int = 0) -> None:
    """A simple code of one symbol: read with no bits at all."""
    bits.put(1, 1)
    bits.put(0, 1)
    if symbol < 2:
        bits.put(0, 1)
        bits.put(symbol, 1)
    else:
        bits.put(1, 1)
        bits.put(symbol, 8)


def two_symbols(bits: Bits, first: int = 0, second: int = 1) -> None:
    """A simple code of two symbols, one bit each."""
    bits.put(1, 1)
    bits.put(1, 1)
    bits.put(1, 1)
    bits.put(first, 8)
    bits.put(second, 8)


def all_literals_8_bits(bits: Bits) -> None:
    """A normal code giving the 256 literals 8 bits each (its code-length code has the one symbol 8)."""
    bits.put(0, 1)
    bits.put(12 - 4, 4)  # 12 code-length code lengths: 17, 18, 0, 1, ..., 8 (the 12th is length 8's)
    for index in range(12):
        bits.put(1 if index == 11 else 0, 3)
    bits.put(1, 1)  # a count of lengths follows: 2 + 254 in 8 bits
    bits.put(3, 3)
    bits.put(254, 8)


def groups_stream(groups_side: int, header: bool = True) -> bytes:
    """A VP8L stream of a (4 x groups_side)-pixel square whose prefix-code image (4x4 blocks) names
    groups_side**2 groups, each of five one-symbol codes: 20 bits a group, no bits a pixel."""
    side = 4 * groups_side
    bits = Bits()
    if header:
        bits.put(0x2F, 8)
        bits.put(side - 1, 14)
        bits.put(side - 1, 14)
        bits.put(0, 4)  # no alpha hint, version 0
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no colour cache
    bits.put(1, 1)  # a prefix-code image follows, blocks of 2 ** (0 + 2)
    bits.put(0, 3)
    bits.put(0, 1)  # ... without a colour cache; green and red 8-bit literals, blue, alpha, distance one symbol
    all_literals_8_bits(bits)
    all_literals_8_bits(bits)
    for _ in range(3):
        one_symbol(bits)
    for group in range(groups_side * groups_side):
        bits.code8(group & 255)  # green
        bits.code8(group >> 8)  # red
    for _ in range(groups_side * groups_side * 5):
        one_symbol(bits)
    return bits.tobytes()


def fine_predictor_stream(side: int) -> bytes:
    """A VP8L stream of a side x side square whose predictor image uses the finest blocks (4x4) and one bit a
    pixel: side**2 / 16 steps for a walk to read past it."""
    bits = Bits()
    bits.put(0x2F, 8)
    bits.put(side - 1, 14)
    bits.put(side - 1, 14)
    bits.put(0, 4)
    bits.put(1, 1)  # a transform: predictor, blocks of 2 ** (0 + 2)
    bits.put(0, 2)
    bits.put(0, 3)
    bits.put(0, 1)  # its image: no colour cache, green of two literals (one bit a pixel), the rest one symbol
    two_symbols(bits, 0, 1)
    for _ in range(4):
        one_symbol(bits)
    for pixel in range((side // 4) ** 2):
        bits.put(pixel & 1, 1)
    bits.put(0, 1)  # no more transforms
    bits.put(0, 1)  # no colour cache
    bits.put(0, 1)  # one group for the picture: every pixel black, no bits
    for _ in range(5):
        one_symbol(bits)
    return bits.tobytes()


def chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(4, "little") + payload + b"\0" * (len(payload) & 1)


def riff(*chunks: bytes) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _size24(value: int) -> bytes:
    return (value - 1).to_bytes(3, "little")


def vp8x(width: int, height: int, flags: int) -> bytes:
    return chunk(b"VP8X", bytes([flags, 0, 0, 0]) + _size24(width) + _size24(height))


def lossy_vp8_chunk(width: int, height: int) -> bytes:
    """The VP8 chunk of a lossy grey picture encoded by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, "WEBP", quality=50)
    data = buffer.getvalue()
    assert data[12:16] == b"VP8 "
    return data[12:]


def lossless_webp(stream: bytes) -> bytes:
    return riff(chunk(b"VP8L", stream))


def alpha_webp(groups_side: int) -> bytes:
    """A lossy WebP whose alpha plane (ALPH, compression 1) is `groups_stream` without its header."""
    side = 4 * groups_side
    alpha = chunk(b"ALPH", bytes([1]) + groups_stream(groups_side, header=False))
    return riff(vp8x(side, side, 0x10), alpha, lossy_vp8_chunk(side, side))


def animated_webp(first: bytes, frames: int = 1, side: int = 64) -> bytes:
    """An animated WebP whose first frame holds the picture chunks `first` (at (0, 0), side x side) and whose
    other frames are small lossy pictures."""
    def frame(picture: bytes) -> bytes:
        return chunk(b"ANMF", bytes(6) + _size24(side) + _size24(side) + (100).to_bytes(3, "little") + b"\0"
                     + picture)
    rest = [frame(lossy_vp8_chunk(side, side))] * (frames - 1)
    return riff(vp8x(side, side, 0x02), chunk(b"ANIM", bytes(4) + b"\0\0"), frame(first), *rest)
