"""Chinese-CLIP's tokenizer: BERT's basic tokenizer + greedy WordPiece over the Chinese BERT vocabulary.

Chinese-CLIP's text towers (RoBERTa-wwm-ext, RBT3) read ids from Google's 21,128-token Chinese
BERT vocabulary (`bert_chinese_vocab.txt`, copied from the `cn-clip` 1.6.0 wheel; licences in
`LICENSE.chinese-clip.txt`). A row is ``[CLS] tokens [SEP]`` padded with ``[PAD]`` (id 0) to the
context length, 52 for every published model; the text tower masks the padding and reads the
feature at ``[CLS]``.

What this module decides, and why:
- **Exactly `cn_clip`'s ids.** The weights were trained with `cn_clip.clip.tokenize`, so this is a
  faithful re-implementation of its steps: drop NUL, U+FFFD and Cc/Cf characters, map whitespace
  (incl. Zs) to spaces, put spaces around CJK ideographs (incl. extensions A-E and compatibility
  ideographs), split on whitespace, lower-case and strip combining marks (NFD, drop Mn), split off
  every punctuation character (Unicode P* and all non-alphanumeric ASCII), then greedy
  longest-match WordPiece with ``##`` continuations; a word longer than 200 characters, or one
  with no segmentation, is one ``[UNK]``. Special-token text typed by a user ("[CLS]") is split
  like any other text: users cannot inject control tokens.
- **transformers' `BertTokenizer` gives the same ids** on ordinary text (Chinese, English,
  full-width punctuation, digits, emoji), tested. It runs on the `tokenizers` library, which
  differs from `cn_clip` at a few edges we keep on `cn_clip`'s side: private-use characters
  (dropped there, ``[UNK]`` here), CJK extension E ideographs, characters newer than Python's
  Unicode tables, and words of 101-200 characters (``[UNK]`` there).
- **Length policy as explicit as the English tokenizer's**: a text longer than the context raises
  `TextTooLongError` naming it, unless ``truncate=True``, which keeps the first
  ``context_length - 2`` word pieces and still ends the row with ``[SEP]`` (what `cn_clip` always does).
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from .tokenizer import TextTooLongError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHINESE_CONTEXT_LENGTH", "WORDPIECE_VOCAB_PATH", "WordPieceTokenizer", "get_wordpiece_tokenizer",
    "tokenize_chinese",
]

WORDPIECE_VOCAB_PATH = Path(__file__).resolve().parent / "bert_chinese_vocab.txt"
CHINESE_CONTEXT_LENGTH = 52
"""Chinese-CLIP's context length for every published model (`cn_clip.clip.tokenize`'s default)."""

_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(char: str) -> bool:
    """A CJK ideograph in BERT's sense (each one becomes a word of its own)."""
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_space(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf")


def _is_punct(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def basic_tokenize(text: str, lower_case: bool = True) -> list[str]:
    """BERT's basic tokenizer: cleaned, CJK-split, lower-cased, accent-stripped, punctuation-split words."""
    cleaned = []
    for char in text:
        if char in ("\x00", "\ufffd") or _is_control(char):
            continue
        if _is_space(char):
            cleaned.append(" ")
        elif is_cjk(char):
            cleaned.append(f" {char} ")
        else:
            cleaned.append(char)
    words: list[str] = []
    for word in "".join(cleaned).split():
        if lower_case:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        piece: list[str] = []
        for char in word:
            if _is_punct(char):
                if piece:
                    words.append("".join(piece))
                    piece = []
                words.append(char)
            else:
                piece.append(char)
        if piece:
            words.append("".join(piece))
    # a word may have become empty or gained spaces through lower() (e.g. "İ"): split again as BERT does
    return " ".join(words).split()


class WordPieceTokenizer:
    """Text -> Chinese BERT ids (`encode`) and the padded id rows a Chinese-CLIP text tower takes (`__call__`)."""

    def __init__(self, vocab_path: str | Path = WORDPIECE_VOCAB_PATH, lower_case: bool = True,
                 max_input_chars_per_word: int = 200) -> None:
        lines = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self.vocab: dict[str, int] = {}
        for index, token in enumerate(lines):
            self.vocab.setdefault(token, index)
        self.inverse = {i: t for t, i in self.vocab.items()}
        self.lower_case, self.max_chars = lower_case, max_input_chars_per_word
        try:
            self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
            self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        except KeyError as exc:
            raise ValueError(f"{vocab_path}: not a BERT vocabulary (no {exc.args[0]} token)") from None
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.inverse)

    def _word_ids(self, word: str) -> list[int]:
        if len(word) > self.max_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids

    def tokens(self, text: str) -> list[str]:
        """The word pieces of `text` (no [CLS]/[SEP])."""
        return [self.inverse[i] for i in self.encode(text)]

    def encode(self, text: str) -> list[int]:
        """The ids of `text`'s word pieces, without [CLS]/[SEP] (as `cn_clip`'s tokenizer gives them)."""
        ids: list[int] = []
        for word in basic_tokenize(text, self.lower_case):
            cached = self._cache.get(word)
            if cached is None:
                cached = self._word_ids(word)
                if len(self._cache) < 100_000:
                    self._cache[word] = cached
            ids.extend(cached)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Word pieces joined back (## continuations glued, specials and padding dropped)."""
        specials = {self.pad_id, self.cls_id, self.sep_id}
        out = ""
        for i in ids:
            if int(i) in specials:
                continue
            token = self.inverse.get(int(i), "[UNK]")
            out += token[2:] if token.startswith("##") else (" " + token if out else token)
        return out

    def __call__(self, texts: str | Sequence[str], context_length: int = CHINESE_CONTEXT_LENGTH,
                 truncate: bool = False) -> torch.LongTensor:
        """LongTensor[N, context_length]: ``[CLS]`` ids ``[SEP]`` then ``[PAD]`` (0).

        A text with more than ``context_length - 2`` word pieces raises `TextTooLongError` naming
        it, unless `truncate`, which keeps the first ``context_length - 2`` and ends with ``[SEP]``.
        """
        import torch

        if isinstance(texts, str):
            texts = [texts]
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"context_length must be an int >= 2 (room for [CLS] and [SEP]), got {context_length!r}")
        room = context_length - 2
        out = torch.full((len(texts), context_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {row} is {type(text).__name__}, expected str")
            ids = self.encode(text)
            if len(ids) > room:
                if not truncate:
                    shown = text if len(text) <= 60 else text[:60] + "..."
                    raise TextTooLongError(
                        f"text {row} ({shown!r}) is {len(ids) + 2} word pieces long including [CLS] and [SEP], "
                        f"more than context_length={context_length}; shorten it or pass truncate=True")
                ids = ids[:room]
            out[row, : len(ids) + 2] = torch.tensor([self.cls_id, *ids, self.sep_id], dtype=torch.long)
        return out

    def unknown_fraction(self, text: str) -> float:
        """Share of `text`'s word pieces that are [UNK] (a script the vocabulary cannot represent)."""
        ids = self.encode(text)
        return sum(i == self.unk_id for i in ids) / len(ids) if ids else 0.0


_lock = threading.Lock()


@cache
def _shared() -> WordPieceTokenizer:
    return WordPieceTokenizer()


def get_wordpiece_tokenizer() -> WordPieceTokenizer:
    """The process-wide tokenizer over the packaged vocabulary, built on first use."""
    with _lock:
        return _shared()


def tokenize_chinese(texts: str | Sequence[str], context_length: int = CHINESE_CONTEXT_LENGTH,
                     truncate: bool = False) -> torch.LongTensor:
    """`clipforge.tokenize` for Chinese-CLIP models: see `WordPieceTokenizer.__call__`."""
    return get_wordpiece_tokenizer()(texts, context_length=context_length, truncate=truncate)
