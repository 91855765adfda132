"""The library database as a file: is it whole, and how file names are written into it.

A truncated, emptied or overwritten database must be reported as such - one sentence naming
the file and what to do - and never be mistaken for a new, empty library (which would then
"rebuild" the library's index from nothing). The cheap checks here read only the 100-byte
SQLite header; damage deeper in the file surfaces as SQLITE_CORRUPT on the query that
meets it, which `damage_error` turns into the same error.

File names are stored losslessly: as text when they are valid UTF-8, otherwise as their raw
bytes (a BLOB in the same column), so a name like b"caf\\xe9.jpg" is indexed, found again by
the next run, and shown escaped (``caf\\xe9.jpg``) wherever text is required.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

from clipforge.library.schema import SchemaError

__all__ = ["DamagedLibraryError", "check_database_file", "damage_error", "display_path", "from_db", "to_db"]

_MAGIC = b"SQLite format 3\x00"
_DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class DamagedLibraryError(SchemaError):
    """The library database cannot be read as a library (truncated, emptied, overwritten)."""


def damaged(path: str | os.PathLike[str], what: str) -> DamagedLibraryError:
    return DamagedLibraryError(
        f"library database {display_path(os.fspath(path))} is damaged ({what}); nothing in the library was "
        "changed: restore that file from a backup, or move the library folder aside and index the photos again "
        "with `clipforge index add`")


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


def check_database_file(path: Path, create: bool) -> None:
    """Raise DamagedLibraryError unless `path` is absent, a whole SQLite file, or (when `create`) empty."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise damaged(path, "not a regular file")
    if info.st_size == 0:
        if create:
            return
        raise damaged(path, "the file is empty (0 bytes)")
    problem = _truncation(path)
    wal = path.with_name(path.name + "-wal")
    for _ in range(10):  # a checkpoint in another process may be copying the WAL into the file right now
        if problem is None or not problem.startswith("truncated") or not wal.exists():
            break
        time.sleep(0.05)
        problem = _truncation(path)
    if problem is not None:
        raise damaged(path, problem)


def damage_error(path: Path, exc: sqlite3.DatabaseError) -> DamagedLibraryError | None:
    """The error to raise for `exc` when it means the file is damaged (not locked, not full)."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc)
    if name.startswith(_DAMAGE_CODES) or "malformed" in text or "not a database" in text:
        return damaged(path, text)
    return None


def to_db(path: str) -> str | bytes:
    """The value stored for a file name: the text, or its raw bytes when it is not valid UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def from_db(value: str | bytes) -> str:
    """The file name as Python spells it (undecodable bytes as surrogates, as `os.listdir` gives them)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def display_path(path: str) -> str:
    """`path` as printable UTF-8 text: undecodable bytes shown as \\xNN."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path
