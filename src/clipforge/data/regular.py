"""Read a file only if it is a regular file, without ever blocking.

Every reader of user files goes through `read_regular_file`: a FIFO named ``x.jpg`` would block
a plain ``open()`` forever and a device would stream without end, and a scan that checked the
type first can be raced (the file swapped for a FIFO between the check and the read). The open
uses O_NONBLOCK and the type is checked on the open descriptor, so the check and the read see
the same file.
"""

from __future__ import annotations

import os
import stat

from clipforge.errors import UserError

__all__ = ["NotRegularFileError", "read_regular_file", "special_kind"]

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


class NotRegularFileError(UserError, ValueError):
    """`path` is a FIFO, socket, device or folder; `reason` says which ("not a regular file (a FIFO)")."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)} is {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def special_kind(mode: int) -> str | None:
    """None for a regular file, else what it is ("a FIFO", "a directory", ...)."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of `path`; `NotRegularFileError` for anything but a regular file, OSError as usual."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotRegularFileError(path, f"not a regular file ({kind})")
        with os.fdopen(fd, "rb") as f:
            fd = -1  # the file object owns it now
            return f.read()
    finally:
        if fd >= 0:
            os.close(fd)
