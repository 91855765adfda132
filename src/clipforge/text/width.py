"""How many terminal columns a string takes: Chinese, Japanese and Korean characters take two.

Python's format widths count characters, but a terminal draws East Asian wide and fullwidth
characters in two columns and combining marks in none, so a table whose labels are padded with
``f"{label:<{n}}"`` drifts out of line as soon as one label is Chinese. `pad` pads by columns.
"""

from __future__ import annotations

import unicodedata

__all__ = ["display_width", "pad"]


def display_width(text: str) -> int:
    """Terminal columns of `text`: 2 per wide/fullwidth character, 0 per combining mark, else 1."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
               for c in text)


def pad(text: str, width: int, align: str = "<") -> str:
    """`text` padded with spaces to `width` columns, left-aligned ("<") or right-aligned (">")."""
    fill = " " * max(0, width - display_width(text))
    return text + fill if align == "<" else fill + text
