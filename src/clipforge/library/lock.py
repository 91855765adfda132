"""One writer at a time per library folder, across processes.

SQLite already serialises the writes themselves; what it cannot prevent is two `index add`
runs on one library both planning the same files and both embedding everything (the result
is right, the work doubled). The run therefore holds an exclusive `flock` on the library's
lock file from planning to its last commit: a second run waits, then plans against what the
first committed and skips it. The kernel drops the lock when the holder exits, even after a
`kill -9`, so a stale lock file is harmless.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: writers are still serialised by SQLite, only the work may double
    fcntl = None  # type: ignore[assignment]

__all__ = ["library_lock"]

log = logging.getLogger(__name__)


@contextmanager
def library_lock(path: Path | None) -> Iterator[None]:
    """Hold the exclusive lock at `path` (None: no lock) for the block, waiting for another holder."""
    if path is None or fcntl is None:
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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another clipforge process is adding to the library %s; waiting for it to finish",
                        path.parent)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
