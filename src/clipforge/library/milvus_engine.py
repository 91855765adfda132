"""How the Milvus engine fails, in one sentence each: the store errors, and the embedded (milvus-lite)
folder's own checks.

pymilvus and milvus-lite report failures as long logged tracebacks and terse exceptions ("Open local milvus
failed"); a user needs one line saying whether the server is away (a re-run finishes the rest), another
process holds the embedded folder (`StoreLockedError`: stop it or use a server), or the folder's files are
damaged (`StoreDamagedError`: restore it or index again). `MilvusStore.call` turns every engine exception
into one of these; the folder checks here run before the engine touches a path.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from clipforge.library.backend import StoreSpec

__all__ = ["ENGINES", "StoreDamagedError", "StoreLockedError", "StoreUnavailableError", "check_lite_folder",
           "damage", "engine_reason", "is_engine_error", "lite_open_failure", "no_library", "quiet_engine_logs"]


class StoreUnavailableError(OSError):
    """The Milvus server could not be reached or refused a request."""


class StoreLockedError(StoreUnavailableError):
    """Another process holds the milvus-lite folder (the embedded engine allows one process at a time)."""


class StoreDamagedError(StoreUnavailableError):
    """A milvus-lite folder whose files cannot be read (or that is no milvus-lite store at all)."""


ENGINES = ("pymilvus", "grpc", "milvus_lite")
# Words of the embedded engine's errors about unreadable files (a truncated parquet segment, a garbage
# index file, a lost manifest or schema): damage that no re-run repairs.
_DAMAGE = re.compile(r"corrupt|magic bytes|pickled|manifest|schema\.json|does not exist|not a parquet|"
                     r"unexpected end|invalid load key|truncated", re.IGNORECASE)


def no_library(spec: StoreSpec) -> str:
    """The sentence for a store that holds no library yet (a mistyped --store, or nothing indexed)."""
    return (f"no library in {spec.describe()}: check --store, or build one with `clipforge index add FOLDER "
            "--store ...` (`clipforge serve` can also start an empty one with --create)")


def quiet_engine_logs() -> None:
    """Silence pymilvus' and milvus-lite's own error logs (13-51 lines of traceback per failure).

    Every engine failure reaches the caller through `MilvusStore.call` as one exception sentence that
    carries the engine's reason, so their logged tracebacks only repeat it. Loggers an application set
    to a level of its own (other than pymilvus' default WARNING) are left alone."""
    for name, default in (("pymilvus", logging.WARNING), ("milvus_lite", logging.NOTSET)):
        logger = logging.getLogger(name)
        if logger.level in (default, logging.NOTSET):
            logger.setLevel(logging.CRITICAL)


def is_engine_error(exc: BaseException) -> bool:
    """Raised by pymilvus, gRPC or milvus-lite (not a bug of ours: those propagate as they are)."""
    return type(exc).__module__.split(".")[0] in ENGINES


def engine_reason(exc: BaseException) -> str:
    """The first line of an engine exception's message, at most 300 characters."""
    return (getattr(exc, "message", None) or str(exc)).splitlines()[0][:300]


def check_lite_folder(spec: StoreSpec, folder: Path, create: bool) -> None:
    """Refuse, before the engine touches it, a path that is no milvus-lite store (a file: milvus-lite keeps
    a folder), and with `create=False` one that holds no store at all."""
    if folder.exists() and not folder.is_dir():
        with open(folder, "rb") as handle:
            head = handle.read(16)
        what = ("an SQLite database (the embedded store: open it with --library, without --store)"
                if head.startswith(b"SQLite format 3") else "an empty file" if not head else "a plain file")
        raise StoreDamagedError(f"{folder} is not a milvus-lite store: it is {what}, and milvus-lite keeps a "
                                "folder at that path; check --store")
    if not create and not (folder / "collections").is_dir():
        raise FileNotFoundError(no_library(spec))


def lite_open_failure(folder: Path, exc: Exception) -> StoreUnavailableError:
    """Why the embedded engine would not open `folder` (pymilvus says only "Open local milvus failed")."""
    try:
        import fcntl
    except ImportError:  # Windows: no probe, the engine's own words
        fcntl = None
    lock = folder / "LOCK"
    if fcntl is not None and lock.is_file():
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            return StoreLockedError(
                f"milvus-lite store {folder} is in use by another process (a running `clipforge serve`?): the "
                "embedded milvus-lite file allows one process at a time; stop that process, or use a Milvus "
                "server (--store milvus://HOST:PORT/NAME)")
        finally:
            os.close(fd)
    return StoreDamagedError(f"cannot open milvus-lite store {folder} ({engine_reason(exc)}); check that --store names a "
                             "milvus-lite folder")


def damage(root: Path, reason: str, collection: str | None) -> str | None:
    """The sentence for an engine failure caused by an unreadable file of the milvus-lite store at
    `root`, naming the file (or the collection folder that lost one); None for any other failure."""
    named = next((m for m in re.findall(r"'([^']+)'", reason) if Path(m).is_absolute()
                  and Path(m).resolve().is_relative_to(root.resolve())), None)
    folder = root / "collections" / collection if collection else None
    if named is not None:
        where = f"{named} cannot be read"
    elif folder is not None and folder.is_dir() and not (folder / "schema.json").exists():
        where = f"{folder / 'schema.json'} is missing"
    elif _DAMAGE.search(reason):
        where = f"{folder if folder is not None and folder.is_dir() else root} cannot be read"
    else:
        return None
    return (f"milvus-lite store {root} is damaged: {where} ({reason}); restore the folder from a backup, or "
            "index the photos again into a new store")
