"""Read a file only if it is a regular file, without ever blocking.

Every reader of user files goes through `read_regular_file`: a FIFO named ``x.jpg`` would block
a plain ``open()`` forever and a device would stream without end, and a scan that checked the
type first can be raced (the file swapped for a FIFO between the check and the read). The open
uses O_NONBLOCK and the type is checked on the open descriptor, so the check and the read see
the same file. A size bound is checked on that descriptor too, before anything is read: a 2 GB
sparse file named ``x.jpg`` cost 4.4 GB of memory to index, and an indexed photo swapped for one
cost every anonymous request for it 2 GB before the size check refused it.

A socket cannot be opened at all (ENXIO, "No such device or address"): that refusal is reworded from the
path's type too, so a socket is "not a regular file (a socket)" like the others. The image loader
(`clipforge.image.loading`) reads every path it is given here, so `eval` and `load_image` say the same.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from clipforge.errors import UserError

__all__ = ["FileTooLargeError", "NotRegularFileError", "file_size_text", "open_regular_file", "read_regular_file",
           "special_kind"]

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


class NotRegularFileError(UserError, ValueError):
    """`path` is a FIFO, socket, device or folder; `reason` says which ("not a regular file (a FIFO)"), `kind`
    what it is ("a FIFO", as `special_kind` says; None when not known) for a reader that words a folder its own way."""

    def __init__(self, path: str | os.PathLike[str], reason: str, kind: str | None = None) -> None:
        super().__init__(f"{os.fspath(path)} is {reason}")
        self.path = os.fspath(path)
        self.reason = reason
        self.kind = kind


class FileTooLargeError(UserError, ValueError):
    """`path` holds more than the reader's bound; `reason` says how much without the path."""

    def __init__(self, path: str | os.PathLike[str], size: int, limit: int) -> None:
        self.path = os.fspath(path)
        self.reason = f"file is {file_size_text(size)}, larger than the {file_size_text(limit)} read at most"
        super().__init__(f"{self.path}: {self.reason}")


def file_size_text(n: int) -> str:
    return f"{n:,} bytes" if n < 10**6 else f"{n / 1e6:,.1f} MB"


def special_kind(mode: int) -> str | None:
    """None for a regular file, else what it is ("a FIFO", "a directory", ...)."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def read_regular_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of `path`; `NotRegularFileError` for anything but a regular file, `FileTooLargeError` for
    one over `max_bytes` (its size on the open descriptor, and what is read: a file growing meanwhile is
    refused too), OSError as usual."""
    with open_regular_file(path, max_bytes) as f:
        if max_bytes is None:
            return f.read()
        return _read_at_most(f, os.fstat(f.fileno()).st_size, max_bytes, path)


def open_regular_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> BinaryIO:
    """`path` opened for reading as `read_regular_file` opens it (refusals alike, the size bound checked on the
    descriptor), for a reader that reads only what it needs: the image loader hands it to Pillow, which kept a
    whole copy of the file's bytes alive through the decode when given them (a 144 MB TIFF: +138 MB of peak
    memory; at the 1 GiB bound, 1 GiB more per decode running)."""
    f = open(path, "rb", opener=_open_regular)  # noqa: SIM115 (the caller closes it) # through `open`: a refusal simulated there reaches it too
    try:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise FileTooLargeError(path, size, max_bytes)
    except BaseException:
        f.close()
        raise
    return f


def _open_regular(path: str | bytes, flags: int) -> int:
    """The `open` opener of `read_regular_file`: a path that is no regular file is refused by its type before it
    is opened (opening one has effects on others: a FIFO's writer was released, then killed by SIGPIPE when it
    was closed; a watchdog device arms, a tape rewinds); then O_NONBLOCK (a FIFO swapped in after that check
    opens at once), and the type checked again on the descriptor before anything reads from it."""
    try:
        kind = special_kind(os.stat(path).st_mode)
    except OSError:
        kind = None  # missing, a dangling link, no permission: the open below says which
    if kind is not None:
        raise NotRegularFileError(path, f"not a regular file ({kind})", kind)
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a device without its driver) cannot be opened: say which
            _refuse_special(path, exc)
        raise
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotRegularFileError(path, f"not a regular file ({kind})", kind)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_special(path: str | bytes, cause: OSError) -> None:
    """NotRegularFileError when `path` is no regular file (its type from a stat: it was not opened)."""
    try:
        kind = special_kind(os.stat(path).st_mode)
    except OSError:
        return
    if kind is not None:
        raise NotRegularFileError(path, f"not a regular file ({kind})", kind) from cause


def _read_at_most(f: BinaryIO, expected: int, max_bytes: int, path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, `FileTooLargeError` once more than `max_bytes` have come (it grew since fstat). A read
    of `max_bytes + 1` would allocate that much up front, for every small photo; this reads what fstat said,
    then what has been added since, a megabyte at a time."""
    chunks = [f.read(expected)]
    total = len(chunks[0])
    while chunk := f.read(min(1 << 20, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLargeError(path, total, max_bytes)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
