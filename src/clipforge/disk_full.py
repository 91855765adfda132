"""A write the disk refuses for want of room (full, a quota, ``ulimit -f``): one `DiskFullError` whoever wrote, and
`disk_full` the one test for it (the OS's errnos, SQLite's, the library's, safetensors' Rust "(os error 27)"), asked
by the commands, the trainer and the server (507). Below every layer, beside `clipforge.atomic`, which raises it
naming the file an atomic write was for.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DISK_FULL_ERRNOS", "DiskFullError", "disk_full", "disk_full_error", "full_errno", "naming_full_disk",
           "refusal_words"]

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""No room to write: a full disk, a used-up quota, a file-size limit (`ulimit -f`, a filesystem's largest file)."""

_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # Rust's io::Error, as safetensors reports it


class DiskFullError(OSError):
    """A write the disk refused for want of room, as one sentence naming the file (`filename`), what happened,
    what is left and what to do (`disk_full_error`). An OSError, so every `except OSError` and the CLI's one
    error edge (one ``error:`` line, exit status 2) take it; `errno` is the refusal's own (EFBIG, ENOSPC, ...)."""

    why: str = "the disk refused a write"
    fix: str = "free some space (or raise the limit)"

    def __str__(self) -> str:  # one sentence, not "[Errno 27] ..."
        return str(self.strerror)

    def advising(self, kept: str | None = None, then: str | None = None) -> DiskFullError:
        """The same refusal, saying what the caller knows better: what is `kept`, and what to do `then` (after
        freeing space: "continue the run with --resume latest")."""
        return disk_full_error(self.filename if self.filename is not None else "a file", self.errno or errno.EIO,
                               kept=kept, then=then, why=self.why, fix=self.fix)


def full_errno(exc: BaseException) -> int | None:
    """The errno of `exc` when it means "no room to write", else None: an OSError's own (one of
    `DISK_FULL_ERRNOS`), a `DiskFullError`'s (the library's for SQLite's I/O error is EIO), ENOSPC for SQLite's
    "database or disk is full", and the errno a Rust writer's message carries ("I/O error: File too large
    (os error 27)": safetensors' SafetensorError, which is no OSError)."""
    if isinstance(exc, DiskFullError):
        return exc.errno or errno.EIO
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in DISK_FULL_ERRNOS else None
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001  (a broken __str__ says nothing about the disk)
        return None
    if getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL" or "database or disk is full" in text:
        return errno.ENOSPC
    found = _RUST_OS_ERROR.search(text)
    return int(found.group(1)) if found and int(found.group(1)) in DISK_FULL_ERRNOS else None


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` means "no room to write" (`full_errno`): the one test every layer asks."""
    return full_errno(exc) is not None


def refusal_words(code: int) -> tuple[str, str]:
    """(what happened, what to do) for a refusal's errno, in the words every writer uses (`index add`, `embed`,
    `index rebuild`, the trainer)."""
    if code == errno.ENOSPC:
        return "the disk is full", "free some space"
    if code == errno.EFBIG:
        return "the file reached this process's file-size limit (`ulimit -f`)", "raise the limit"
    if code == errno.EDQUOT:
        return "the disk quota is used up", "free some space (or raise the quota)"
    return (f"the disk refused a write ({os.strerror(code)}: full, or a file-size limit such as `ulimit -f` "
            "reached)", "free some space (or raise the limit)")


def _shown(path: str | os.PathLike[str]) -> str:
    """A path as printable text: undecodable bytes of a file name as \\xNN (`dbfile.display_path`'s rule)."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def disk_full_error(path: str | os.PathLike[str], code: int, *, kept: str | None = None, then: str | None = None,
                    why: str | None = None, fix: str | None = None) -> DiskFullError:
    """The `DiskFullError` for a write of `path` refused with errno `code`: "could not write PATH: WHY; KEPT: FIX
    and THEN". `kept` defaults to what an atomic write leaves (nothing half-written), `then` to running the
    command again; `why` and `fix` to the errno's own words."""
    own_why, own_fix = refusal_words(code)
    why, fix = why or own_why, fix or own_fix
    kept = kept or "nothing half-written was left"
    error = DiskFullError(code, f"could not write {_shown(path)}: {why}; {kept}: {fix} and "
                                f"{then or 'run the command again'}", os.fspath(path))
    error.why, error.fix = why, fix
    return error


@contextmanager
def naming_full_disk(path: str | os.PathLike[str], *, kept: str | None = None,
                     then: str | None = None) -> Iterator[None]:
    """Turn a "no room to write" error raised by the block (`disk_full`) into the `DiskFullError` naming
    `path`, the file the block writes (a writer's own report names no file, or a temporary one)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        code = full_errno(exc)
        if code is None:
            raise
        raise disk_full_error(path, code, kept=kept, then=then) from exc
