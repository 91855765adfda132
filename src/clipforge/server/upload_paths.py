"""Which client-sent paths name an upload of this server: resolved, bounded, never a URL.

gradio's UI events carry `FileData` objects whose `path` the client writes; gradio would open whatever they name
(any file the server can read, or a URL it would fetch). `ui_guard` and the UI's handlers accept a path only when
it resolves, every symlink and `..` followed, to a regular file strictly inside the upload folder. Resolving is
bounded first (`plausible_path`): `os.path.realpath` costs grow with the square of a path's components.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_PATH_CHARS", "MAX_PATH_PARTS", "inside", "is_upload", "plausible_path", "upload_paths"]

MAX_PATH_CHARS = 4096
"""A client-sent path longer than this (Linux's PATH_MAX) is refused without being resolved."""
MAX_PATH_PARTS = 64
"""... and one of more components (gradio's own upload paths have about ten). `os.path.realpath` costs
grow with the square of the components: one 1 MB path of "a/" held the event loop for 38 s; at these
bounds the worst path costs ~0.2 ms (2-core EPYC)."""
def plausible_path(path: str) -> bool:
    """Short enough, and of few enough components, to be worth resolving (see `MAX_PATH_PARTS`)."""
    return len(path) <= MAX_PATH_CHARS and path.count("/") + path.count("\\") <= MAX_PATH_PARTS


def inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """True when `path`, with every symlink and `..` resolved, is a file strictly inside `folder`.

    A path that is not `plausible_path`, or holds a NUL (`realpath` raised ValueError: a 500 and a traceback for
    `/gradio_api/file=...%00`), is refused unresolved."""
    text = os.fspath(path)
    if not plausible_path(text) or "\0" in text:
        return False
    real = os.path.realpath(path)
    root = os.path.realpath(folder)
    return real != root and os.path.commonpath([real, root]) == root


def _is_url(value: str) -> bool:
    lowered = value.strip().lower()
    return "://" in lowered or lowered.startswith(("//", "data:", "\\\\"))


def upload_paths(value: Any, depth: int = 0) -> Iterator[Any]:
    """Every `path` value of every object nested in a decoded JSON body (depth-bounded)."""
    if depth > 32:
        raise ValueError("request data is nested too deeply")
    if isinstance(value, dict):
        if "path" in value:
            yield value["path"]
        for item in value.values():
            yield from upload_paths(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from upload_paths(item, depth + 1)


def is_upload(path: Any, upload_dir: str | os.PathLike[str]) -> bool:
    """A client-sent path names a regular file gradio stored in `upload_dir` (never a URL)."""
    if not isinstance(path, str) or not path or "\0" in path or _is_url(path):
        return False
    if not inside(path, upload_dir):
        return False
    try:
        return stat.S_ISREG(os.stat(os.path.realpath(path)).st_mode)
    except (OSError, ValueError):
        return False


