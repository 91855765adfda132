"""The thumbnail cache: a few sizes per photo, a byte budget, and only our own files served.

Anyone who can reach a server may ask for `/thumb?size=N`, with no token, so what one request
can make the library store must be small and bounded:

- *Size classes.* A request is served from the smallest class (64, 128, 256, 512, 1024, 2048
  pixels) at least as large, resized in memory to the size asked for; only class files are
  written. A photo costs at most six cache files, not one per size 16-1024 (18 MB).
- *A byte budget.* The cache evicts its least recently used files (a hit refreshes a file's
  mtime, at most once an hour) once it outgrows `CLIPFORGE_THUMB_CACHE_MB` (default 512 MB),
  down to 80% of it. The running total is kept in memory, counted once per process by a walk
  of the folder on the first write, and recounted by each eviction.
- *Only our own files.* Whoever can write into the library could plant `thumbs/ab/x.jpg ->
  /etc/passwd` (or link a shard folder elsewhere). A cached file is served only when its real
  path lies inside the real thumbs folder, it is opened without following a link, it is a
  regular file with one name, and it starts like a JPEG; anything else is rebuilt from the
  photo (and replaced, when the folder is ours) or, outside the library, left alone.
- *Nothing through a link.* A `thumbs` folder that is itself a link is not ours either: it was
  written through (each shard's real path lies inside the *resolved* folder) but never counted
  or evicted (the walk follows no link), so anonymous requests filled its target past the
  budget, and `thumbs -> /tmp` put files outside the library. Like a linked shard folder, it is
  neither read nor written: each thumbnail is made in memory, and the log says so once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from clipforge.atomic import remove_stale_temps, write_bytes_atomic
from clipforge.library.dbfile import display_path

__all__ = ["THUMB_CLASSES", "ThumbCache", "cache_budget_bytes", "size_class", "thumb_cache"]

THUMB_CLASSES = (64, 128, 256, 512, 1024, 2048)
_DEFAULT_BUDGET_MB = 512
_TOUCH_AFTER_S = 3600.0
_JPEG_MAGIC = b"\xff\xd8\xff"

log = logging.getLogger(__name__)


def size_class(size: int) -> int:
    """The cached size that serves a request for `size` (the smallest class at least as large)."""
    return next((c for c in THUMB_CLASSES if c >= int(size)), THUMB_CLASSES[-1])


def cache_budget_bytes() -> int:
    """`CLIPFORGE_THUMB_CACHE_MB` (default 512) in bytes; a value that is not a number >= 0 is refused."""
    raw = os.environ.get("CLIPFORGE_THUMB_CACHE_MB", "").strip()
    if not raw:
        return _DEFAULT_BUDGET_MB << 20
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0 or megabytes == float("inf"):
        raise ValueError(f"CLIPFORGE_THUMB_CACHE_MB must be a number of megabytes (0 or more), got {raw!r}")
    return int(megabytes * (1 << 20))


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


class ThumbCache:
    """The thumbnails of one library folder (`thumb_cache(folder)` shares one per folder and process)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes of cached files, counted on the first write
        self._said_linked = False  # the log said once that a linked thumbs folder is not cached

    def path(self, sha256: str, klass: int) -> Path:
        return self.folder / sha256[:2] / f"{sha256}_{int(klass)}.jpg"

    def get(self, sha256: str, size: int, make: Callable[[int], bytes]) -> bytes:
        """JPEG bytes, longest side at most `size`: the class file (built by `make(klass)` when absent or not
        ours), resized in memory when `size` is not itself a class."""
        klass = size_class(size)
        target = self.path(sha256, klass)
        data = self._read(target)
        if data is None:
            data = make(klass)
            self._store(target, data)
        return data if klass == int(size) else _shrink(data, int(size))

    # -- reading ----------------------------------------------------------------------------
    def _real_folder(self) -> str:
        return os.path.realpath(self.folder)

    def _ours(self, target: Path) -> bool:
        """Whether `target`'s folder really is inside the thumbs folder, neither that folder nor its shard a link
        (the one rule `_read`, `_store` and `_files` share: what is not ours is never read, written or counted)."""
        if os.path.islink(self.folder):
            self._say_linked()
            return False
        return _inside(os.path.realpath(target.parent) + os.sep + "x", self._real_folder())

    def _say_linked(self) -> None:
        with self._lock:
            if self._said_linked:
                return
            self._said_linked = True
        log.warning("thumbnails are not cached: %s is a link, and nothing is written through one (make it a folder "
                    "inside the library to cache them); each is made from its photo when asked for",
                    display_path(os.fspath(self.folder)))

    def _read(self, target: Path) -> bytes | None:
        """The cached bytes, or None when absent or not a file this cache wrote (see module docstring)."""
        if not self._ours(target):
            return None
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(target, flags)
        except OSError:  # absent, or a symlink (ELOOP)
            return None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                return None
            data = f.read()
        if not data.startswith(_JPEG_MAGIC):
            return None
        if time.time() - info.st_mtime > _TOUCH_AFTER_S:  # recently used: evicted last
            with contextlib.suppress(OSError):
                os.utime(target)
        return data

    # -- writing and the budget -------------------------------------------------------------
    def _store(self, target: Path, data: bytes) -> None:
        if not self._ours(target):
            return  # a thumbs or shard folder that is a link: never write through it
        try:  # the rename replaces a planted link or hard link by our own file
            write_bytes_atomic(target, data)
        except OSError:  # a read-only library or a full disk still serves thumbnails, uncached
            return
        self._account(len(data))

    def _account(self, added: int) -> None:
        budget = cache_budget_bytes()
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, size, _ in self._files())
            else:
                self._total += added
            if self._total > budget:
                self._total = self._evict(int(budget * 0.8))

    def _files(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every cached file (links are not followed, temps of dead writers removed)."""
        out: list[tuple[float, int, Path]] = []
        if not os.path.isdir(self.folder) or os.path.islink(self.folder):
            return out
        for shard in os.scandir(self.folder):
            if not shard.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                remove_stale_temps(shard.path)
                for entry in os.scandir(shard.path):
                    if entry.is_file(follow_symlinks=False) and entry.name.endswith(".jpg"):
                        info = entry.stat(follow_symlinks=False)
                        out.append((info.st_mtime, info.st_size, Path(entry.path)))
        return out

    def _evict(self, keep: int) -> int:
        """Delete least recently used files until at most `keep` bytes remain; returns the bytes left."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= keep:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                total -= size
        return total


def _shrink(data: bytes, size: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=85)
    return out.getvalue()


_CACHES: dict[str, ThumbCache] = {}
_CACHES_GUARD = threading.Lock()


def thumb_cache(folder: Path) -> ThumbCache:
    """The one cache object of `folder` in this process (so its byte count is shared)."""
    with _CACHES_GUARD:
        return _CACHES.setdefault(os.path.abspath(folder), ThumbCache(Path(folder)))
