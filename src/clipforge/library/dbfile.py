"""The library database as a file: is it whole, and what a write it refuses means.

A truncated, emptied or overwritten database must be reported as such - one sentence naming
the file and what to do - and never be mistaken for a new, empty library (which would then
"rebuild" the library's index from nothing). The cheap checks here read only the 100-byte
SQLite header; damage deeper in the file surfaces as SQLITE_CORRUPT on the query that
meets it, which `damage_error` turns into the same error.

A file shorter than its header says is not always damage: a checkpoint (copying the
write-ahead log into the file) writes page 1 first and then grows the file, so a full disk,
a `ulimit -f` or a crash in the middle leaves a short file beside a WAL that still holds
every committed page. `check_database_file` reports that state as *pending* instead of
damaged; the store then lets SQLite itself judge the pair (integrity check) and finishes
the checkpoint - only a pair SQLite cannot read whole is damage.

A write the disk refuses (SQLITE_FULL, or an I/O error when a file-size limit stops it)
is `LibraryWriteError`, an OSError with one sentence saying what to do: nothing committed
before it is lost, and the library stays readable.

How file names are written into it (`to_db`, `from_db` and the rest) is `library.file_names`, re-exported here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import time
from pathlib import Path

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

from clipforge.disk_full import DiskFullError
from clipforge.errors import UserError
from clipforge.library.file_names import (  # re-exported: the file-name half of the database's story
    UnusableNameError,
    display_path,
    file_exists,
    from_db,
    is_utf8_name,
    name_bytes,
    path_text,
    text_path,
    to_db,
)
from clipforge.library.schema import SchemaError

__all__ = ["BUSY_TIMEOUT_S", "DamagedLibraryError", "LibraryBusyError", "LibraryDiskFullError", "LibraryOutOfFilesError",
           "LibraryWriteError", "UnusableNameError", "access_error", "busy_error", "check_database_file",
           "damage_error", "display_path", "file_exists", "file_stamp", "from_db", "is_utf8_name", "name_bytes",
           "not_writable", "open_read_only", "open_writable", "path_text", "read_only_part", "text_path", "to_db", "wal_path",
           "write_error"]

_MAGIC = b"SQLite format 3\x00"
_DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class DamagedLibraryError(SchemaError):
    """The library database cannot be read as a library (truncated, emptied, overwritten)."""

    http_status = 503  # the server's fault, not the request's


class LibraryWriteError(OSError):
    """The disk refused a write to the library (full, or a file-size limit), or this user may not write it
    (`access_error`, errno EACCES); the library is intact."""

    def __str__(self) -> str:  # one sentence, not "[Errno 28] ..."
        return str(self.strerror)


class LibraryDiskFullError(LibraryWriteError, DiskFullError):
    """A write to the library the disk refused for want of room (`write_error`): a `DiskFullError` too, so the one
    disk-full test (`clipforge.disk_full.disk_full`) knows it. SQLite reports a write stopped by a file-size limit as
    "disk I/O error" (errno EIO here, not SQLITE_FULL): the server's test of the errno alone answered an upload
    refused so 500 with a traceback, not its 507, and kept the upload's file."""


BUSY_TIMEOUT_S = 60.0
"""How long a connection waits for another process's write lock on the database (SQLite's busy timeout)."""


class LibraryBusyError(UserError, sqlite3.OperationalError):
    """Another process held the library's database for writing past the busy timeout, so a write could not start
    (or commit): one sentence, not a traceback, and nothing of that write kept (`busy_error`). An
    `sqlite3.OperationalError` still: a caller that leaves a write for later when the database is locked
    (`transaction(wait=False)`) catches it as before. The server answers an upload refused so 503 `library_busy`."""

    http_status = 503  # the server's environment, for a while: not the request's fault
    retry_after = 10.0
    client_detail = "the library is being written by another process: nothing was changed; try again shortly"


def busy_error(path: Path, exc: sqlite3.Error, waited_s: float, wrote_before: bool) -> LibraryBusyError | None:
    """The error to raise for `exc` when it is SQLite's "database is locked" (another connection holds the write
    lock): `waited_s` is how long this one waited for it, `wrote_before` whether this process committed writes to
    the library before (an `index add` keeps its earlier batches), so the sentence says what is kept."""
    if not (str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_BUSY") or "database is locked" in str(exc)):
        return None
    held = f"has held its database for writing for {waited_s:g} s" if waited_s > 0 else "is writing its database"
    kept = ("this write was not made (what this command wrote before it is kept)" if wrote_before
            else "nothing was written by this command")
    return LibraryBusyError(f"library {display_path(os.fspath(Path(path).parent))} is busy: another process {held}; "
                            f"{kept}; try again when it finishes")


def damaged(path: str | os.PathLike[str], what: str, fix: str | None = None) -> DamagedLibraryError:
    """The one line for a damaged database: the file, what is wrong, and what to do. `fix`: a command that
    repairs this damage in place (a tag score edited into text: tag again), said instead of the remedy for a
    lost file (restore a backup, or index everything again), which would cost far more than it needs."""
    remedy = fix or (
        "restore that file from a backup, or move the library folder aside and index the photos again with "
        "`clipforge index add`"
    )
    return DamagedLibraryError(
        f"library database {display_path(os.fspath(path))} is damaged ({what}); nothing in the library was "
        f"changed: {remedy}")


def _truncation(path: Path) -> str | None:
    """What is wrong with the file's header, or None when it looks whole."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_MAGIC):
        return "not an SQLite database file"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is only meaningful when "version-valid-for" matches the change counter.
    if header[24:28] == header[92:96] and pages and size < pages * page_size:
        return f"truncated: {size} bytes, its header says {pages * page_size}"
    return None


def wal_path(path: Path) -> Path:
    """The database's write-ahead log (committed pages not yet copied into the file)."""
    return path.with_name(path.name + "-wal")


def check_database_file(path: Path, create: bool) -> str | None:
    """Raise DamagedLibraryError unless `path` is absent, a whole SQLite file, or (when `create`) empty.

    Returns the problem text when the file is short but a non-empty WAL beside it may hold the
    rest (an interrupted checkpoint): the caller must let SQLite verify the pair. Else None.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise damaged(path, "not a regular file")
    if info.st_size == 0:
        if create:
            return None
        raise damaged(path, "the file is empty (0 bytes)")
    problem = _truncation(path)
    wal = wal_path(path)
    for _ in range(10):  # a checkpoint in another process may be copying the WAL into the file right now
        if problem is None or not problem.startswith("truncated") or not wal.exists():
            break
        time.sleep(0.05)
        problem = _truncation(path)
    if problem is None:
        return None
    if problem.startswith("truncated") and _size(wal) > 0:
        return problem
    raise damaged(path, problem)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def damage_error(path: Path, exc: sqlite3.DatabaseError) -> DamagedLibraryError | None:
    """The error to raise for `exc` when it means the file is damaged (not locked, not full)."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc)
    if name.startswith(_DAMAGE_CODES) or "malformed" in text or "not a database" in text:
        return damaged(path, text)
    return None


def write_error(path: Path, exc: sqlite3.Error) -> LibraryDiskFullError | None:
    """The error to raise for `exc` when the disk refused a write (full, or a file-size limit)."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc)
    if name == "SQLITE_FULL" or "disk is full" in text:
        why = "the disk is full"
        code = errno.ENOSPC
    elif name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        why = f"the disk refused a write ({text}: full, or a file-size limit such as `ulimit -f` reached)"
        code = errno.EIO
    else:
        return None
    return LibraryDiskFullError(code, f"could not write library database {display_path(os.fspath(path))}: {why}; "
                                      "everything saved before is kept and the library can still be read: free "
                                      "some space (or raise the limit) and run the command again", os.fspath(path))


class LibraryOutOfFilesError(UserError, OSError):
    """SQLite could not open the library's files because this process may open no more (errno EMFILE or ENFILE):
    one sentence (not "[Errno 24] ..."). Not an access error: the library stays writable, and the next request,
    once descriptors are free again, opens it as before (`access_error`)."""

    http_status = 503  # the server's environment, for a moment: not the request's fault
    retry_after = 10.0
    client_detail = "the server may open no more files for the moment: nothing was changed; try again shortly"

    def __str__(self) -> str:
        return str(self.strerror)


_SQLITE_FILES = 4
"""Descriptors SQLite may need for one new connection (the database, its write-ahead log, its shared memory) and one
to spare: a connection that got the first and not the next is closed again, freeing its descriptor before the check."""


def _out_of_files() -> tuple[int, int | None] | None:
    """(errno, this process's limit or None) when it may open (almost) no more files, else None. SQLite says only
    "unable to open database file" (SQLITE_CANTOPEN) then, the same words as for a folder this user may not write."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource is not None else None
    limit = None if limit is None or limit == getattr(resource, "RLIM_INFINITY", -1) else int(limit)
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            used = len(os.listdir(listing)) - 1  # less the listing's own descriptor
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                return exc.errno, limit
            continue
        return (errno.EMFILE, limit) if limit is not None and used + _SQLITE_FILES > limit else None
    try:  # no listing of descriptors: can one more be opened?
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return exc.errno, limit
    return None


def access_error(path: Path, exc: sqlite3.Error, writing: bool = False) -> LibraryWriteError | LibraryOutOfFilesError | None:
    """The error to raise for `exc` when this user may not write the library (a read-only folder, file or
    disk). Such a library is still searched as it is (`Store` opens it read-only) unless its write-ahead log
    holds writes not yet copied into the file: SQLite reads those only through shared memory beside it.
    `writing`: `exc` ended a write (the library was read, so its log is no matter): the sentence names what is
    read-only (the folder, the file, the disk) instead; a copy's write-ahead log was blamed for a read-only folder.

    SQLite's "unable to open database file" while this process may open no more files is `LibraryOutOfFilesError`
    instead: a server that had run out of descriptors was turned read-only for good and told its operator to fix
    permissions that were fine."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc)
    if not (name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or "readonly database" in text
            or "unable to open database file" in text):
        return None
    if name.startswith("SQLITE_CANTOPEN") or "unable to open database file" in text:
        out = _out_of_files()
        if out is not None:
            code, limit = out
            if code == errno.ENFILE:
                why = f"this system may open no more files ({os.strerror(code)})"
            else:
                why = f"this process may open no more files (its limit, `ulimit -n`, is {limit or 'reached'})"
            return LibraryOutOfFilesError(code, f"cannot open library database {display_path(os.fspath(path))}: {why}; "
                                                "nothing in the library was changed: raise the limit or close what "
                                                "holds them, and try again", os.fspath(path))
    folder = display_path(os.fspath(Path(path).parent))
    wal = wal_path(Path(path))
    if writing:
        why = read_only_part(Path(path))
        clause = f"; {why}" if why else ""
    else:
        clause = (f"; its write-ahead log {display_path(wal.name)} holds writes not yet copied into it, which SQLite "
                  "reads only from a folder it can write") if _size(wal) > 0 else ""
    return LibraryWriteError(errno.EACCES, f"cannot write library database {display_path(os.fspath(path))} "
                                           f"({text}){clause}: give this user write access to {folder} and its "
                                           "files, or copy the library to a folder it can write")


def read_only_part(path: Path) -> str | None:
    """What makes `path` (a library's database, or a file it writes) read-only for this user, in words: the disk or
    mount, its folder (or the nearest existing folder above it), or the file itself; None when none of them is."""
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), path.parent)
    with contextlib.suppress(OSError, AttributeError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"the disk holding {display_path(os.fspath(folder))} is mounted read-only"
    if not os.access(folder, os.W_OK):
        return f"the folder {display_path(os.fspath(folder))} is read-only for this user"
    for file in (path, wal_path(path), path.with_name(path.name + "-shm")):
        if file.exists() and not os.access(file, os.W_OK):
            return f"the file {display_path(os.fspath(file))} is read-only for this user"
    return None


def not_writable(root: Path, exc: OSError) -> LibraryWriteError | None:
    """The library's own write error for an OSError that says this user may not write `root`'s files (EACCES,
    EPERM, EROFS: an upload stored in a read-only library), the same class and sentence a refused database write
    gets (`access_error`: the REST answers it 403 read_only_library); None for any other OSError."""
    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
        return None
    where = Path(exc.filename) if isinstance(exc.filename, str) else root
    why = read_only_part(where / "x" if where.is_dir() else where) or (exc.strerror or str(exc)).lower()
    return LibraryWriteError(errno.EACCES, f"cannot write library {display_path(os.fspath(root))}: {why}: give this "
                                           f"user write access to {display_path(os.fspath(root))} and its files, or "
                                           "copy the library to a folder it can write")


def open_writable(path: Path) -> sqlite3.Connection:
    """The library's connection for reading and writing (WAL, autocommit: writes go through transactions); an
    sqlite3.Error, the connection closed, when SQLite refuses it (`access_error` says whether for access)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a process crash loses nothing committed; only a power cut can
        # lose the last transactions, and never corrupts the file.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={round(BUSY_TIMEOUT_S * 1000)}")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes, for a library this user cannot write (a read-only folder, file or
    mount). When the database alone holds every committed write (no write-ahead log, or an empty one: SQLite
    removes it when the last writer closes), it is opened `immutable` (no locks, no shared memory, which needs a
    folder this user can write), and its user must open it anew when `file_stamp` changes. While a writer has
    it open (a log with writes), SQLite reads the log through the writer's shared memory, if it can read that;
    else this is the access error (`access_error`). Any write through it is SQLite's "readonly database"."""
    settled = _size(wal_path(path)) == 0
    uri = f"{path.resolve().as_uri()}?mode=ro{'&immutable=1' if settled else ''}"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        if not settled:
            conn.execute(f"PRAGMA busy_timeout={round(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the log now, or fails now
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def file_stamp(path: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """(inode, size, mtime) of the database and of its write-ahead log (None when absent): what a writer with
    access (the owner's `index add` beside a read-only server) changes, and a read-only connection must see."""
    stamps: list[tuple[int, int, int] | None] = []
    for file in (path, wal_path(path)):
        try:
            info = os.stat(file)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)
