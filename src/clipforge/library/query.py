"""Query arithmetic: ``"cat" + photo.jpg - "grass"``, with optional weights ``2:"cat"``.

CLIP embeddings add meaningfully: "this photo, but more like a cat, less like grass" is a
weighted sum of unit vectors, renormalised. The grammar is small on purpose:

    query := [sign] term (sign term)*
    sign  := "+" | "-"            (an operator stands alone: whitespace, a quote or a weight after it)
    term  := [weight ":"] atom    (weight: a non-negative number such as 2 or 0.5, not before a lone number)
    atom  := "quoted text" | 'quoted text' | image:PATH | text:WORDS | bare words

Quoted atoms are text. A bare atom is an image only when it unmistakably names one: it ends in an image
extension (``sofa.jpg``), or it is a path (a separator or a leading ``~``: ``./scan0001``, ``~/x``) of an
existing file. Anything else is text, so a plain ``a dog on the beach`` is one text term, and so is ``cat``
even beside a file named ``cat`` (it was an image search then, silently; `QueryTerm.bare` lets the CLI say
that ``image:cat`` searches by that file).
The quotes a Chinese input method types for ``"`` and ``'`` quote too: ``“猫” - “草地”`` is
``"猫" - "草地"`` (also ``‘…’``, ``「…」``, ``『…』`` and the full-width ``＂…＂``), so they do not stay in
the text (Chinese-CLIP's vocabulary has no “ or ”: they became [UNK]). Such quotes inside words
(``一只叫“咪咪”的猫``, ``“福”字灯笼``), followed by more words (``“Starry Night” painting``: an editor's curly
quotes) are part of a text, as they are in writing. One that opens a term and is never closed (``“cat``,
``「猫``) is an unterminated quote, as ``"cat`` is; one left open before an operator (``“猫 - 狗``) stays text.
ASCII quotes among words are text the same way (``a painting called "Starry Night"``, ``rock 'n' roll band``,
``"Starry Night" painting``, a photo named ``with space & 'quote'.jpg``): they were refused ("expected + or -
before the quoted term") where the curly ones were searched. An ASCII quote quotes a term where arithmetic is
plainly meant: after an operator, a weight or a prefix (``- "grass"``, ``2:"cat"``, ``image:"my photo.jpg"``), or
as the whole first term (``"cat" + ...``); a quoted pair among words keeps an operator inside it in the text (``a
sign saying "rock - paper"``). What stays ambiguous (two quoted terms side by side, words after a quoted term that
follows an operator, an unclosed quote) is refused in one line that names the ways out: ``text:"..."``,
``image:"..."`` or ``--image``. An apostrophe before a letter or digit that no later ``'`` closes opens nothing
(``'90s fashion``, ``'tis the season``): it was refused as an unterminated quote.
``image:"my photo.jpg"`` forces an image (paths with spaces), ``text:photo.jpg`` forces text.
A hyphen inside words (``black-and-white``) is never an operator. ``N:`` before a number standing alone is text,
not a weight: a time or a ratio (``10:30 meeting``, ``12:30pm``, ``16:9 screen``) lost its first number as a weight,
silently;
before a word that starts with a digit it is a weight (``2:3d render``, ``2:1980s car``). A sign glued to
a weight is an operator, as one glued to a quote is: ``-2:cat`` subtracts as ``cat - 2:dog`` does (it was the
text "-2:cat").
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from clipforge.errors import UserError
from clipforge.text.typed import typed_text

__all__ = ["QueryError", "QueryTerm", "combine_terms", "looks_like_path", "parse_query"]

# `10:30`, `12:30pm`, `16:9`: a time, a ratio, not a weight; `2:3d render`, `2:1980s car`: a weight on a word that
# starts with a digit (the number after the colon runs into letters other than am/pm)
_WEIGHT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*[:\uff1a](?!\d[\d.:\uff1a]*(?:[aApP]\.?[mM]\.?)?(?!\w))")
_PLUS, _MINUS = "+\uff0b", "-\uff0d"
"""The signs, ASCII and full-width (＋ －, as a Chinese or Japanese input method types them, with ： for a weight's
colon and any script's digits): `２：猫` was searched as the text "２：猫" while `２:猫` was a weight. A full-width
sign is an operator only before a quote or a weight (`「猫」－「草」`, `猫 －2：狗`): between words it is how a
route, a range or a subtitle is written (`北京 － 上海 － 广州`, `ドラえもん － のび太の恐竜`), text."""
_SIGNS = _PLUS + _MINUS
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u300c": "\u300d", "\u300e": "\u300f",
           "\uff02": "\uff02"}
"""Opening quote -> its closing one: ASCII, and what a Chinese input method types (“” ‘’ 「」 『』 ＂＂)."""
_PREFIX = re.compile(r"(image|img|text)[:\uff1a]", re.IGNORECASE)
_WAY_OUT = 'put + or - between terms, or search it all as one text with text:"..." (a photo: image:"..." or --image)'
_UNCLOSED = 'close it, or search the words as typed with text:"..." (a photo: image:"..." or --image)'
"""What an error about quotes ends with: the ways out of an ambiguous query (the line named none)."""


class QueryError(UserError, ValueError):
    """A query string that does not follow the grammar; the message points at the position."""


@dataclass(frozen=True)
class QueryTerm:
    weight: float  # signed
    kind: str      # "text" or "image"
    value: str
    bare: bool = field(default=False, compare=False, repr=False)  # typed without quotes or a prefix


def looks_like_path(value: str) -> bool:
    """Whether a bare atom is spelled as a path: a separator in it (``~/x`` arrives expanded), or a leading ``~``."""
    return any(sep and sep in value for sep in (os.sep, os.altsep)) or value.startswith("~")


def _default_is_image(value: str) -> bool:
    from clipforge.image.formats import is_image_path

    return is_image_path(value) or (looks_like_path(value) and os.path.isfile(value))


def _fail(query: str, pos: int, what: str, way_out: str = "") -> QueryError:
    """One line that quotes the query from the problem on: the caret under the query was a second and third
    line, which the CLI's one-line errors joined into `... '"cat" +' "cat" + ^` (the caret under nothing)."""
    rest = query[pos:]
    where = "at its end" if not rest.strip() else f"at {rest[:24]!r}" + (" ..." if len(rest) > 24 else "")
    return QueryError(f"{what} at position {pos} in query {query!r} ({where})" + (f": {way_out}" if way_out else ""))


def _is_operator(query: str, pos: int, after_quote: bool = False) -> bool:
    """A +/- followed by whitespace, a quote, a weight (`-2:cat`, as `-"cat"`), or the end of the query; a
    full-width one (`_PLUS`) only before a quote or a weight, or `after_quote` (a quoted term before it)."""
    if query[pos] not in _SIGNS:
        return False
    after = pos + 1
    if query[pos] not in "+-" and not after_quote:  # full-width: only where arithmetic is plain
        while after < len(query) and query[after].isspace():
            after += 1
        return after < len(query) and (query[after] in _QUOTES or _WEIGHT.match(query, after) is not None)
    return (after == len(query) or query[after].isspace() or query[after] in _QUOTES
            or _WEIGHT.match(query, after) is not None)


def _read_quoted(query: str, pos: int) -> tuple[str, int]:
    quote = _QUOTES[query[pos]]  # the closing quote
    out: list[str] = []
    i = pos + 1
    while i < len(query):
        ch = query[i]
        if ch == "\\" and i + 1 < len(query) and query[i + 1] in (quote, "\\"):
            out.append(query[i + 1])
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise _fail(query, pos, "unterminated quote", _UNCLOSED)


def _quoted_words_end(query: str, pos: int) -> int | None:
    """Where an ASCII-quoted stretch among words that opens at `pos` ends (after its closing quote), or None: it
    opens at a word's start and closes at a word's end (`'n'`, `"rock - paper"`, `'quote'.jpg`), so an
    apostrophe (`it's`, `dogs'`) opens or closes nothing, and an operator inside the stretch is text."""
    if pos > 0 and query[pos - 1].isalnum():
        return None
    close = query.find(query[pos], pos + 1)
    while close >= 0 and close + 1 < len(query) and query[close + 1].isalnum():
        close = query.find(query[pos], close + 1)
    return close + 1 if close >= 0 else None


def _is_elision(query: str, pos: int) -> bool:
    """An apostrophe at `pos` that opens no quote: ``'90s fashion``, ``'tis the season``, ``rock 'n roll`` (a letter
    or digit follows it and nothing later closes it: no ``'``, or for the ``‘`` smart punctuation types there, no
    ``’``). These were refused as an unterminated quote."""
    closing = {"'": "'", "\u2018": "\u2019"}.get(query[pos])
    return (closing is not None and pos + 1 < len(query) and query[pos + 1].isalnum()
            and query.find(closing, pos + 1) < 0)


def _read_bare(query: str, pos: int, arithmetic: bool = False) -> tuple[str, int]:
    """Words up to an operator that stands alone (whitespace before it) or the end; `arithmetic` (terms came
    before): a full-width sign standing alone is an operator too, as the one before this term was (review 63:
    `「猫」 － 草 － 花` subtracted 草 but kept "草 － 花" whole)."""
    i = pos
    while i < len(query):
        if query[i] in "\"'":  # quoted words in a text, as curly ones: `a painting called "Starry Night"`
            end = _quoted_words_end(query, i)
            if end is not None:
                i = end
                continue
        if query[i].isspace():
            j = i
            while j < len(query) and query[j].isspace():
                j += 1
            if j < len(query) and _is_operator(query, j, after_quote=arithmetic):
                break
            i = j
            continue
        i += 1
    return query[pos:i].strip(), i


def parse_query(query: str, is_image: Callable[[str], bool] | None = None) -> list[QueryTerm]:
    """Parse `query` into signed, weighted text/image terms (see module docstring)."""
    is_image = is_image or _default_is_image
    terms: list[QueryTerm] = []
    pos, n = 0, len(query)
    while True:
        while pos < n and query[pos].isspace():
            pos += 1
        if pos >= n:
            break
        sign = 1.0
        arithmetic = bool(terms)  # an operator, a weight or a prefix before a quote: it quotes a term
        if terms:
            if query[pos] not in _SIGNS:
                raise _fail(query, pos, "expected + or - between terms", _WAY_OUT)
            sign = 1.0 if query[pos] in _PLUS else -1.0
            pos += 1
        elif _is_operator(query, pos):
            arithmetic = True
            sign = 1.0 if query[pos] in _PLUS else -1.0
            pos += 1
        while pos < n and query[pos].isspace():
            pos += 1
        if pos >= n:
            raise _fail(query, pos, "expected a term after the operator")
        weight = 1.0
        match = _WEIGHT.match(query, pos)
        if match:
            weight = float(match.group(1))
            arithmetic = True
            pos = match.end()
            while pos < n and query[pos].isspace():
                pos += 1
        forced = None
        match = _PREFIX.match(query, pos)
        if match:
            forced = "text" if match.group(1).lower() == "text" else "image"
            arithmetic = True
            pos = match.end()
        if pos >= n:
            raise _fail(query, pos, "expected a term")
        quoted = None
        if _is_elision(query, pos):
            pass  # words, read bare below
        elif query[pos] in "\"'":
            quoted = _read_quoted(query, pos)
            after = quoted[1]
            while after < n and query[after].isspace():
                after += 1
            if not arithmetic and after < n and not _is_operator(query, after, after_quote=True):  # words begin quoted
                if query[after] in "\"'":  # `"cat" "dog"`: two quoted terms, no operator between
                    raise _fail(query, after, "expected + or - between terms", _WAY_OUT)
                quoted = None  # words follow (`"Starry Night" painting`): one text, as with curly quotes
        elif query[pos] in _QUOTES:  # a Chinese quote: a term when an operator or the end follows its close
            closing = query.find(_QUOTES[query[pos]], pos + 1)
            after = closing + 1
            while 0 < after < n and query[after].isspace():
                after += 1
            if closing > 0 and (after == n or _is_operator(query, after, after_quote=True)):
                quoted = _read_quoted(query, pos)  # else words follow (“福”字灯笼, “Starry Night” painting: typed
                # as text, not as grammar) or it is left open before an operator: part of a text
            elif closing < 0 and _read_bare(query, pos)[1] == n:  # “cat: never closed, as "cat
                raise _fail(query, pos, "unterminated quote", _UNCLOSED)
        if quoted is not None:
            value, pos = quoted
            kind = forced or "text"
        else:
            value, pos = _read_bare(query, pos, arithmetic=bool(terms))
            kind = forced or ("image" if is_image(os.path.expanduser(value)) else "text")
        if not value:
            raise _fail(query, pos, "empty term")
        if kind == "image":  # the shell leaves `~` alone inside the query's quotes: expand it here
            value = os.path.expanduser(value)
        else:  # UTF-8 a C locale's command line left as escaped bytes is text (`text.typed.typed_text`)
            value = typed_text(value)
        terms.append(QueryTerm(sign * weight, kind, value, bare=quoted is None and forced is None))
    if not terms:
        raise QueryError("empty query: give some text, an image, or both")
    return terms


def combine_terms(terms: Sequence[QueryTerm], encode_texts: Callable[[list[str]], np.ndarray],
                  encode_images: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """normalize(sum of weight * unit embedding): the query vector for the terms."""
    texts = [t for t in terms if t.kind == "text"]
    images = [t for t in terms if t.kind == "image"]
    parts: list[np.ndarray] = []
    if texts:
        parts.append(np.asarray([t.weight for t in texts], np.float32) @ encode_texts([t.value for t in texts]))
    if images:
        parts.append(np.asarray([t.weight for t in images], np.float32) @ encode_images([t.value for t in images]))
    vector = np.sum(parts, axis=0)
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise QueryError("the query terms cancel out (their weighted sum is zero)")
    return (vector / norm).astype(np.float32)
