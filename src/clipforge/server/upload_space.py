"""The web UI's upload folder as a ledger: what it holds, who uploaded each file, what is reserved.

gradio stores every file a browser uploads in one folder and answers with the file's path; a
client then names that path in its events. Three things are decided here, in memory, without
walking the folder on each upload (a walk over 40,000 tiny files took a second of event loop):

* **Space**: an upload reserves its declared size (and one file) before gradio writes a byte,
  so parallel uploads cannot together pass the byte budget (they once reached 380 MB of 200 MB);
  files are counted as well as bytes, so 40,000 tiny uploads cannot pass as "0.8 MB".
* **Age**: entries older than the maximum age are deleted, oldest first (insertion order).
* **Owner**: each file is bound to the uploader (a random cookie this server gave that browser);
  a client that merely knows the path of someone else's upload cannot use it.

`sweep` removes what a failed upload left behind (gradio's temporary files, emptied folders).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["UploadLedger", "sweep"]

_UPLOAD_FOLDER = re.compile(r"^[0-9a-f]{64}$")  # gradio names each upload's folder by a sha256


@dataclass
class _Entry:
    size: int
    added: float
    owners: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Reservation:
    bytes: int
    files: int


class UploadLedger:
    """Bytes, files, owners and reservations of one upload folder (thread-safe, O(1) per upload)."""

    def __init__(self, folder: str, max_bytes: int, max_files: int, max_age_s: float) -> None:
        self.folder = os.path.realpath(folder)
        self.max_bytes = int(max_bytes)
        self.max_files = int(max_files)
        self.max_age_s = float(max_age_s)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.bytes = self.files = 0
        self.reserved_bytes = self.reserved_files = 0
        for dirpath, _, names in os.walk(self.folder):  # once, at start: files from an earlier run
            for name in names:
                with contextlib.suppress(OSError):
                    info = os.lstat(os.path.join(dirpath, name))
                    self._add(os.path.join(dirpath, name), info.st_size, info.st_mtime, None)

    def _add(self, path: str, size: int, added: float, owner: str | None) -> None:
        entry = self._entries.get(path)
        if entry is None:
            entry = self._entries[path] = _Entry(size, added)
            self.bytes += size
            self.files += 1
        else:  # the same bytes under the same name again (gradio names folders by content): refresh
            self.bytes += size - entry.size
            entry.size, entry.added = size, added
            self._entries.move_to_end(path)
        if owner:
            entry.owners.add(owner)

    def expired(self, now: float | None = None) -> list[str]:
        """Forget entries older than the maximum age; their paths, for the caller to delete."""
        now = time.time() if now is None else now
        gone: list[str] = []
        with self._lock:
            while self._entries:
                path, entry = next(iter(self._entries.items()))
                if now - entry.added <= self.max_age_s:
                    break
                del self._entries[path]
                self.bytes -= entry.size
                self.files -= 1
                gone.append(path)
        return gone

    def reserve(self, nbytes: int, nfiles: int = 1) -> Reservation | None:
        """Hold room for an upload of `nbytes`, or None when the folder would pass its budget."""
        with self._lock:
            if (self.bytes + self.reserved_bytes + nbytes > self.max_bytes
                    or self.files + self.reserved_files + nfiles > self.max_files):
                return None
            self.reserved_bytes += nbytes
            self.reserved_files += nfiles
            return Reservation(nbytes, nfiles)

    def settle(self, reservation: Reservation, stored: list[tuple[str, int]], owner: str | None) -> None:
        """The upload ended: release its reservation and record the files it stored (path, size)."""
        now = time.time()
        with self._lock:
            self.reserved_bytes -= reservation.bytes
            self.reserved_files -= reservation.files
            for path, size in stored:
                self._add(os.path.realpath(path), size, now, owner)

    def owns(self, path: str, owner: str | None) -> bool:
        """`path` (resolved) was uploaded by `owner`."""
        if not owner:
            return False
        with self._lock:
            entry = self._entries.get(os.path.realpath(path))
            return entry is not None and owner in entry.owners

    def known(self, path: str) -> bool:
        with self._lock:
            return os.path.realpath(path) in self._entries


def delete_files(paths: list[str], root: str) -> None:
    """Delete `paths` and then their folders when emptied (never `root` itself)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
        parent = os.path.dirname(path)
        if parent != root:
            with contextlib.suppress(OSError):
                os.rmdir(parent)


def sweep(root: str, ledger: UploadLedger) -> int:
    """Remove what failed uploads left at the top of `root`: gradio's temporary `tmp*` files and empty
    upload folders. Called only when no upload is in flight (their temporary files are in use)."""
    removed = 0
    with os.scandir(root) as entries:
        for entry in entries:
            path = os.path.join(root, entry.name)
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and _UPLOAD_FOLDER.match(entry.name):
                    os.rmdir(path)  # only succeeds when empty
                    removed += 1
                elif entry.name.startswith("tmp") and not ledger.known(path):
                    os.unlink(path)
                    removed += 1
    return removed
