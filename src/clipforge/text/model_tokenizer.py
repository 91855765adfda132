"""`tokenize_for` under the name the Chinese-CLIP work first gave it: `clipforge.text.families.tokenize_for`
is the one function (a model that carries its own `tokenizer`, such as Chinese-CLIP's WordPiece, is read
with it; a family's config names its tokenizer; otherwise OpenAI's BPE)."""

from __future__ import annotations

from clipforge.text.families import tokenize_for

__all__ = ["tokenize_for"]
