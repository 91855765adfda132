"""One writer at a time per library folder, across processes and threads.

SQLite already serialises the writes themselves; what it cannot prevent is two `index add`
runs on one library both planning the same files and both embedding everything (the result
is right, the work doubled). The run therefore holds the library's lock from planning to
its last commit: a second run waits, then plans against what the first committed and skips it.

Across processes the lock is a POSIX record lock (`lockf`) on the library's lock file: the
kernel drops it when the holder exits, even after a `kill -9`, so a stale lock file is
harmless, and - unlike `flock` - forked children (DataLoader workers) do not inherit it, so a
worker that outlives its run cannot keep the library locked. A POSIX lock does not exclude
other threads of the same process, so a per-file thread lock does that.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: writers are still serialised by SQLite, only the work may double
    fcntl = None  # type: ignore[assignment]

__all__ = ["library_lock"]

log = logging.getLogger(__name__)

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(os.path.realpath(path), threading.Lock())


@contextmanager
def library_lock(path: Path | None) -> Iterator[None]:
    """Hold the exclusive lock at `path` (None: no lock) for the block, waiting for another holder."""
    if path is None:
        yield
        return
    with _thread_lock(path):
        if fcntl is None:
            yield
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:  # a read-only library: nothing will be written anyway
            log.debug("cannot open lock file %s (%s); continuing without it", path, exc)
            yield
            return
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # EAGAIN / EACCES: another process holds it
                log.warning("another clipforge process is adding to the library %s; waiting for it to finish",
                            path.parent)
                fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
