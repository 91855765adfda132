"""Find the image files an `index add` or `embed` run should consider.

Folders contribute files with an image extension (the list `clipforge.image` can decode here);
a file named explicitly is always taken, so a broken ``notes.jpg`` - or a file with no image
extension at all - is tried, fails and gets recorded with its reason instead of vanishing.
Hidden files and folders are skipped in folder walks, and so is the library's own folder
(its thumbnails must never index themselves).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["discover_files", "normalise_path"]


def normalise_path(path: str | os.PathLike[str]) -> str:
    """Absolute, normalised path string: the key a file is known by (symlinks are not resolved)."""
    return os.path.normpath(os.path.abspath(os.fspath(Path(path).expanduser())))


def _is_image_name(name: str) -> bool:
    from clipforge.image.formats import is_image_path

    return is_image_path(name)


def _walk(root: str, recursive: bool, exclude: Sequence[str]) -> Iterable[str]:
    if not recursive:
        with os.scandir(root) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file() and _is_image_name(entry.name):
                    yield os.path.join(root, entry.name)
        return
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not any(_inside(os.path.join(current, d), ex) for ex in exclude))
        for name in files:
            if not name.startswith(".") and _is_image_name(name):
                yield os.path.join(current, name)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def discover_files(paths: Iterable[str | os.PathLike[str]], recursive: bool = False,
                   exclude: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """Sorted, de-duplicated absolute paths. Raises FileNotFoundError naming inputs that do not exist."""
    excluded = [normalise_path(p) for p in exclude]
    found: set[str] = set()
    missing: list[str] = []
    for raw in paths:
        path = normalise_path(raw)
        if os.path.isdir(path):
            found.update(p for p in _walk(path, recursive, excluded) if not any(_inside(p, ex) for ex in excluded))
        elif os.path.lexists(path):
            found.add(path)
        else:
            missing.append(str(raw))
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    return sorted(found)
