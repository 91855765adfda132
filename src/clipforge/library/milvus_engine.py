"""How the Milvus engine fails, in one sentence each: the store errors, and the embedded (milvus-lite)
folder's own checks.

pymilvus and milvus-lite report failures as long logged tracebacks and terse exceptions ("Open local milvus
failed"); a user needs one line saying whether the server is away (a re-run finishes the rest), another
process holds the embedded folder (`StoreLockedError`: stop it or use a server), or the folder's files are
damaged (`StoreDamagedError`: restore it or index again). `MilvusStore.call` turns every engine exception
into one of these; the folder checks here run before the engine touches a path.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipforge.errors import Notice, UserError
from clipforge.library.backend import StoreSpec

__all__ = ["ENGINES", "CollectionMismatchError", "StoreConnectionError", "StoreDamagedError", "StoreLockedError",
           "StoreUnavailableError", "call_rebuilding_index", "check_lite_folder", "damage", "drop_index_files",
           "engine_reason", "index_unreadable", "interrupted", "is_engine_error", "lite_open_failure", "no_library",
           "not_loaded", "quiet_engine_logs"]


class StoreUnavailableError(UserError, OSError):
    """The Milvus server could not be reached or refused a request: the environment's fault, not the request's,
    so `serve` answers 503 (a 500 told clients the server had a bug), with a sentence that names no host."""

    http_status = 503
    client_detail = "the library's Milvus store could not serve this request (the server log names it and why)"


class StoreConnectionError(StoreUnavailableError):
    """The server went away or did not answer in time (`interrupted`): the one failure a re-run gets past, so the
    only one an interrupted `index add` tells to run again (a refusal of the request itself repeats for ever)."""

    client_detail = "the library's Milvus store is not answering (the server log names it); try again shortly"
    retry_after = 10.0


class CollectionMismatchError(StoreUnavailableError):
    """A collection clipforge would use exists with fields clipforge did not make (`milvus_layout.check_layout`)."""


class StoreLockedError(StoreUnavailableError):
    """Another process holds the milvus-lite folder (the embedded engine allows one process at a time)."""


class StoreDamagedError(StoreUnavailableError):
    """A milvus-lite folder whose files cannot be read (or that is no milvus-lite store at all)."""


ENGINES = ("pymilvus", "grpc", "milvus_lite")
# Words of the embedded engine's errors about unreadable files (a truncated parquet segment, a garbage
# index file, a lost manifest or schema): damage that no re-run repairs.
_DAMAGE = re.compile(r"corrupt|magic bytes|pickled|manifest|schema\.json|does not exist|not a parquet|"
                     r"unexpected end|invalid load key|truncated", re.IGNORECASE)


# numpy's words for an index file cut short or overwritten (milvus-lite's FLAT index is a numpy array file), and the
# engine's for one it cannot decode (a data file's failure is tried this way too: the retry fails again, and that is
# said as the store's damage): a sidecar written in place when a collection is first loaded after a write (milvus-lite builds a
# segment's vector and scalar indexes lazily, `storage.segment.build_or_load_index`), by a plain `search` too
_INDEX_UNREADABLE = re.compile(r"Failed to read all data|No data left in file|seems not fully written|"
                               r"reading array header|contains pickled|index file|\.s?idx\b", re.IGNORECASE)
INDEX_FILES = ("*.idx", "*.sidx")
"""milvus-lite's index sidecars of a segment (`milvus_lite.index.files`): derived from the segment's data, which the
engine rebuilds from it when one is missing."""


def index_unreadable(reason: str) -> bool:
    """Whether an engine failure says an index file could not be read (repaired by `drop_index_files`)."""
    return bool(_INDEX_UNREADABLE.search(reason))


def drop_index_files(root: Path, collection: str | None) -> list[Path]:
    """Delete the index sidecars of `collection` (of every collection when None) of the milvus-lite store at `root`,
    for the engine to rebuild from the data they index; the files deleted.

    milvus-lite writes a segment's index file in place (not to a temporary renamed over it) the first time the
    collection is loaded after a write: a process killed there, or refused the write by a full disk or a file-size
    limit, left it short, and every command after failed on it for good ("Failed to read all data for array ...
    (file seems not fully written?)"), though the photos' rows and vectors were whole."""
    base = root / "collections"
    folders = [base / collection] if collection else [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    dropped = []
    for folder in folders:
        for pattern in INDEX_FILES:
            for path in sorted(folder.glob(f"partitions/*/indexes/{pattern}")):
                path.unlink(missing_ok=True)
                dropped.append(path)
    return dropped


def call_rebuilding_index(root: Path, collection: str | None, reason: str, fn: Callable[..., Any], *args: Any,
                          **kwargs: Any) -> Any:
    """`fn(*args)` again once the index files of `collection` of the milvus-lite store at `root` are deleted, after
    a failure (`reason`) that said an index file could not be read; a notice says so. Nothing to delete, or a second
    failure, is the store's damage (`StoreDamagedError`), said with what the repair did."""
    dropped = drop_index_files(root, collection)
    if not dropped:
        raise StoreDamagedError(damage(root, reason, collection) or f"milvus-lite store {root} is damaged "
                                f"({reason}); restore the folder from a backup")
    warnings.warn(Notice(
        f"milvus-lite store {root}: an index file could not be read ({reason}; a process stopped while writing it, "
        f"or the disk refused it); deleted {len(dropped)} index file{'s' if len(dropped) != 1 else ''} of its "
        "photos' vectors, which the engine builds again from them: nothing stored is lost"), stacklevel=4)
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if not is_engine_error(exc):
            raise
        again = engine_reason(exc)
        raise StoreDamagedError(
            damage(root, again, collection) or f"milvus-lite store {root} is damaged: {again} (after its index files "
            "were deleted to be built again); restore the folder from a backup, or index the photos again into a "
            "new store") from None


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


# The engine's words when the connection, not the request, failed: pymilvus's "Fail connecting to server on HOST:PORT,
# illegal connection params or server unavailable" (a server killed mid-run), gRPC's UNAVAILABLE / DEADLINE_EXCEEDED
# ("failed to connect to all addresses", "Deadline Exceeded"), a stream cut ("Socket closed", "Connection reset").
_INTERRUPTED = re.compile(r"unavailable|fail(?:ed)? (?:connecting|to connect)|connection (?:refused|reset|closed|"
                          r"lost|aborted)|socket closed|broken pipe|deadline|timed? ?out|goaway|stream removed",
                          re.IGNORECASE)
_INTERRUPTED_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED")


def interrupted(exc: BaseException) -> bool:
    """Whether an engine failure is the connection's (the server away or too slow), which a re-run gets past, not a
    refusal of the request (a schema, a dimension, a quota, a permission), which repeats on every run."""
    code = getattr(exc, "code", None)
    code = code() if callable(code) else code  # a grpc.RpcError's is a method returning a StatusCode
    if getattr(code, "name", None) in _INTERRUPTED_CODES:
        return True
    return bool(_INTERRUPTED.search(getattr(exc, "message", None) or str(exc)))


# The engine's words for a collection that is not in memory: a server's "collection not loaded" (code 101; "not fully
# loaded" while a load runs; "was not loaded into memory" before 2.3) and milvus-lite's "Collection 'C' is in state
# 'released'; call load() before search/get/query". Released by an admin freeing memory (`release_collection`), or
# by a milvus-lite server's restart, which brings every collection back released.
_NOT_LOADED = re.compile(r"not (?:fully )?loaded|not been loaded|in state 'released'", re.IGNORECASE)
_NOT_LOADED_CODE = 101  # Milvus's ErrCollectionNotLoaded


def not_loaded(exc: BaseException) -> bool:
    """Whether an engine failure says the collection is released (not loaded): `MilvusStore.call` loads it and asks
    once more, where it was a refusal a running `serve` repeated until some other process opened the store."""
    return getattr(exc, "code", None) == _NOT_LOADED_CODE or bool(
        _NOT_LOADED.search(getattr(exc, "message", None) or str(exc)))


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
    for manifest in sorted(folder.glob("collections/*/manifest.json")):
        _check_manifest(manifest)


def _check_manifest(manifest: Path) -> None:
    """A notice for a collection whose manifest cannot be read: milvus-lite then reads `manifest.json.prev`, its
    state one save before, with a log line nobody sees (the engine's logs are quiet), and the photos of the last
    write were missing without a word ("the library has no photos yet", exit 0). milvus-lite saves it atomically;
    a damaged one was overwritten, truncated or lost by the disk."""
    try:
        json.loads(manifest.read_bytes())
        return
    except (OSError, ValueError):
        pass
    fallback = manifest.with_name("manifest.json.prev")
    warnings.warn(Notice(
        f"milvus-lite store file {manifest} cannot be read; the engine reads "
        + (f"{fallback.name}, the collection as it was one save before: photos stored by its last write may be "
           "missing (`clipforge index add` of their folders stores them again)" if fallback.is_file() else
           "nothing in its place")), stacklevel=4)


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
