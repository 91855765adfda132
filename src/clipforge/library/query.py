"""Query arithmetic: ``"cat" + photo.jpg - "grass"``, with optional weights ``2:"cat"``.

CLIP embeddings add meaningfully: "this photo, but more like a cat, less like grass" is a
weighted sum of unit vectors, renormalised. The grammar is small on purpose:

    query := [sign] term (sign term)*
    sign  := "+" | "-"            (an operator stands alone: whitespace or a quote after it)
    term  := [weight ":"] atom    (weight: a non-negative number such as 2 or 0.5)
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
``image:"my photo.jpg"`` forces an image (paths with spaces), ``text:photo.jpg`` forces text.
A hyphen inside words (``black-and-white``) is never an operator.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from clipforge.errors import UserError

__all__ = ["QueryError", "QueryTerm", "combine_terms", "looks_like_path", "parse_query"]

_WEIGHT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*:")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u300c": "\u300d", "\u300e": "\u300f",
           "\uff02": "\uff02"}
"""Opening quote -> its closing one: ASCII, and what a Chinese input method types (“” ‘’ 「」 『』 ＂＂)."""
_PREFIX = re.compile(r"(image|img|text):", re.IGNORECASE)


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


def _fail(query: str, pos: int, what: str) -> QueryError:
    """One line that quotes the query from the problem on: the caret under the query was a second and third
    line, which the CLI's one-line errors joined into `... '"cat" +' "cat" + ^` (the caret under nothing)."""
    rest = query[pos:]
    where = "at its end" if not rest.strip() else f"at {rest[:24]!r}" + (" ..." if len(rest) > 24 else "")
    return QueryError(f"{what} at position {pos} in query {query!r} ({where})")


def _is_operator(query: str, pos: int) -> bool:
    """A +/- followed by whitespace, a quote, or the end of the query."""
    if query[pos] not in "+-":
        return False
    return pos + 1 == len(query) or query[pos + 1].isspace() or query[pos + 1] in _QUOTES


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
    raise _fail(query, pos, "unterminated quote")


def _read_bare(query: str, pos: int) -> tuple[str, int]:
    """Words up to an operator that stands alone (whitespace before it) or the end."""
    i = pos
    while i < len(query):
        if query[i].isspace():
            j = i
            while j < len(query) and query[j].isspace():
                j += 1
            if j < len(query) and _is_operator(query, j):
                break
            if j < len(query) and query[j] in "\"'":
                raise _fail(query, j, "expected + or - before the quoted term")
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
        if terms:
            if query[pos] not in "+-":
                raise _fail(query, pos, "expected + or - between terms")
            sign = 1.0 if query[pos] == "+" else -1.0
            pos += 1
        elif _is_operator(query, pos):
            sign = 1.0 if query[pos] == "+" else -1.0
            pos += 1
        while pos < n and query[pos].isspace():
            pos += 1
        if pos >= n:
            raise _fail(query, pos, "expected a term after the operator")
        weight = 1.0
        match = _WEIGHT.match(query, pos)
        if match:
            weight = float(match.group(1))
            pos = match.end()
            while pos < n and query[pos].isspace():
                pos += 1
        forced = None
        match = _PREFIX.match(query, pos)
        if match:
            forced = "text" if match.group(1).lower() == "text" else "image"
            pos = match.end()
        if pos >= n:
            raise _fail(query, pos, "expected a term")
        quoted = None
        if query[pos] in "\"'":
            quoted = _read_quoted(query, pos)
        elif query[pos] in _QUOTES:  # a Chinese quote: a term when an operator or the end follows its close
            closing = query.find(_QUOTES[query[pos]], pos + 1)
            after = closing + 1
            while 0 < after < n and query[after].isspace():
                after += 1
            if closing > 0 and (after == n or _is_operator(query, after)):
                quoted = _read_quoted(query, pos)  # else words follow (“福”字灯笼, “Starry Night” painting: typed
                # as text, not as grammar) or it is left open before an operator: part of a text
            elif closing < 0 and _read_bare(query, pos)[1] == n:  # “cat: never closed, as "cat
                raise _fail(query, pos, "unterminated quote")
        if quoted is not None:
            value, pos = quoted
            kind = forced or "text"
        else:
            value, pos = _read_bare(query, pos)
            kind = forced or ("image" if is_image(os.path.expanduser(value)) else "text")
        if not value:
            raise _fail(query, pos, "empty term")
        if kind == "image":  # the shell leaves `~` alone inside the query's quotes: expand it here
            value = os.path.expanduser(value)
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
