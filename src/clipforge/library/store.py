"""The SQLite store: the library's single source of truth.

Everything else in a library (FAISS indexes, thumbnails) can be rebuilt from this file, so
it is the only thing that must survive a crash. WAL mode plus one transaction per indexing
batch gives exactly that: a `kill -9` loses at most the uncommitted batch, and readers (a
web server) never block the writer. Embeddings are keyed by (content sha256, model
fingerprint), so identical bytes under two paths are embedded once and two models'
vectors can never be confused.

Reads are methods of `Store`; every write goes through one object, the `Transaction` that
`Store.transaction()` yields, so "what commits together" is visible at the call site.
Connections are per thread (sqlite3 objects must not be shared across threads); writes
from this process are serialised by a lock, writes from other processes by SQLite itself.

A damaged database (truncated, overwritten, emptied) is reported as `DamagedLibraryError`
naming the file, never as a bare sqlite3 traceback, and nothing derived from it is touched.
File names are stored losslessly: text when they are valid UTF-8, else their raw bytes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from clipforge.library.dbfile import (
    DamagedLibraryError,
    LibraryWriteError,
    access_error,
    check_database_file,
    damage_error,
    damaged,
    display_path,
    file_stamp,
    from_db,
    open_read_only,
    open_writable,
    to_db,
    write_error,
)
from clipforge.library.schema import SCHEMA_VERSION, SchemaError, migrate
from clipforge.library.transaction import Transaction, chunks

__all__ = ["SCHEMA_VERSION", "DamagedLibraryError", "FileState", "ImageRecord", "LibraryWriteError", "SchemaError",
           "Store", "Transaction"]

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ImageRecord:
    """One file known to the library (status 'ok' = embedded, 'failed' = `error` says why)."""

    id: int
    path: str
    sha256: str | None
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    added_at: float
    status: str
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; a path that is not valid UTF-8 is shown with backslash escapes."""
        data = asdict(self)
        data["path"] = display_path(self.path)
        return data


@dataclass(frozen=True)
class FileState:
    """What incremental indexing needs to decide "unchanged" without opening the file."""

    id: int
    size: int
    mtime_ns: int
    status: str
    sha256: str | None


_IMAGE_COLUMNS = "id, path, sha256, size, mtime_ns, width, height, added_at, status, error"


_CHECKED_META = "vectors_checked:"  # the `removals` value at which no image lacked its vector


def _record(row: Sequence[Any]) -> ImageRecord:
    return ImageRecord(row[0], from_db(row[1]), *row[2:])


def _reads(method: _F) -> _F:
    """Turn SQLite's "malformed"/"not a database" during a read into DamagedLibraryError."""
    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self.guard():
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class Store:
    """Typed access to one library database; safe to share between threads."""

    def __init__(self, db_path: str | Path, create: bool = True) -> None:
        self.path = Path(db_path)
        if not self.path.exists() and not create:
            raise FileNotFoundError(f"no library database at {self.path} (run `clipforge index add FOLDER` first, or "
                                    "search a folder directly: `clipforge search QUERY --in FOLDER`)")
        pending = check_database_file(self.path, create)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.read_only = False  # set when this user can read the library but not write it (`_open`)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._all: list[sqlite3.Connection] = []
        if pending is not None:
            self._finish_interrupted_checkpoint(pending)
        with self.guard():
            migrate(self, self.path)

    def _finish_interrupted_checkpoint(self, problem: str) -> None:
        """A short file beside its WAL (see `clipforge.library.dbfile`): let SQLite judge the pair, then
        copy the WAL into the file. Damage only if SQLite cannot read every page whole."""
        try:
            with self.guard():
                verdict = self.conn().execute("PRAGMA integrity_check").fetchall()
        except DamagedLibraryError:
            self.close()
            raise
        if [tuple(r) for r in verdict] != [("ok",)]:
            self.close()
            raise damaged(self.path, f"{problem}, and its write-ahead log does not complete it "
                                     f"({'; '.join(str(r[0]) for r in verdict[:3])})")
        with contextlib.suppress(sqlite3.Error):  # PASSIVE: never waits for another process's readers or writer
            self.conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finished = check_database_file(self.path, create=False) is None
        warnings.warn(
            f"library database {display_path(str(self.path))} was left half-written by an interrupted write "
            "(a full disk, a file-size limit or a crash during a checkpoint); SQLite checked it whole and "
            + ("it is complete again: nothing was lost" if finished else
               "it can be read, but the disk still refuses the rest: free some space before adding photos"),
            stacklevel=4)

    # -- connections and transactions -------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; writes go through `transaction`)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.read_only and self._local.stamp != file_stamp(self.path):
            self._drop(conn)  # someone with write access changed the library: read it anew
            conn = None
        if conn is None:
            with self.guard():
                conn = self._open()
            self._local.conn = conn
            self._local.stamp = file_stamp(self.path) if self.read_only else None
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        self._local.conn = None

    def _open(self) -> sqlite3.Connection:
        """A new connection: writable, or read-only for a library this user may read but not write (then
        for good: `dbfile.open_read_only`)."""
        if self.read_only:
            return open_read_only(self.path)
        try:
            return open_writable(self.path)
        except sqlite3.Error as exc:
            if access_error(self.path, exc) is None or not self.path.is_file():
                raise
        self.read_only = True  # a library this user may read but not write: search it as it is
        return open_read_only(self.path)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Report a damaged database file as one DamagedLibraryError naming it, and a write the disk
        refused (full, file-size limit) as one LibraryWriteError."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            error: Exception | None = (damage_error(self.path, exc) or write_error(self.path, exc)
                                       or access_error(self.path, exc))
            if error is None:
                raise
            raise error from exc

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic write: everything done through the yielded object commits together or not at all."""
        with self._lock, self.guard():
            conn = self.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(conn)
                conn.execute("COMMIT")
            except BaseException:
                # A COMMIT the disk refused leaves the transaction open; an I/O error may have ended it.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.ProgrammingError):  # closed from another thread already
                    conn.close()
            self._all.clear()
            self._local = threading.local()

    # -- meta -------------------------------------------------------------------------------
    @_reads
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    @_reads
    def has_meta_prefix(self, prefix: str) -> bool:
        """Whether some meta key starts with `prefix` (an index range scan, not LIKE)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return self.conn().execute("SELECT 1 FROM meta WHERE key >= ? AND key < ? LIMIT 1",
                                   (prefix, end)).fetchone() is not None

    def generation(self) -> int:
        """Bumped by every write that changes which vectors are searchable (cheap staleness check)."""
        return int(self.get_meta("generation", "0") or 0)

    def removals(self) -> int:
        return int(self.get_meta("removals", "0") or 0)

    @_reads
    def model_spaces(self) -> list[tuple[str, str | None, int, int]]:
        """(fingerprint, name, dimension, vectors) of each model with a space here, oldest first."""
        rows = self.conn().execute(
            "SELECT m.fingerprint, m.name, m.embed_dim, (SELECT COUNT(*) FROM embeddings e WHERE e.model = "
            "m.fingerprint) FROM models m ORDER BY m.created_at").fetchall()
        return [(r[0], r[1] or None, int(r[2]), int(r[3])) for r in rows]

    # -- images -----------------------------------------------------------------------------
    @_reads
    def image(self, image_id: int) -> ImageRecord | None:
        row = self.conn().execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (int(image_id),)).fetchone()
        return _record(row) if row else None

    @_reads
    def image_by_path(self, path: str) -> ImageRecord | None:
        row = self.conn().execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE path = ?", (to_db(path),)).fetchone()
        return _record(row) if row else None

    @_reads
    def images_with_sha(self, sha256: str, status: str | None = "ok") -> list[ImageRecord]:
        sql = f"SELECT {_IMAGE_COLUMNS} FROM images WHERE sha256 = ?"
        params: tuple[Any, ...] = (sha256,)
        if status is not None:
            sql += " AND status = ?"
            params += (status,)
        return [_record(r) for r in self.conn().execute(sql + " ORDER BY id", params).fetchall()]

    @_reads
    def list_images(self, status: str | None = None, limit: int | None = None, offset: int = 0) -> list[ImageRecord]:
        sql = f"SELECT {_IMAGE_COLUMNS} FROM images"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY id LIMIT ? OFFSET ?"
        params += [-1 if limit is None else int(limit), int(offset)]
        return [_record(r) for r in self.conn().execute(sql, params).fetchall()]

    @_reads
    def images_after(self, after_id: int, limit: int) -> list[ImageRecord]:
        """Up to `limit` images with an id above `after_id`, by id: keyset pages that stream every record of a
        library of any size (`index copy`), each page one index range, where an OFFSET rescans what it skips."""
        rows = self.conn().execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id > ? ORDER BY id LIMIT ?",
                                   (int(after_id), int(limit))).fetchall()
        return [_record(r) for r in rows]

    @_reads
    def file_states(self) -> dict[str, FileState]:
        """path -> state for every known file, read once per indexing run."""
        rows = self.conn().execute("SELECT path, id, size, mtime_ns, status, sha256 FROM images").fetchall()
        return {from_db(r[0]): FileState(r[1], r[2], r[3], r[4], r[5]) for r in rows}

    # -- embeddings -------------------------------------------------------------------------
    @_reads
    def embedded_shas(self, model: str) -> set[str]:
        rows = self.conn().execute("SELECT sha256 FROM embeddings WHERE model = ?", (model,)).fetchall()
        return {r[0] for r in rows}

    @_reads
    def embedding_count(self, model: str) -> int:
        return int(self.conn().execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()[0])

    def iter_embeddings(self, model: str, chunk: int = 65536, after_id: int = -1,
                        upto_id: int | None = None, dim: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 [n], vectors float32 [n, d]) in id order, `chunk` rows at a time,
        for ids in (`after_id`, `upto_id`]. A vector that is not `dim` values long (or not as long as the
        others) is `DamagedLibraryError` naming it and the photos that hold it (a blob cut short made every
        search a 500 with a 110-line traceback)."""
        last = int(after_id)
        upper = (1 << 62) if upto_id is None else int(upto_id)
        conn = self.conn()
        while True:
            with self.guard():
                rows = conn.execute("SELECT id, dtype, vector FROM embeddings WHERE model = ? AND id > ? AND id <= ?"
                                    " ORDER BY id LIMIT ?", (model, last, upper, chunk)).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = [_decoded_or_none(r[1], r[2]) for r in rows]
            lengths = [-1 if v is None else len(v) for v in vectors]
            width = dim if dim is not None else max(set(lengths), key=lengths.count)
            wrong = next((i for i, n in enumerate(lengths) if n != width), None)
            if wrong is not None:
                raise self._damaged_vector(int(ids[wrong]), len(rows[wrong][2]), int(width))
            yield ids, np.stack(vectors)
            last = int(ids[-1])

    def _damaged_vector(self, embedding_id: int, size: int, width: int) -> DamagedLibraryError:
        owners = [row[0] for row in self.conn().execute(
            "SELECT id FROM images WHERE sha256 = (SELECT sha256 FROM embeddings WHERE id = ?) ORDER BY id LIMIT 20",
            (embedding_id,))]
        fix = (f"`clipforge index remove {' '.join(map(str, owners))}`, then add those photos again" if owners else
               "`clipforge index drop-space` for this model, then `clipforge index add` again")
        return DamagedLibraryError(
            f"library database {display_path(str(self.path))} is damaged: vector {embedding_id} is {size} bytes, "
            f"not {width} values; nothing was changed. To embed its photos again: {fix}")

    @_reads
    def vectors_for_shas(self, model: str, shas: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for chunk in chunks(list(shas)):
            marks = ",".join("?" * len(chunk))
            for sha, dtype, blob in self.conn().execute(
                    f"SELECT sha256, dtype, vector FROM embeddings WHERE model = ? AND sha256 IN ({marks})",
                    (model, *chunk)).fetchall():
                out[sha] = _decode_vector(dtype, blob)
        return out

    @_reads
    def vectors_for_image_ids(self, model: str, image_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(embedding ids, vectors) of the given images' contents, for exact filtered search."""
        ids: list[int] = []
        vecs: list[np.ndarray] = []
        for chunk in chunks([int(i) for i in image_ids]):
            marks = ",".join("?" * len(chunk))
            for eid, dtype, blob in self.conn().execute(
                    "SELECT DISTINCT e.id, e.dtype, e.vector FROM embeddings e JOIN images i ON i.sha256 = e.sha256"
                    f" WHERE e.model = ? AND i.status = 'ok' AND i.id IN ({marks})", (model, *chunk)).fetchall():
                ids.append(eid)
                vecs.append(_decode_vector(dtype, blob))
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return np.asarray(ids, dtype=np.int64), np.stack(vecs)

    @_reads
    def content_digest(self, model: str, upto_id: int | None = None) -> tuple[int, int, str]:
        """(row count, max id, sha256 over every (id, content hash)) of the rows with id <= `upto_id`:
        exactly what an index built from them holds."""
        digest = hashlib.sha256()
        count, max_id = 0, -1
        upper = (1 << 62) if upto_id is None else int(upto_id)
        for eid, sha in self.conn().execute(
                "SELECT id, sha256 FROM embeddings WHERE model = ? AND id <= ? ORDER BY id", (model, upper)):
            digest.update(f"{eid}:{sha}\n".encode())
            count += 1
            max_id = eid
        return count, max_id, digest.hexdigest()

    @_reads
    def images_for_embeddings(self, model: str, embedding_ids: Sequence[int]) -> dict[int, list[ImageRecord]]:
        """embedding id -> the 'ok' images holding those bytes (several when duplicated)."""
        out: dict[int, list[ImageRecord]] = {}
        cols = ", ".join(f"i.{c.strip()}" for c in _IMAGE_COLUMNS.split(","))
        for chunk in chunks([int(i) for i in embedding_ids]):
            marks = ",".join("?" * len(chunk))
            for row in self.conn().execute(
                    f"SELECT e.id, {cols} FROM embeddings e JOIN images i ON i.sha256 = e.sha256"
                    f" WHERE e.model = ? AND i.status = 'ok' AND e.id IN ({marks}) ORDER BY i.id",
                    (model, *chunk)).fetchall():
                out.setdefault(int(row[0]), []).append(_record(row[1:]))
        return out

    @_reads
    def image_ids_by_embedding(self, model: str) -> dict[int, list[int]]:
        """embedding id -> ids of the 'ok' images holding those bytes."""
        out: dict[int, list[int]] = {}
        for eid, image_id in self.conn().execute(
                "SELECT e.id, i.id FROM embeddings e JOIN images i ON i.sha256 = e.sha256"
                " WHERE e.model = ? AND i.status = 'ok' ORDER BY i.id", (model,)).fetchall():
            out.setdefault(int(eid), []).append(int(image_id))
        return out

    def vectors_checked(self, model: str) -> bool:
        """Whether a check found every 'ok' image of `model` with its vector and no vector was deleted since
        (an image can only lose its vector to a deletion, and every deletion bumps `removals`)."""
        return self.get_meta(_CHECKED_META + model) == str(self.removals())

    @_reads
    def images_missing_vectors(self, model: str, limit: int | None = None) -> list[ImageRecord]:
        """'ok' images whose bytes have no vector of `model`: invisible to search. None exist unless a
        writer bypassed the library lock (see `clipforge.library.lock`); O(rows), for checks and repair
        (`vectors_checked` says when it can be skipped)."""
        rows = self.conn().execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.status = 'ok' AND NOT EXISTS"
            " (SELECT 1 FROM embeddings e WHERE e.sha256 = i.sha256 AND e.model = ?) ORDER BY id LIMIT ?",
            (model, -1 if limit is None else int(limit))).fetchall()
        return [_record(r) for r in rows]

    @_reads
    def image_ids_under(self, folder: str) -> list[int]:
        """Ids of the 'ok' images in `folder` (a normalised absolute path) and below it: one range of the
        path index for names stored as text, one for those stored as bytes (not UTF-8, see `dbfile.to_db`)."""
        prefix = folder.rstrip(os.sep) + os.sep
        ranges: list[tuple[str | bytes, str | bytes]] = []
        with contextlib.suppress(UnicodeEncodeError):
            prefix.encode("utf-8")
            ranges.append((prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)))
        raw = os.fsencode(prefix)
        ranges.append((raw, raw[:-1] + bytes([raw[-1] + 1])))
        ids: list[int] = []
        for low, high in ranges:  # SQLite orders text before bytes: each range holds only its own kind
            ids += [int(r[0]) for r in self.conn().execute(
                "SELECT id FROM images WHERE status = 'ok' AND path >= ? AND path < ?", (low, high)).fetchall()]
        return ids

    # -- tags -------------------------------------------------------------------------------
    @_reads
    def image_ids_with_tags(self, model: str, labels: Sequence[str], max_rank: int = 0,
                            min_score: float = 0.0) -> list[int]:
        marks = ",".join("?" * len(labels))
        rows = self.conn().execute(
            f"SELECT DISTINCT image_id FROM tags WHERE model = ? AND label IN ({marks}) AND rank <= ? AND score >= ?",
            (model, *labels, int(max_rank), float(min_score))).fetchall()
        return [int(r[0]) for r in rows]

    @_reads
    def tags_for_images(self, model: str, image_ids: Sequence[int]) -> dict[int, list[tuple[str, float]]]:
        out: dict[int, list[tuple[str, float]]] = {}
        for chunk in chunks([int(i) for i in image_ids]):
            marks = ",".join("?" * len(chunk))
            for image_id, label, score in self.conn().execute(
                    f"SELECT image_id, label, score FROM tags WHERE model = ? AND image_id IN ({marks})"
                    " ORDER BY image_id, rank", (model, *chunk)).fetchall():
                out.setdefault(int(image_id), []).append((label, float(score)))
        return out

    @_reads
    def untagged_images(self, model: str) -> list[tuple[int, str]]:
        """(image id, content hash) of the 'ok' images with no tag of `model` (added since the last tagging)."""
        rows = self.conn().execute(
            "SELECT i.id, i.sha256 FROM images i WHERE i.status = 'ok' AND NOT EXISTS"
            " (SELECT 1 FROM tags t WHERE t.image_id = i.id AND t.model = ?) ORDER BY i.id", (model,)).fetchall()
        return [(int(r[0]), r[1]) for r in rows]

    @_reads
    def tag_counts(self, model: str) -> dict[str, int]:
        rows = self.conn().execute("SELECT label, COUNT(*) FROM tags WHERE model = ? AND rank = 0 GROUP BY label"
                                   " ORDER BY COUNT(*) DESC, label", (model,)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- statistics -------------------------------------------------------------------------
    @_reads
    def status_counts(self) -> dict[str, int]:
        rows = self.conn().execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall()
        counts = {"ok": 0, "failed": 0}
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    @_reads
    def failures(self, limit: int = 50) -> list[tuple[str, str]]:
        rows = self.conn().execute("SELECT path, error FROM images WHERE status = 'failed' ORDER BY id LIMIT ?",
                                   (int(limit),)).fetchall()
        return [(from_db(r[0]), r[1] or "") for r in rows]

    @_reads
    def failed_with_reason(self, prefix: str) -> list[tuple[int, str]]:
        """(id, reason) of the failed records whose reason starts with `prefix`."""
        rows = self.conn().execute("SELECT id, error FROM images WHERE status = 'failed' AND substr(error, 1, ?) = ?",
                                   (len(prefix), prefix)).fetchall()
        return [(int(r[0]), r[1]) for r in rows]

    @_reads
    def integrity_ok(self) -> bool:
        return self.conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _decoded_or_none(dtype: str, blob: bytes) -> np.ndarray | None:
    """The vector, or None for a blob that is not whole values (a row cut short mid-value)."""
    try:
        return _decode_vector(dtype, blob)
    except ValueError:
        return None


def _decode_vector(dtype: str, blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float16 if dtype == "float16" else np.float32).astype(np.float32)

