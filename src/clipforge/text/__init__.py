"""OpenAI CLIP's byte-level BPE tokenizer: `tokenize`, a fast Rust-backed path and the pure-Python reference.

The vocabulary (`bpe_simple_vocab_16e6.txt.gz`, MIT, OpenAI; licence beside it) ships inside
this package. Importing is cheap: the fast tokenizer is built on the first `tokenize` or
`get_tokenizer()` call.
"""

from .cleaning import clean_text
from .families import ModelTokenizer, build_tokenizer, tokenize_for, tokenizer_of
from .fast import FastTokenizer
from .simple import SimpleTokenizer
from .tokenizer import TextTooLongError, get_tokenizer, tokenize
from .vocab import EOT_TEXT, EOT_TOKEN, SOT_TEXT, SOT_TOKEN, VOCAB_PATH, VOCAB_SHA256, VOCAB_SIZE

__all__ = [
    "EOT_TEXT",
    "EOT_TOKEN",
    "SOT_TEXT",
    "SOT_TOKEN",
    "VOCAB_PATH",
    "VOCAB_SHA256",
    "VOCAB_SIZE",
    "FastTokenizer",
    "ModelTokenizer",
    "SimpleTokenizer",
    "TextTooLongError",
    "build_tokenizer",
    "clean_text",
    "get_tokenizer",
    "tokenize",
    "tokenize_for",
    "tokenizer_of",
]
