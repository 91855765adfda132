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

The holder writes its pid and command words (`clipforge index prune`) into the lock file, as
`hold_lock`'s holders do, so a writer that has to wait says for whom (`tell`: a ``notice:`` line);
the kernel names the holding pid (`_holder`), so a record left by a dead holder misleads no one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clipforge.errors import Notice

try:
    import fcntl
except ImportError:  # not POSIX: writers are still serialised by SQLite, only the work may double
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockHeld", "LockWaitTimeout", "command_words", "hold_lock", "library_lock", "tell"]

log = logging.getLogger(__name__)

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(os.path.realpath(path), threading.Lock())


class LockWaitTimeout(Exception):
    """`library_lock(timeout_s=...)` waited that long for another holder: `pid` and `record` name it when known."""

    def __init__(self, pid: int | None, record: str | None, waited_s: float) -> None:
        super().__init__(f"held by pid {pid}" if pid is not None else "held by another process")
        self.pid, self.record, self.waited_s = pid, record, waited_s


@contextmanager
def library_lock(path: Path | None, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock at `path` (None: no lock) for the block, waiting for another holder (one notice
    names it: "waiting for another clipforge process (pid N: clipforge index prune) that is writing the library
    X"), for ever or at most `timeout_s` seconds (then `LockWaitTimeout`: a server's upload must not wait on a
    holder that was suspended, review 63). Its own pid and command are recorded in the file for the next waiter."""
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
                from clipforge.library.dbfile import display_path

                pid, record = _holder(fd, 0, 0)  # (an older clipforge's holder recorded nothing: its pid alone)
                who = "" if pid is None else f" (pid {pid}: {record})" if record else f" (pid {pid})"
                tell(f"waiting for another clipforge process{who} that is writing the library "
                     f"{display_path(os.fspath(path.parent))}")
                if timeout_s is None:
                    fcntl.lockf(fd, fcntl.LOCK_EX)
                else:
                    _wait_at_most(fd, timeout_s, pid, record)
            line = f"{os.getpid()}\t{command_words()}\n".encode("utf-8", "backslashreplace")
            with contextlib.suppress(OSError):  # a full disk: the next waiter names the pid alone
                if os.pread(fd, _RECORD_TAIL, 0) != line:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, line, 0)
            yield
        finally:
            os.close(fd)  # releases the lock


def _wait_at_most(fd: int, timeout_s: float, pid: int | None, record: str | None) -> None:
    """Take the lock on `fd` within `timeout_s` (tried every 50 ms), else `LockWaitTimeout`."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise LockWaitTimeout(pid, record, timeout_s) from None
            time.sleep(0.05)


_COMMAND_WORD = re.compile(r"[a-z][a-z0-9-]*")


def command_words() -> str:
    """This process's program and command words (`clipforge index prune`), as a waiter is told them: never the
    other arguments, which every user who may read the library may read in its lock file (`serve --token T`)."""
    argv = list(getattr(sys, "argv", None) or [""])
    program = Path(argv[0])
    name = program.parent.name if program.name == "__main__.py" else program.name  # `python -m clipforge`
    if not name or name.startswith("-"):  # `python -c ...`, an interactive interpreter
        name = "python"
    words = []
    for word in argv[1:3]:  # `index add`; a folder's name (`embed photos`) is no command word
        if not _COMMAND_WORD.fullmatch(word) or os.path.exists(word):
            break
        words.append(word)
    return "".join(c if c.isprintable() else "?" for c in " ".join([name, *words]))[:120]


def tell(message: str) -> None:
    """Say `message` to the person at the terminal as a `Notice` (the CLI prints a ``notice:`` line, `--quiet`
    hides it, a program may filter it). Where warning filters make it an exception (``-W error``) it is printed as
    that line instead: a remark that a write waits must not end the write."""
    try:
        warnings.warn(message, Notice, stacklevel=3)
    except Notice:
        print(f"notice: {message}", file=sys.stderr)


class LockHeld(Exception):
    """`hold_lock` found the lock held: `pid` is the holder's process id (None: not known), `record` the line it
    recorded in the lock file (None: none yet)."""

    def __init__(self, path: Path, pid: int | None, record: str | None) -> None:
        super().__init__(f"{path} is held by {'an unknown process' if pid is None else f'pid {pid}'}")
        self.path, self.pid, self.record = path, pid, record


_HELD: dict[str, tuple[int, dict[int | None, str]]] = {}
"""The locks `hold_lock` holds in this process: lock file (real path) -> (its one descriptor, {part: record}).
One descriptor per file: closing any descriptor of a file drops every POSIX lock the process holds on it."""

_RECORD_TAIL = 65536  # the most of a lock file read for its record (part holders add lines)


def _holder(fd: int, start: int, length: int) -> tuple[int | None, str | None]:
    """(pid, record) of the process holding a lock on [start, start+length) of `fd`'s file (length 0: to the
    end). The kernel names the pid (F_GETLK; struct flock's layout is known on 64-bit Linux); the record is that
    pid's last line in the file, or where the kernel cannot say, the last line's pid and record."""
    import struct
    import sys

    pid = None
    if sys.platform.startswith("linux") and struct.calcsize("P") == 8:
        layout = "hhqqi4x"  # l_type, l_whence, l_start, l_len, l_pid
        try:
            asked = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
            kind, _, _, _, found = struct.unpack(layout, fcntl.fcntl(fd, fcntl.F_GETLK, asked))
            pid = found if kind != fcntl.F_UNLCK and found > 0 else None
        except OSError:
            pass
    try:
        size = os.fstat(fd).st_size
        text = os.pread(fd, _RECORD_TAIL, max(0, size - _RECORD_TAIL)).decode("utf-8", "replace")
    except OSError:
        text = ""
    lines = [line.partition("\t") for line in text.splitlines() if "\t" in line]
    records = [(int(who), record) for who, _, record in lines if who.isdigit()]
    if pid is None:
        return records[-1] if records else (None, None)
    return pid, next((record for who, record in reversed(records) if who == pid), None)


def _open_locked(path: Path, start: int, length: int) -> int:
    """A descriptor of the file at `path` holding the lock on [start, start+length) (length 0: the whole file), or -1
    when the file cannot be opened; raises `LockHeld` when another process holds the lock. A file whose last holder
    removed it (`hold_lock` does, on leaving) after it was opened here is not the lock any more: the one at `path`
    now is tried instead, so two processes never each hold a lock on a different file of one name."""
    for _ in range(100):  # another try only when a holder removed the file in between: it settles at once
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            log.debug("cannot open lock file %s (%s); continuing without it", path, exc)
            return -1
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
        except OSError:  # EAGAIN / EACCES: another process holds it
            held = LockHeld(path, *_holder(fd, start, length))
            os.close(fd)
            raise held from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except OSError:  # removed: make it again
            pass
        os.close(fd)
    raise LockHeld(path, None, None)


@contextmanager
def hold_lock(path: Path, record: str, part: int | None = None) -> Iterator[None]:
    """Hold the exclusive lock at `path` for the block, or raise `LockHeld` at once, never waiting: for a job
    that must not run beside another on the same folder (waiting would only put off a refusal) and whose user
    should hear who holds it.

    The mechanism is `library_lock`'s: a POSIX record lock, dropped by the kernel when its holder dies (`kill -9`
    included, so a lock file left behind blocks nothing) and not inherited by forked workers. `part=None` locks
    the whole file; `part=k` byte k only, so cooperating processes (the ranks of one job) hold their parts
    together, a whole-file holder excludes every part holder and each of them it, and a part excludes another
    holder of the same part. Threads of this process are excluded the same way. `record` (one line: who is
    holding, e.g. the command) is kept in the file after the holder's pid for `LockHeld` to show: a whole-file
    holder's line replaces the others, a part holder adds its own. The last holder to leave removes the file
    (while holding it; `_open_locked` never keeps a removed one), so a finished job leaves its folder as it found
    it; a killed one leaves the file, which blocks nothing. A lock file that cannot be opened (a read-only folder)
    is not held: that run's own writes fail in their own words.
    """
    key = os.path.realpath(path)
    line = f"{os.getpid()}\t{' '.join(record.split())}\n".encode("utf-8", "backslashreplace")
    start, length = (0, 0) if part is None else (part, 1)
    with _THREAD_LOCKS_GUARD:
        fd, parts = _HELD.get(key, (-1, {}))
        for other, said in parts.items():
            if part is None or other is None or other == part:
                raise LockHeld(path, os.getpid(), said)
        if not parts and fcntl is not None:  # the first holder in this process opens it; the others share it
            fd = _open_locked(path, start, length)
        elif fd >= 0:  # this process holds another part: the file is the one at `path`
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
            except OSError:
                raise LockHeld(path, *_holder(fd, start, length)) from None
        if fd >= 0:
            try:  # a whole-file holder's line alone, a part holder's added (an unchanged file is not written)
                kept = os.pread(fd, _RECORD_TAIL, 0)
                if part is None and kept != line:
                    os.ftruncate(fd, 0)
                    os.write(fd, line)
                elif part is not None and line not in kept.splitlines(keepends=True):
                    os.write(fd, line)
            except OSError:  # a full disk: the refused are told the pid alone
                pass
        parts[part] = record
        _HELD[key] = (fd, parts)
    try:
        yield
    finally:
        with _THREAD_LOCKS_GUARD:
            del parts[part]
            if fd >= 0 and not parts:
                try:  # the last holder, if no other process holds a part: remove it
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
                    if os.path.samestat(os.fstat(fd), os.stat(path)):
                        os.unlink(path)
                except OSError:  # another rank still holds its part (or the file went): it stays
                    pass
            elif fd >= 0:
                fcntl.lockf(fd, fcntl.LOCK_UN, length, start)
            if not parts:
                del _HELD[key]
                if fd >= 0:
                    os.close(fd)
