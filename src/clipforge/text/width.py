"""How many terminal columns a string takes: Chinese, Japanese and Korean characters take two.

Python's format widths count characters, but a terminal draws East Asian wide and fullwidth
characters in two columns and combining marks in none, so a table whose labels are padded with
``f"{label:<{n}}"`` drifts out of line as soon as one label is Chinese. `pad` pads by columns.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

__all__ = ["display_width", "pad", "shorten"]


def display_width(text: str) -> int:
    """Terminal columns of `text`: 2 per wide/fullwidth character, 0 per combining mark, else 1."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
               for c in text)


def pad(text: str, width: int, align: str = "<") -> str:
    """`text` padded with spaces to `width` columns, left-aligned ("<") or right-aligned (">")."""
    fill = " " * max(0, width - display_width(text))
    return text + fill if align == "<" else fill + text


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` columns: unchanged when it fits, else its start and its end around "…".

    For labels drawn where room is fixed (a plot's ticks): the end is kept because a file name's
    distinguishing part is often there (``IMG_20241005_1835…_0042.jpg``).
    """
    if display_width(text) <= width:
        return text
    room = max(0, width - 1)  # "…" takes one column
    head = _fitting(text, room - room // 2)
    tail = _fitting(reversed(text), room // 2)
    return "".join(head) + "…" + "".join(reversed(tail))


def _fitting(chars: Iterable[str], columns: int) -> list[str]:
    """The leading characters of `chars` that fit in `columns`."""
    out, used = [], 0
    for char in chars:
        used += display_width(char)
        if used > columns:
            break
        out.append(char)
    return out
