"""Fast CLIP tokenizer: Python cleaning and pre-tokenisation, Rust BPE from `tokenizers`.

Why this split: OpenAI's pre-tokeniser is a `regex`-module pattern with IGNORECASE; the
Oniguruma engine inside `tokenizers` has its own Unicode tables and case rules, so running
the pattern in Rust could silently disagree on rare characters. We therefore clean and
split in Python (the very functions the reference path uses) and hand whole words to the
Rust BPE model (`tokenizers.models.BPE`, built from the same merges), and map the two special
markers to their ids ourselves.

Where the time goes: the reference spends most of its time in ftfy and in per-word Python
work. Here (1) plain-ASCII text skips ftfy (the comment on `cleaning._NEEDS_FULL_CLEAN` says why it is a
no-op there), and (2) ids are memoised per space-separated chunk of cleaned text. The
pre-tokenisation pattern never matches whitespace and has no look-behind, so a text's ids
are exactly the concatenation of its chunks' ids. The new chunks of a whole batch are
collected first; each distinct new word then goes through the Rust BPE once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path

from .cleaning import check_text, clean_chunks, split_words
from .vocab import END_OF_WORD, EOT_TEXT, SOT_TEXT, VOCAB_PATH, BPEVocab, bytes_to_unicode, load_vocab

# A chunk is one word of a caption ("dog," "child's"), so the memo stays small; it is emptied
# when full rather than tracked per entry, which keeps the hot path a single dict lookup.
DEFAULT_CACHE_SIZE = 100_000
_MAX_CACHED_CHUNK = 64


def _build_rust_bpe(vocab: BPEVocab):
    """The Rust BPE model from `tokenizers`, holding OpenAI's merges; words go in one by one."""
    from tokenizers import models

    return models.BPE(
        vocab=dict(vocab.encoder),
        merges=list(vocab.merges),
        end_of_word_suffix=END_OF_WORD,
        continuing_subword_prefix="",
        fuse_unk=False,
    )


class FastTokenizer:
    """OpenAI CLIP's tokenizer with the same ids as `SimpleTokenizer`, several times faster.

    Build it once (`clipforge.text.get_tokenizer()` does) and reuse it: construction reads the
    merges and builds the Rust model (~0.3 s). Safe to share between threads.
    """

    def __init__(self, bpe_path: str | Path = VOCAB_PATH, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        vocab = load_vocab(bpe_path)
        self._bpe = _build_rust_bpe(vocab)
        # UTF-8 bytes (seen as Latin-1 code points) -> BPE's printable stand-ins, one C-level translate.
        self._byte_map = {b: c for b, c in bytes_to_unicode().items()}
        # The pre-tokeniser emits each special marker as a whole word; it is one id, never BPE'd.
        self._specials = {SOT_TEXT: (vocab.encoder[SOT_TEXT],), EOT_TEXT: (vocab.encoder[EOT_TEXT],)}
        self.encoder = vocab.encoder
        self.vocab_size = len(vocab.encoder)
        self._id_bytes_table: list[bytes] | None = None  # built by the first decode, not by every start-up
        self._cache_size = cache_size
        self._chunks: dict[str, tuple[int, ...]] = {}

    def __repr__(self) -> str:
        return f"FastTokenizer(vocab_size={self.vocab_size}, cached_chunks={len(self._chunks)})"

    def _word_ids(self, word: str) -> tuple[int, ...]:
        special = self._specials.get(word)
        if special is not None:
            return special
        mapped = word.encode("utf-8").decode("latin-1").translate(self._byte_map)
        return tuple(token.id for token in self._bpe.tokenize(mapped))

    def _fill(self, chunks: set[str]) -> None:
        """Encode unseen chunks (each distinct word once, in Rust) and add them to the memo."""
        words_of = {chunk: split_words(chunk) for chunk in chunks}
        distinct = dict.fromkeys(chain.from_iterable(words_of.values()))
        word_ids = {w: self._word_ids(w) for w in distinct}
        if len(self._chunks) + len(chunks) > self._cache_size:
            self._chunks = {}
        cache = self._chunks
        for chunk, ws in words_of.items():
            cache[chunk] = (
                word_ids[ws[0]] if len(ws) == 1 else tuple(chain.from_iterable(map(word_ids.__getitem__, ws)))
            )

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no start/end markers); each new word is BPE'd once per batch."""
        lookup = self._chunks.__getitem__
        out: list[list] = []
        retry: list[int] = []
        cold = False  # most texts so far had new chunks: stop trying the memo first, park them all
        for i, text in enumerate(texts):
            if type(text) is str and text.isascii() and text.isprintable() and "&" not in text:
                chunks = text.lower().split()  # clean_chunks' own fast path, inlined: the hot loop
            else:
                chunks = clean_chunks(check_text(text, i))
            if cold:
                out.append(chunks)
                retry.append(i)
                continue
            try:
                out.append(list(chain.from_iterable(map(lookup, chunks))))
            except KeyError:  # some chunk is new: park the chunks, encode all such at once below
                out.append(chunks)
                retry.append(i)
                cold = len(retry) > 32 and 2 * len(retry) > len(out)
        if retry:
            missing = {c for i in retry for c in out[i] if c not in self._chunks}
            self._fill(missing)
            lookup = self._chunks.__getitem__
            for i in retry:
                try:
                    out[i] = list(chain.from_iterable(map(lookup, out[i])))
                except KeyError:  # another thread emptied the memo between _fill and here
                    out[i] = self._encode_uncached(out[i])
            # Very long chunks (a URL, a 10k-letter word) are used once; don't let them pile up.
            for chunk in missing:
                if len(chunk) > _MAX_CACHED_CHUNK:
                    self._chunks.pop(chunk, None)
        return out

    def _encode_uncached(self, chunks: list[str]) -> list[int]:
        return [i for chunk in chunks for w in split_words(chunk) for i in self._word_ids(w)]

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without the start/end markers."""
        return self.encode_batch([check_text(text)])[0]

    @property
    def _id_bytes(self) -> list[bytes]:
        """id -> the raw bytes its symbol stands for ("</w>" kept literally, as the reference does).

        Only decoding reads it, and building it costs about a third of the tokenizer's start-up
        (a one-query `clipforge search` never decodes), so it is made on first use.
        """
        if self._id_bytes_table is None:
            byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
            table = [b""] * self.vocab_size
            for token, index in self.encoder.items():
                table[index] = bytes(byte_decoder[c] for c in token)
            self._id_bytes_table = table
        return self._id_bytes_table

    def decode(self, tokens: Iterable[int]) -> str:
        """Text of `tokens` as the reference decodes it: </w> becomes a space, bad UTF-8 U+FFFD."""
        table = self._id_bytes
        if hasattr(tokens, "tolist"):  # a tensor or array row
            tokens = tokens.tolist()
        ids = [int(t) for t in tokens]
        for t in ids:
            if not 0 <= t < len(table):
                raise ValueError(f"token id {t} is outside the vocabulary (0..{len(table) - 1})")
        raw = b"".join([table[t] for t in ids])
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        """`decode` of each id sequence."""
        return [self.decode(tokens) for tokens in batch]
