"""Where a library lives on disk, and the names of the files inside it.

A library is a folder, so it can be moved, backed up or deleted as one thing: the SQLite
database is the source of truth, everything else (FAISS indexes, thumbnails, uploads) is
either derived from it or referenced by it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["LibraryPaths", "default_library_dir"]


def default_library_dir() -> Path:
    """``$CLIPFORGE_LIBRARY``, else ``$XDG_DATA_HOME/clipforge/library`` (``~/.local/share/...``)."""
    explicit = os.environ.get("CLIPFORGE_LIBRARY")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "clipforge" / "library"


class LibraryPaths:
    """File names inside one library folder (one place, so nothing else hard-codes them)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_library_dir()

    @property
    def db(self) -> Path:
        return self.root / "library.sqlite3"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def thumbs_dir(self) -> Path:
        return self.root / "thumbs"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def index_file(self, fingerprint: str) -> Path:
        # One index per model fingerprint: vectors of two models can never share a file.
        return self.index_dir / f"{fingerprint[:24]}.faiss"

    def index_sidecar(self, fingerprint: str) -> Path:
        return self.index_dir / f"{fingerprint[:24]}.json"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
