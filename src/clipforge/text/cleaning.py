"""Text cleaning and pre-tokenisation exactly as OpenAI's `simple_tokenizer.py` does them.

Both tokenizers share these two functions, so "same ids as the reference" reduces to "same
BPE". The order matters and is kept: ftfy.fix_text, html.unescape twice (entities that were
escaped twice, e.g. `&amp;amp;`, become one character), strip, collapse every run of Unicode
whitespace (the `regex` module's `\\s`) to one space, strip, lower-case.
"""

from __future__ import annotations

import html

import regex

# OpenAI's pattern, flags included: IGNORECASE is redundant after lower() for ASCII but not
# for every Unicode character, so it stays.
WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")

# Characters for which ftfy.fix_text and the double html.unescape provably do nothing:
# printable ASCII except '&' (entities), plus tab and newline. ftfy only rewrites non-ASCII
# text (mojibake, quotes, widths, ligatures, NFC), entities, ESC sequences, \r and control
# characters; all are excluded here. For these strings str.split() splits on exactly the
# characters the `regex` module calls whitespace, so " ".join(s.split()) is the collapse.
_NEEDS_FULL_CLEAN = regex.compile(r"[^\t\n\x20-\x25\x27-\x7e]")


def clean_text_full(text: str) -> str:
    """The reference cleaning, step by step (slow: ftfy dominates the reference's run time).

    ftfy is imported here, not at the top: plain-ASCII prompts never reach this function, and
    importing ftfy (~30 ms) is a noticeable part of a one-query command's start-up.
    """
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = _WHITESPACE.sub(" ", text)
    return text.strip().lower()


def needs_full_clean(text: str) -> bool:
    """True unless `text` is in the plain-ASCII subset where cleaning reduces to split/lower."""
    if not text.isascii() or "&" in text:
        return True
    return not text.isprintable() and _NEEDS_FULL_CLEAN.search(text) is not None


def clean_text(text: str) -> str:
    """Cleaned, whitespace-collapsed, lower-cased text; identical to the reference's result."""
    if needs_full_clean(text):
        return clean_text_full(text)
    return " ".join(text.split()).lower()


def clean_chunks(text: str) -> list[str]:
    """`clean_text(text).split(" ")` without its empty piece, skipping the join on the fast path.

    Cleaned text has single spaces only, and the pre-tokenisation pattern never matches a
    space and looks neither behind nor past one, so splitting a text into these chunks and
    pre-tokenising each one gives the same words in the same order.
    """
    if needs_full_clean(text):
        cleaned = clean_text_full(text)
        return cleaned.split(" ") if cleaned else []
    return text.lower().split()


def split_words(cleaned: str) -> list[str]:
    """Pre-tokenise cleaned text into the pieces that BPE sees one at a time."""
    return WORD_PATTERN.findall(cleaned)


def check_text(text: object, index: int | None = None) -> str:
    """Return `text` if it is a str; otherwise a TypeError that says which item was wrong."""
    if isinstance(text, str):
        return text
    where = "text" if index is None else f"texts[{index}]"
    raise TypeError(f"{where} must be a str, got {type(text).__name__}: {text!r:.60}")
