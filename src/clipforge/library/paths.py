"""Where a library lives on disk, and the names of the files inside it.

A library is a folder, so it can be moved, backed up or deleted as one thing: the SQLite
database is the source of truth, everything else (FAISS indexes, thumbnails, uploads) is
either derived from it or referenced by it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["LibraryFolderError", "LibraryPaths", "NewLibrary", "default_library_dir"]


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

    @property
    def lock(self) -> Path:
        """Held (flock) by a running `index add`, so a second one waits instead of redoing its work."""
        return self.root / "library.lock"

    def check_folder(self) -> None:
        """NotADirectoryError when the library path names something that is not a folder."""
        if os.path.lexists(self.root) and not self.root.is_dir():
            raise NotADirectoryError(f"library {self.root} is a file, not a library folder: give --library a "
                                     "folder (a new one is created by `clipforge index add`)")

    def derived_files(self) -> list[Path]:
        """What besides the database says "a library lived here": indexes, thumbnails, uploads.

        Hidden names do not count: they are temporary files a writer stopped by a full disk or a
        crash left behind (`clipforge.atomic`), never a finished file."""
        found: list[Path] = []
        for folder in (self.index_dir, self.thumbs_dir, self.uploads_dir):
            entries = folder.iterdir() if folder.is_dir() else iter(())
            first = next((p for p in entries if not p.name.startswith(".")), None)
            if first is not None:
                found.append(first)
        return found

    def new_library(self) -> NewLibrary | None:
        """What a start that may create this library is about to make (None: the database exists already),
        noted before anything is made, so that a start that fails takes exactly that back."""
        if os.path.lexists(self.db):
            return None
        return NewLibrary(self)

    def ensure(self) -> None:
        """The library folder, made with its parents; one sentence naming what is in the way ("[Errno 20] Not
        a directory: 'libfile/sub'" named no culprit), or `LibraryFolderError` naming the library folder, the
        OS's reason and how to choose another (a service account without a writable $HOME printed only
        "[Errno 2] No such file or directory: '/proc/nohome'", naming neither the library nor --library)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in [self.root, *self.root.parents] if p.exists() and not p.is_dir()), self.root)
            raise NotADirectoryError(f"cannot make library folder {self.root}: {blocker} is a file, not a folder; "
                                     "give --library a folder path") from None
        except OSError as exc:
            raise LibraryFolderError(self.root, exc) from exc


class LibraryFolderError(OSError):
    """The library folder could not be made (no such parent, no permission, a read-only disk). An OSError with
    the OS's number and file kept, so callers that sort OS errors by number still can (`dbfile.not_writable`
    turns EACCES into the read-only library's answer); its text is one sentence, not "[Errno 2] ..."."""

    def __init__(self, root: Path, cause: OSError) -> None:
        where = os.fsdecode(cause.filename) if cause.filename is not None else str(root)
        reason = cause.strerror or str(cause)
        super().__init__(cause.errno, reason, cause.filename)
        self.sentence = (f"cannot make library folder {root} ({where}: {reason}): choose another with --library PATH "
                         "or $CLIPFORGE_LIBRARY")

    def __str__(self) -> str:
        return self.sentence


class NewLibrary:
    """A library a start is creating: its database and the folders of its path that did not exist. `discard`
    (a start whose model, token or settings were refused) removes the database and SQLite's files beside it,
    then those folders that are empty (`atomic.NewFolders`: parents `mkdir(parents=True)` made included;
    anything else put there stays)."""

    def __init__(self, paths: LibraryPaths) -> None:
        from clipforge.atomic import NewFolders

        self.paths = paths
        self.folders = NewFolders([paths.index_dir, paths.thumbs_dir, paths.uploads_dir, paths.cache_dir])

    def discard(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):  # never hides the error that ended the start
                os.unlink(f"{self.paths.db}{suffix}")
        self.folders.remove_unused()
