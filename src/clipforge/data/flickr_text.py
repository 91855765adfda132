"""Flickr8k and Flickr30k as their authors published them: `.token` caption files and split lists.

The original `Flickr8k_text.zip` holds `Flickr8k.token.txt`, one caption a line as
`<image>.jpg#<n><TAB><caption>` with no header (Flickr30k's `results_20130124.token` is the same
form), and `Flickr_8k.{train,dev,test}Images.txt`, one image name a line (6,000 / 1,000 / 1,000);
the images unpack to `Flicker8k_Dataset/` (sic). Kaggle's copy turned this into `captions.txt`
(CSV) + `Images/` with no split lists. Both forms are read as they are: a `.token` file was refused
as a CSV whose "header" was its first caption.

This module owns: telling a token file from a CSV by its first line, reading it into the same
`CaptionTable` a CSV gives (the `#n` suffix dropped, bad lines counted by line number; a line longer than a
caption may be is a bad line, never held whole), and finding the split list and image folder of the original
layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from .base import DatasetFormatError

__all__ = ["FLICKR8K_IMAGE_DIRS", "find_split_list", "is_token_file", "read_split_list", "read_token_file"]

_TOKEN_LINE = re.compile(r"^([^\t#]+)#(\d+)\t(.*)$")
# Image folders of the two Flickr8k forms, most specific first; relative to the dataset's root.
FLICKR8K_IMAGE_DIRS = (
    "Images",
    "images",
    "Flicker8k_Dataset",
    "Flickr8k_Dataset/Flicker8k_Dataset",
    "Flickr8k_Dataset",
)
_SPLIT_FILES = {
    "test": "Flickr_8k.testImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "train": "Flickr_8k.trainImages.txt",
}


def is_token_file(path: Path) -> bool:
    """Whether the first non-blank line of `path` is `<image>#<n><TAB><caption>`."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    return _TOKEN_LINE.match(line.rstrip("\r\n")) is not None
    except (OSError, UnicodeDecodeError):
        return False
    return False


def _lines(f: TextIO, limit: int) -> Iterator[tuple[str, int]]:
    """Each line of `f` and its length without the newline; a line longer than `limit` characters comes cut
    there, read in pieces and never held whole."""
    size = limit + 1  # a line of `limit` characters and its newline: read in one piece
    while line := f.readline(size):
        length = len(line) - line.endswith("\n")
        piece = line
        while len(piece) == size and not piece.endswith("\n"):  # the rest of a longer line, a piece at a time
            piece = f.readline(size)
            length += len(piece) - piece.endswith("\n")
        yield (line if length <= limit else line[:limit]), length


def read_token_file(path: Path, max_chars: int) -> tuple[list[tuple[str, str]], list[tuple[int, str]]]:
    """(image, caption) rows of a `.token` file in order, and (line number, reason) for lines that do not parse
    or are longer than `max_chars` (`clipforge.data.captions.MAX_CAPTION`): a 20 MB line was held whole and
    tokenized whole at each draw of its image, 2 s a sample, for a caption training reads 77 tokens of."""
    rows: list[tuple[str, str]] = []
    bad: list[tuple[int, str]] = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, (line, length) in enumerate(_lines(f, max_chars), 1):
            if length > max_chars:
                bad.append((lineno, f"a line of {length:,} characters, more than the {max_chars:,} a caption may hold"))
                continue
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            match = _TOKEN_LINE.match(text)
            if match is None:
                bad.append((lineno, "expected <image>#<n><TAB><caption>"))
            elif not match.group(3).strip():
                bad.append((lineno, "empty caption"))
            else:
                rows.append((match.group(1).strip(), match.group(3).strip()))
    return rows, bad


def find_split_list(folder: Path, split: str) -> Path | None:
    """Flickr8k's own list of `split`'s images beside the captions (or in `Flickr8k_text/`), if any."""
    name = _SPLIT_FILES.get(split)
    if name is None:
        return None
    for candidate in (folder / name, folder / "Flickr8k_text" / name):
        if candidate.is_file():
            return candidate
    return None


def read_split_list(path: Path) -> set[str]:
    """The image names of a `Flickr_8k.*Images.txt` list (one a line); an empty list is refused."""
    with open(path, encoding="utf-8-sig") as f:
        names = {line.strip() for line in f if line.strip()}
    if not names:
        raise DatasetFormatError(f"{path}: no image names (expected one <image>.jpg a line)")
    return names
