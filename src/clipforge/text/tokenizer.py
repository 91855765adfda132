"""`tokenize`: texts -> the [N, context_length] id tensor every CLIP text tower takes."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

from clipforge.errors import UserError

from .fast import FastTokenizer
from .vocab import EOT_TOKEN, SOT_TOKEN

if TYPE_CHECKING:
    import torch

_lock = threading.Lock()
_tokenizer: FastTokenizer | None = None


class TextTooLongError(UserError, ValueError, RuntimeError):
    """A text has more tokens than the context allows.

    A ValueError (bad input), and also a RuntimeError because that is what openai/CLIP's
    `clip.tokenize` raises: code written against it keeps catching the same thing.
    """


def get_tokenizer() -> FastTokenizer:
    """The process-wide FastTokenizer, built on first use (not at import: it takes ~0.3 s)."""
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                _tokenizer = FastTokenizer()
    return _tokenizer


def _too_long(text: str, index: int, n_tokens: int, context_length: int) -> TextTooLongError:
    shown = text if len(text) <= 60 else text[:60] + "..."
    return TextTooLongError(
        f"text {index} ({shown!r}) is {n_tokens} tokens long including <|startoftext|> and "
        f"<|endoftext|>, more than context_length={context_length}; shorten it or pass truncate=True"
    )


def text_rows(texts: str | Sequence[str]) -> Sequence[str]:
    """The texts a tokenizer reads: one string is one text; bytes, None and numbers are one TypeError naming
    `texts` (bytes would be read as a list of ints, None as Python's "'NoneType' object is not iterable")."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, bytes | bytearray):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__} "
                        f"{bytes(texts)[:40]!r}: decode it first, e.g. texts.decode('utf-8')")
    if not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    return texts if isinstance(texts, Sequence) else list(texts)


def tokenize(
    texts: str | Sequence[str], context_length: int = 77, truncate: bool = False
) -> torch.LongTensor:
    """Token ids of each text as a zero-padded LongTensor[N, context_length].

    Row layout: <|startoftext|>, the text's tokens, <|endoftext|>, zeros. A text that does not
    fit raises TextTooLongError naming it, unless `truncate` is set, in which case the row is
    cut to context_length and its last position holds <|endoftext|>, because CLIP reads the
    text feature at the end marker (argmax of the ids) and needs it present.
    """
    texts = text_rows(texts)
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
        raise ValueError(
            f"context_length must be an int >= 2 (room for <|startoftext|> and <|endoftext|>), got {context_length!r}"
        )
    encoded = get_tokenizer().encode_batch(texts)
    room = context_length - 2
    kept: list[list[int]] = []
    for i, ids in enumerate(encoded):
        if len(ids) > room:
            if not truncate:
                raise _too_long(texts[i], i, len(ids) + 2, context_length)
            ids = ids[:room]
        kept.append(ids)
    n_rows = len(kept)
    lengths = np.fromiter(map(len, kept), dtype=np.int64, count=n_rows)
    out = np.zeros((n_rows, context_length), dtype=np.int64)
    out[:, 0] = SOT_TOKEN
    cols = np.arange(context_length)[None, :]
    body = (cols >= 1) & (cols <= lengths[:, None])  # row-major: same order as the chained ids
    out[body] = np.fromiter(chain.from_iterable(kept), dtype=np.int64, count=int(lengths.sum()))
    out[np.arange(n_rows), lengths + 1] = EOT_TOKEN
    import torch  # here, so `import clipforge.text` stays light for CLI start-up

    return torch.from_numpy(out)
