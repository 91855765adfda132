"""Text as people type it, checked before anything reads it: the one rule of the command line and the REST API.

Two things are not text to search or classify by, whatever the interface:

- Bytes that are not UTF-8. Python hands a command-line argument typed in a Latin-1 or Shift-JIS terminal (or passed
  by a script in a legacy encoding) over as lone surrogates ("caf\\xe9" -> "caf\\udce9"), and JSON's "\\ud800" escape
  decodes to one. A model read them as U+FFFD ("caf�") and SQLite refused to store them with a bare codec message,
  after a `tag` run had embedded every prompt (audit 63 i18n #5). `unicode_problem` names the byte. Escaped bytes
  that are valid UTF-8 are another matter: a C locale with ``PYTHONUTF8=0`` decodes the command line as ASCII, so
  "猫" typed there arrives as three escaped bytes, which were refused as "not valid UTF-8" from a terminal "not
  UTF-8" (audit 65 portability #2). `typed_text` reads them as UTF-8 first: `check_argument` returns that text,
  which its callers use.
- Text with no visible character: blanks (str.isspace), control characters (Cc: NUL, ESC), format characters (Cf:
  zero-width joiner and space, bidi overrides, the byte-order mark) and the other default-ignorable code points
  (variation selectors, Hangul fillers). A search for "\\u200d" embedded an empty prompt and answered ranked hits
  where "   " was refused (audit 63 i18n #9). `invisible_problem` says which characters it holds.

`check_argument` is the command line's one line for either (naming the flag, exit status 2); the REST API's body
models (`clipforge.server.bodies`) word the same problems with the same functions. Standard library only (besides
`clipforge.errors`): a floor every layer may import.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from clipforge.errors import UsageError

__all__ = ["check_argument", "control_character", "has_visible", "invisible_class", "invisible_problem",
           "typed_text", "unicode_problem"]

_SURROGATE = re.compile("[\ud800-\udfff]")
REQUEST_UNICODE = "not valid Unicode text (an escaped lone surrogate such as \\ud800); send the text as UTF-8"
"""A request's words (`server.errors` says the same of JSON's escapes): there, no terminal is to blame."""
_TERMINAL = ("your terminal's (or script's) encoding is not UTF-8 (Latin-1, Shift-JIS, ...): switch it to UTF-8, or "
             "convert the text with `iconv -t UTF-8`")

# Default-ignorable code points that are neither Cc nor Cf: the combining grapheme joiner, Hangul fillers, Khmer
# inherent vowels, Mongolian free variation selectors, variation selectors; and the blank braille pattern, drawn as
# nothing (a "blank" name's usual trick)
_IGNORABLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0"
                        "\U000e0000-\U000e0fff]")


def typed_text(value: str) -> str:
    """`value` with the bytes Python could not decode (surrogate escapes, U+DC80..U+DCFF) read as UTF-8 where they
    are valid UTF-8: a command line (or a file name) decoded with a locale's codec that is not UTF-8, ASCII in a C
    locale. Other escapes stay as they are (a Latin-1 "caf\\udce9"); in a UTF-8 locale nothing changes, since its
    escapes are never valid UTF-8."""
    if _SURROGATE.search(value) is None:
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (JSON's "\\ud800"): `unicode_problem`
        return value


def unicode_problem(text: str, *, command_line: bool = False) -> str | None:
    """Why `text` is not Unicode text (a lone surrogate), or None when it is.

    On a command line (`command_line`), U+DC80-U+DCFF is the byte Python could not decode: its value and what stands
    before it are named, with the likely cause. Elsewhere (a request) the REST API's words."""
    match = _SURROGATE.search(text)
    if match is None:
        return None
    code = ord(match.group())
    if not command_line:
        return REQUEST_UNICODE
    before = text[:match.start()]
    where = f"after {('...' + before[-20:]) if len(before) > 20 else before!r}" if before else "at its start"
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte itself
        return f"not valid UTF-8 (byte 0x{code - 0xDC00:02x} {where}); {_TERMINAL}"
    return f"not valid Unicode text (a lone surrogate \\u{code:04x} {where}); {_TERMINAL}"


def _invisible(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf") or _IGNORABLE.match(char) is not None


def has_visible(text: str) -> bool:
    """Whether `text` holds a character that is not a blank, a control or format character, or default-ignorable."""
    return not all(map(_invisible, text))


def _named(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X} (a control character)"


def invisible_problem(text: str) -> str | None:
    """What `text` holds when it holds no visible character ("only blanks (...)", "only invisible characters (U+200D
    ZERO WIDTH JOINER)"), or None when it holds one. Blanks alone keep the words the REST API always said."""
    if has_visible(text):
        return None
    if all(char.isspace() for char in text):
        return "only blanks (spaces, tabs or other white space)"
    unseen = list(dict.fromkeys(char for char in text if not char.isspace()))
    more = ", ..." if len(unseen) > 3 else ""
    return f"only invisible characters ({', '.join(map(_named, unseen[:3]))}{more})"


def control_character(text: str, allowed: str = "\t") -> str | None:
    """The first control character (Cc) of `text` that is not in `allowed`, as "U+0000", or None: a NUL or an ESC
    inside a line of a file of prompts went into every prompt."""
    for char in text:
        if char not in allowed and unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X}"
    return None


def check_argument(value: str, flag: str, *, words: bool = False) -> str:
    """`value` of the command-line `flag` as text (`typed_text`: use what it returns) when it is text (and, with
    `words`, holds a visible character: a query, a text to compare, a tag to filter on), else a UsageError of one
    line naming the flag."""
    value = typed_text(value)
    if problem := unicode_problem(value, command_line=True):
        raise UsageError(f"{flag}: {problem}")
    if words and (problem := invisible_problem(value)):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise UsageError(f"{flag} {shown!r}: {problem}: give some words")
    return value


@cache
def invisible_class() -> str:
    """The characters of the Basic Multilingual Plane `has_visible` does not count, blanks left out, as the inside of
    a regular expression's character class (``\\x00-\\x08...``) that Python, ECMA-262 and Rust read alike: the REST
    API publishes it in its patterns. (The supplementary planes' few, tag characters and such, are refused by the
    server's check but cannot be written in such a class.)"""
    ranges: list[list[int]] = []
    for code in range(0x10000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF or char.isspace() or not _invisible(char):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def escape(code: int) -> str:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return "".join(escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in ranges)
