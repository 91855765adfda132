"""The packaged OpenAI CLIP BPE vocabulary: file location, byte table, merges and ids.

Both tokenizers (pure Python and Rust) are built from the tables made here, so the two
can only disagree in how they apply the merges, never in what the merges are.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

VOCAB_PATH = Path(__file__).resolve().parent / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"

# OpenAI keeps the first 49152 - 256 - 2 merges so that 256 byte tokens, 256 byte+</w>
# tokens, the merges and 2 specials add up to the 49408 rows of the embedding table.
N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 256 * 2 + N_MERGES + 2
SOT_TOKEN = VOCAB_SIZE - 2  # 49406
EOT_TOKEN = VOCAB_SIZE - 1  # 49407


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable character, as GPT-2/CLIP do.

    BPE runs on strings; giving each byte a visible stand-in (printable Latin-1 bytes keep
    their own character, the rest are shifted above U+0100) lets merges work on raw UTF-8
    without ever seeing whitespace or control characters.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    # Insertion order (printable bytes first) is the id order of the 256 byte tokens.
    return table


@dataclass(frozen=True)
class BPEVocab:
    """Merges in rank order and the token -> id table derived from them."""

    merges: list[tuple[str, str]]
    encoder: dict[str, int]
    path: Path

    @property
    def decoder(self) -> dict[int, str]:
        return {i: tok for tok, i in self.encoder.items()}


def _head_lines(path: Path, count: int) -> list[str]:
    """The first `count` lines of a gzipped UTF-8 file, decompressing only as far as they reach.

    OpenAI's file holds 262k merges of which CLIP uses the first 48,894: decompressing and
    decoding only those is about four times faster, and every command that tokenizes pays it.
    """
    blocks: list[bytes] = []
    newlines = 0
    with gzip.open(path, "rb") as fh:
        while newlines < count:
            block = fh.read(1 << 16)
            if not block:
                break
            blocks.append(block)
            newlines += block.count(b"\n")
    lines = b"".join(blocks).split(b"\n", count)
    if len(lines) > count:
        lines.pop()  # the rest of the file, possibly cut inside a character
    return b"\n".join(lines).decode("utf-8").split("\n")


def read_merges(path: str | Path = VOCAB_PATH) -> list[tuple[str, str]]:
    """Read the first N_MERGES merges of a gzipped CLIP merges file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"BPE vocabulary {path} not found; expected OpenAI's bpe_simple_vocab_16e6.txt.gz "
            "(it ships inside clipforge/text/)"
        )
    try:
        lines = _head_lines(path, N_MERGES + 1)
        while lines and not lines[-1].strip():
            lines.pop()  # a trailing newline is not a merge
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"BPE vocabulary {path} is not a gzipped UTF-8 merges file: {exc}") from exc
    body = lines[1 : N_MERGES + 1]  # line 0 is the '#version' header
    if len(body) < N_MERGES:
        raise ValueError(f"BPE vocabulary {path} has {len(body)} merges, expected at least {N_MERGES}")
    merges = [tuple(line.split()) for line in body]
    if any(len(pair) != 2 for pair in merges):  # one C-level pass; the loop below only names the line
        for lineno, (line, pair) in enumerate(zip(body, merges, strict=True), start=2):
            if len(pair) != 2:
                raise ValueError(f"BPE vocabulary {path} line {lineno}: expected 'left right', got {line!r}")
    return merges  # type: ignore[return-value]  # every pair has two parts, checked above


@lru_cache(maxsize=4)
def load_vocab(path: str | Path = VOCAB_PATH) -> BPEVocab:
    """Build OpenAI's token table: bytes, bytes+</w>, one token per merge, then the specials."""
    merges = read_merges(path)
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + END_OF_WORD for c in byte_chars]
    tokens += [a + b for a, b in merges]
    tokens += [SOT_TEXT, EOT_TEXT]
    # dict(zip(...)) like the reference: were a token ever repeated, the later id would win.
    encoder = dict(zip(tokens, range(len(tokens)), strict=True))
    return BPEVocab(merges=merges, encoder=encoder, path=Path(path))
