"""The bit reader and canonical prefix (Huffman) codes of a lossless WebP (VP8L) bitstream, read as libwebp reads them.

`clipforge.image.costly.vp8l` walks the first part of a VP8L stream (its transforms and its prefix-code
image) to learn how many groups of prefix codes libwebp would build; that takes reading prefix codes
the way libwebp does (RFC 9649, section 3.7): bits least significant first, a code either "simple" (one or
two symbols spelled out) or "normal" (code lengths, themselves prefix-coded), canonical codes assigned by
length then symbol, and only complete codes accepted. Anything libwebp would reject raises `BadStream`:
the walk then stops and leaves the file to the decoder, which refuses it with its own error.
"""

from __future__ import annotations

__all__ = ["BadStream", "BitReader", "PrefixCode", "read_code"]

_CODE_LENGTH_ORDER = (17, 18, 0, 1, 2, 3, 4, 5, 16, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
_REPEAT_EXTRA_BITS = (2, 3, 7)  # code-length symbols 16, 17, 18
_REPEAT_OFFSET = (3, 3, 11)
_DEFAULT_LENGTH = 8  # what symbol 16 repeats before any non-zero length was read


class BadStream(ValueError):
    """The stream is cut or breaks a rule that libwebp enforces: the decoder will refuse it itself."""


class BitReader:
    """Bits of `data` least significant first, as libwebp's `VP8LReadBits` reads them; reading past the end
    raises `BadStream` (libwebp's end-of-stream error)."""

    __slots__ = ("_data", "_end", "position")

    def __init__(self, data: bytes | bytearray | memoryview, position: int = 0) -> None:
        self._data = bytes(data)
        self._end = len(self._data) * 8
        self.position = position

    def peek(self, count: int) -> int:
        """The next `count` (at most 25) bits without consuming them; zeros past the end."""
        byte = self.position >> 3
        window = int.from_bytes(self._data[byte:byte + 4], "little")
        return (window >> (self.position & 7)) & ((1 << count) - 1)

    def skip(self, count: int) -> None:
        self.position += count
        if self.position > self._end:
            raise BadStream("the stream ends inside its prefix codes")

    def read(self, count: int) -> int:
        """The next `count` bits as an integer (count <= 25)."""
        value = self.peek(count)
        self.skip(count)
        return value


class PrefixCode:
    """A canonical prefix code as a lookup table over its longest code's bits (codes arrive first bit first).

    `trivial` is the symbol of a one-symbol code, which libwebp reads with no bits at all, else None."""

    __slots__ = ("_bits", "_table", "trivial")

    def __init__(self, lengths: list[int]) -> None:
        used = [(length, symbol) for symbol, length in enumerate(lengths) if length]
        if not used:
            raise BadStream("a prefix code without symbols")
        self.trivial = used[0][1] if len(used) == 1 else None
        self._bits = max(length for length, _ in used)
        self._table: list[int] = []
        if self.trivial is not None:
            return
        if sum(1 << (self._bits - length) for length, _ in used) != 1 << self._bits:
            raise BadStream("an incomplete or over-subscribed prefix code")
        table = [0] * (1 << self._bits)
        code = 0
        previous = 0
        for length, symbol in sorted(used):
            code <<= length - previous
            previous = length
            reversed_code = int(f"{code:0{length}b}"[::-1], 2)
            table[reversed_code::1 << length] = [symbol << 4 | length] * (1 << (self._bits - length))
            code += 1
        self._table = table

    def read(self, bits: BitReader) -> int:
        """The next symbol of `bits`."""
        if self.trivial is not None:
            return self.trivial
        entry = self._table[bits.peek(self._bits)]
        bits.skip(entry & 15)
        return entry >> 4


def _code_lengths(bits: BitReader, alphabet: int) -> list[int]:
    """The code lengths of a normal code: a code-length code, then up to `alphabet` lengths coded with it."""
    order_lengths = [0] * len(_CODE_LENGTH_ORDER)
    for index in range(bits.read(4) + 4):
        order_lengths[_CODE_LENGTH_ORDER[index]] = bits.read(3)
    length_code = PrefixCode(order_lengths)
    tokens = alphabet
    if bits.read(1):
        tokens = 2 + bits.read(2 + 2 * bits.read(3))
        if tokens > alphabet:
            raise BadStream("more code lengths than symbols")
    lengths = [0] * alphabet
    symbol, previous = 0, _DEFAULT_LENGTH
    while symbol < alphabet and tokens:
        tokens -= 1
        value = length_code.read(bits)
        if value < 16:
            lengths[symbol] = value
            symbol += 1
            previous = value or previous
            continue
        slot = value - 16
        repeat = bits.read(_REPEAT_EXTRA_BITS[slot]) + _REPEAT_OFFSET[slot]
        if symbol + repeat > alphabet:
            raise BadStream("code lengths repeated past the alphabet")
        lengths[symbol:symbol + repeat] = [previous if slot == 0 else 0] * repeat
        symbol += repeat
    return lengths


def read_code(bits: BitReader, alphabet: int) -> PrefixCode:
    """One prefix code over `alphabet` symbols (libwebp's `ReadHuffmanCode`)."""
    if bits.read(1):  # simple: one or two symbols, each of length 1
        count = bits.read(1) + 1
        lengths = [0] * alphabet
        first = bits.read(8 if bits.read(1) else 1)
        symbols = [first] + ([bits.read(8)] if count == 2 else [])
        if max(symbols) >= alphabet:
            raise BadStream("a symbol outside its alphabet")
        for symbol in symbols:
            lengths[symbol] = 1
        return PrefixCode(lengths)
    return PrefixCode(_code_lengths(bits, alphabet))
