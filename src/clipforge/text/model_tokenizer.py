"""`tokenize_for`: the ids a given model reads, from its own tokenizer when it carries one.

Models of OpenAI's shape read OpenAI's BPE (`clipforge.tokenize`); a model that carries a
`tokenizer` attribute (Chinese-CLIP: `clipforge.text.wordpiece.WordPieceTokenizer`) reads that.
Every task that turns text into ids for a model asks here, so no task hard-codes one vocabulary.
(The model-family framework may move this onto `LoadedModel.tokenizer`; the contract is the same.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["tokenize_for"]


def tokenize_for(model: Any, texts: str | Sequence[str], context_length: int | None = None,
                 truncate: bool = True) -> torch.LongTensor:
    """Ids [N, context_length] for `model` (context: the model's own unless given)."""
    inner = getattr(model, "model", None)
    tokenizer = getattr(model, "tokenizer", None) or getattr(inner, "tokenizer", None)
    length = int(context_length or getattr(model, "context_length", None) or getattr(inner, "context_length", 77))
    if tokenizer is not None and callable(tokenizer):
        return tokenizer(texts, context_length=length, truncate=truncate)
    from clipforge.text.tokenizer import tokenize

    return tokenize(texts, context_length=length, truncate=truncate)
