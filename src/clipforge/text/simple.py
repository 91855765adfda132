"""Pure-Python byte-level BPE: the readable reference that the fast tokenizer is checked against.

Kept deliberately plain (greedy lowest-rank merge, one word at a time) so that anyone can
compare it line by line with the algorithm in the CLIP paper's tokenizer; speed is the job
of `clipforge.text.fast`.
"""

from __future__ import annotations

from pathlib import Path

from .cleaning import check_text, clean_text, split_words
from .vocab import END_OF_WORD, EOT_TEXT, SOT_TEXT, VOCAB_PATH, bytes_to_unicode, load_vocab


def _merge_word(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges to one word: repeatedly join every occurrence of the best-ranked pair."""
    while len(symbols) > 1:
        best_rank, best = None, None
        for pair in zip(symbols, symbols[1:], strict=False):
            rank = ranks.get(pair)
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best = rank, pair
        if best is None:
            break
        first, second = best
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


class SimpleTokenizer:
    """OpenAI CLIP's tokenizer in plain Python: `encode(text) -> ids`, `decode(ids) -> text`."""

    def __init__(self, bpe_path: str | Path = VOCAB_PATH) -> None:
        vocab = load_vocab(bpe_path)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.encoder = vocab.encoder
        self.decoder = vocab.decoder
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(vocab.merges)}
        # The specials are never split: the pre-tokeniser keeps them whole and they map to one id.
        self.cache: dict[str, list[int]] = {s: [self.encoder[s]] for s in (SOT_TEXT, EOT_TEXT)}

    def bpe(self, word: str) -> list[str]:
        """BPE symbols of one pre-tokenised word (already byte-mapped); the last ends in </w>."""
        symbols = list(word)
        symbols[-1] += END_OF_WORD
        return _merge_word(symbols, self.bpe_ranks)

    def _word_ids(self, word: str) -> list[int]:
        ids = self.cache.get(word)
        if ids is None:
            mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids = [self.encoder[s] for s in self.bpe(mapped)]
            self.cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without the start/end markers."""
        ids: list[int] = []
        for word in split_words(clean_text(check_text(text))):
            ids.extend(self._word_ids(word))
        return ids

    def decode(self, tokens: list[int]) -> str:
        """Text of `tokens`; each end-of-word marker becomes a space, bad UTF-8 becomes U+FFFD."""
        try:
            chars = "".join(self.decoder[int(t)] for t in tokens)
        except KeyError as exc:
            raise ValueError(
                f"token id {exc.args[0]} is outside the vocabulary (0..{len(self.decoder) - 1})"
            ) from None
        raw = bytes(self.byte_decoder[c] for c in chars)
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")
