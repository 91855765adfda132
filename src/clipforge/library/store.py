"""The SQLite store: the library's single source of truth.

Everything else in a library (FAISS indexes, thumbnails) can be rebuilt from this file, so
it is the only thing that must survive a crash. WAL mode plus one transaction per indexing
batch gives exactly that: a `kill -9` loses at most the uncommitted batch, and readers (a
web server) never block the writer. Embeddings are keyed by (content sha256, model
fingerprint), so identical bytes under two paths are embedded once and two models'
vectors can never be confused.

Reads are methods of `Store`; every write goes through one object, the `Transaction` that
`Store.transaction()` yields, so "what commits together" is visible at the call site.
A damaged database (truncated, overwritten, emptied) is reported as `DamagedLibraryError`
naming the file, never as a bare sqlite3 traceback, and nothing derived from it is touched.
File names are stored losslessly: text when they are valid UTF-8, else their raw bytes.

`Store` is built in layers, one module each: `store_connection` (per-thread connections, the
read-only fallback, damage reporting, transactions), `store_vectors` (the reads of the
embeddings table) and this module (meta, image, tag and statistics reads); `records` holds
the values they return.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from clipforge.library.dbfile import DamagedLibraryError, LibraryWriteError, damaged, from_db, to_db
from clipforge.library.records import IMAGE_COLUMNS, FileState, ImageRecord, image_record
from clipforge.library.schema import SCHEMA_VERSION, SchemaError
from clipforge.library.store_connection import reads
from clipforge.library.store_vectors import VectorReads
from clipforge.library.transaction import CHUNK, Transaction, checked_mark, chunks, current_tag_rows

__all__ = [
    "SCHEMA_VERSION",
    "DamagedLibraryError",
    "FileState",
    "ImageRecord",
    "LibraryWriteError",
    "SchemaError",
    "Store",
    "Transaction",
]


class Store(VectorReads):
    """Typed access to one library database; safe to share between threads."""

    # -- one snapshot -----------------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside one read transaction: every read made in this thread until the block
        ends (through the connection yielded or this store's read methods) sees the database as one moment left
        it. What one answer reads in several statements needs it: each statement alone reads one snapshot, and a
        `tag` run in another process may switch the vocabulary between two of them.

        In WAL mode a read transaction's snapshot is fixed by its first read and held until it ends; writers in
        other processes go on meanwhile (readers never block the writer, and the writer never blocks them). Inside
        a transaction of this thread already (a write, or another snapshot), it is that one's view. A user who
        cannot write the library keeps the connection the snapshot began on until it ends (`conn`): it is reopened
        when its owner changes the file, and a reopen inside the block closed the snapshot's connection under it
        (the next read saw the new state, and the block's end raised "Cannot operate on a closed database").
        No write may start inside a snapshot of the same thread: SQLite refuses a transaction within one."""
        with self.reading(), self.guard():
            conn = self.conn()
            if conn.in_transaction:
                yield conn
                return
            conn.execute("BEGIN")  # deferred: the snapshot is taken by the first read
            try:
                yield conn
            finally:
                with contextlib.suppress(sqlite3.Error):  # closed by `close` meanwhile: ended with it
                    if conn.in_transaction:
                        try:
                            conn.execute("COMMIT")
                        except sqlite3.Error:  # never left open: this thread's next reads would stay in it
                            conn.execute("ROLLBACK")

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (`StoreConnection.conn`), except that inside a read transaction (`snapshot`) a
        read-only one is not reopened for its owner's changes: the snapshot's reads stay on the connection that
        holds it, and the next read after it sees those changes."""
        held = getattr(self._local, "conn", None)
        if held is not None and self.read_only:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed by `close`: a new one, as always
                if held.in_transaction:
                    return held
        return super().conn()

    # -- meta -------------------------------------------------------------------------------
    @reads
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    @reads
    def has_meta_prefix(self, prefix: str) -> bool:
        """Whether some meta key starts with `prefix` (an index range scan, not LIKE)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return (
            self.conn()
            .execute("SELECT 1 FROM meta WHERE key >= ? AND key < ? LIMIT 1", (prefix, end))
            .fetchone()
            is not None
        )

    def meta_count(self, key: str) -> int:
        """A counter kept in `meta` (0 when absent); DamagedLibraryError naming the database and the key when
        it is not a whole number >= 0 (`int()`'s "invalid literal for int() with base 10: 'abc'" named neither)."""
        value = self.get_meta(key)
        if value is None or value == "":
            return 0
        text = str(value).strip() if isinstance(value, (str, int)) else ""
        if not text.isdigit() or len(text) > 18:
            raise damaged(self.path, f"its meta key {key!r} holds {value!r:.40}, not a count")
        return int(text)

    def meta_json(self, key: str) -> tuple[Any, str | None]:
        """(the JSON value of a `meta` row, None) when it parses, else (None, why not): the rows written as
        JSON (an index's record, its spec, a tag vocabulary) may have been edited by hand, so nesting too deep
        for the decoder (RecursionError) and bytes that are no text are reported, never raised."""
        raw = self.get_meta(key)
        if raw is None:
            return None, None
        if not isinstance(raw, str):
            return None, f"its meta key {key!r} holds {type(raw).__name__} {raw!r:.40}, not JSON text"
        try:
            return json.loads(raw), None
        except (ValueError, RecursionError) as exc:
            return None, f"its meta key {key!r} holds {raw!r:.40}, not JSON ({type(exc).__name__})"

    def generation(self) -> int:
        """Bumped by every write that changes which vectors are searchable (cheap staleness check)."""
        return self.meta_count("generation")

    def removals(self) -> int:
        return self.meta_count("removals")

    @reads
    def model_spaces(self) -> list[tuple[str, str | None, int, int]]:
        """(fingerprint, name, dimension, vectors) of each model with a space here, oldest first."""
        rows = (
            self.conn()
            .execute(
                "SELECT m.fingerprint, m.name, m.embed_dim, (SELECT COUNT(*) FROM embeddings e WHERE e.model = "
                "m.fingerprint) FROM models m ORDER BY m.created_at"
            )
            .fetchall()
        )
        return [(r[0], r[1] or None, int(r[2]), int(r[3])) for r in rows]

    # -- images -----------------------------------------------------------------------------
    @reads
    def image(self, image_id: int) -> ImageRecord | None:
        row = (
            self.conn()
            .execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?", (int(image_id),))
            .fetchone()
        )
        return image_record(row) if row else None

    @reads
    def image_by_path(self, path: str) -> ImageRecord | None:
        row = (
            self.conn()
            .execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE path = ?", (to_db(path),))
            .fetchone()
        )
        return image_record(row) if row else None

    @reads
    def images_with_sha(self, sha256: str, status: str | None = "ok") -> list[ImageRecord]:
        sql = f"SELECT {IMAGE_COLUMNS} FROM images WHERE sha256 = ?"
        params: tuple[Any, ...] = (sha256,)
        if status is not None:
            sql += " AND status = ?"
            params += (status,)
        return [image_record(r) for r in self.conn().execute(sql + " ORDER BY id", params).fetchall()]

    @reads
    def list_images(
        self, status: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[ImageRecord]:
        sql = f"SELECT {IMAGE_COLUMNS} FROM images"
        params: list[Any] = []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY id LIMIT ? OFFSET ?"
        params += [-1 if limit is None else int(limit), int(offset)]
        return [image_record(r) for r in self.conn().execute(sql, params).fetchall()]

    @reads
    def images_after(self, after_id: int, limit: int, status: str | None = None) -> list[ImageRecord]:
        """Up to `limit` images with an id above `after_id` (and of `status`, when given), by id: keyset pages that
        stream every record of a library of any size (`index copy`, `index list`), each page one index range, where
        an OFFSET rescans what it skips, and skips a row whenever one before it was deleted between two pages."""
        where = "" if status is None else " AND status = ?"
        rows = (
            self.conn()
            .execute(
                f"SELECT {IMAGE_COLUMNS} FROM images WHERE id > ?{where} ORDER BY id LIMIT ?",
                (int(after_id), *(() if status is None else (status,)), int(limit)),
            )
            .fetchall()
        )
        return [image_record(r) for r in rows]

    @reads
    def last_image_id(self) -> int:
        """The highest image id (0 in an empty library)."""
        return int(self.conn().execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0])

    @reads
    def file_states(self) -> dict[str, FileState]:
        """path -> state for every known file, read once per indexing run."""
        rows = self.conn().execute("SELECT path, id, size, mtime_ns, status, sha256 FROM images").fetchall()
        return {from_db(r[0]): FileState(r[1], r[2], r[3], r[4], r[5]) for r in rows}

    @reads
    def image_ids_under(self, folder: str) -> list[int]:
        """Ids of the 'ok' images in `folder` (a normalised absolute path) and below it."""
        return [int(r[0]) for r in self._ok_under(folder, "id")]

    @reads
    def paths_under(self, folder: str) -> list[str]:
        """Paths of the 'ok' images in `folder` and below it: what `index add` of a small folder checks for files
        gone from disk, in the rows of that folder alone (not every row of the library)."""
        return [from_db(r[0]) for r in self._ok_under(folder, "path")]

    def _ok_under(self, folder: str, column: str) -> list[tuple[Any, ...]]:
        """`column` of the 'ok' images under `folder`: one range of the path index for names stored as text,
        one for those stored as bytes (not UTF-8, see `dbfile.to_db`)."""
        prefix = folder.rstrip(os.sep) + os.sep
        ranges: list[tuple[str | bytes, str | bytes]] = []
        with contextlib.suppress(UnicodeEncodeError):
            prefix.encode("utf-8")
            ranges.append((prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)))
        raw = os.fsencode(prefix)
        ranges.append((raw, raw[:-1] + bytes([raw[-1] + 1])))
        rows: list[tuple[Any, ...]] = []
        for low, high in ranges:  # SQLite orders text before bytes: each range holds only its own kind
            rows += (
                self.conn()
                .execute(
                    f"SELECT {column} FROM images WHERE status = 'ok' AND path >= ? AND path < ?", (low, high)
                )
                .fetchall()
            )
        return rows

    # -- images without vectors -------------------------------------------------------------
    def vectors_checked(self, model: str) -> bool:
        """Whether a check found every 'ok' image of `model` with its vector and nothing voided it since: a deletion
        (every one bumps `removals`) or another model's add writing image rows (`Transaction.void_vector_checks`)."""
        key, value = checked_mark(model, self.removals())  # a bare count (older clipforge) is not believed
        return self.get_meta(key) == value

    @reads
    def images_missing_vectors(self, model: str, limit: int | None = None) -> list[ImageRecord]:
        """'ok' images whose bytes have no vector of `model`: invisible to search. None exist unless a
        writer bypassed the library lock (see `clipforge.library.lock`); O(rows), for checks and repair
        (`vectors_checked` says when it can be skipped)."""
        rows = (
            self.conn()
            .execute(
                f"SELECT {IMAGE_COLUMNS} FROM images i WHERE i.status = 'ok' AND NOT EXISTS"
                " (SELECT 1 FROM embeddings e WHERE e.sha256 = i.sha256 AND e.model = ?) ORDER BY id LIMIT ?",
                (model, -1 if limit is None else int(limit)),
            )
            .fetchall()
        )
        return [image_record(r) for r in rows]

    # -- tags -------------------------------------------------------------------------------
    # Each query names `model`'s current tags by `current_tag_rows` (the rows `clipforge tag` switched to last):
    # rows a `tag` run is still writing, or was killed writing, under another key are never read.
    @reads
    def image_ids_with_tags(
        self, model: str, labels: Sequence[str], max_rank: int = 0, min_score: float = 0.0
    ) -> list[int]:
        marks = ",".join("?" * len(labels))
        key, params = current_tag_rows(model)
        rows = (
            self.conn()
            .execute(
                f"SELECT DISTINCT image_id FROM tags WHERE model = {key} AND label IN ({marks}) AND rank <= ?"
                " AND score >= ?",
                (*params, *labels, int(max_rank), float(min_score)),
            )
            .fetchall()
        )
        return [int(r[0]) for r in rows]

    @reads
    def tags_for_images(self, model: str, image_ids: Sequence[int]) -> dict[int, list[tuple[str, float]]]:
        """image id -> its current tags (label, score) in rank order. More than `CHUNK` ids are read in several
        statements, inside one read transaction (`snapshot`): a `tag` run switching the vocabulary between two
        of them answered the first photos with the old labels and the rest with the new ones."""
        out: dict[int, list[tuple[str, float]]] = {}
        key, params = current_tag_rows(model)
        ids = [int(i) for i in image_ids]
        with self.snapshot() if len(ids) > CHUNK else contextlib.nullcontext(self.conn()) as conn:
            for chunk in chunks(ids):
                marks = ",".join("?" * len(chunk))
                for image_id, label, score in conn.execute(
                    f"SELECT image_id, label, score FROM tags WHERE model = {key} AND image_id IN ({marks})"
                    " ORDER BY image_id, rank",
                    (*params, *chunk),
                ).fetchall():
                    if not isinstance(score, (int, float)):  # float('x') named neither the database nor the table
                        raise damaged(
                            self.path,
                            f"a tag of image {image_id} has the score {score!r:.40}, not a number",
                            fix='tag the library again with `clipforge tag --labels "cat, dog, car"` (your labels)',
                        )
                    out.setdefault(int(image_id), []).append((label, float(score)))
        return out

    @reads
    def untagged_images(self, model: str, key: str | None = None) -> list[tuple[int, str]]:
        """(image id, content hash) of the 'ok' images with no current tag of `model` (added since the last
        tagging), or none under the `tags.model` value `key` (what a `tag` run has not written yet)."""
        sql, params = ("?", (key,)) if key is not None else current_tag_rows(model)
        rows = (
            self.conn()
            .execute(
                "SELECT i.id, i.sha256 FROM images i WHERE i.status = 'ok' AND NOT EXISTS"
                f" (SELECT 1 FROM tags t WHERE t.image_id = i.id AND t.model = {sql}) ORDER BY i.id",
                params,
            )
            .fetchall()
        )
        return [(int(r[0]), r[1]) for r in rows]

    @reads
    def tag_counts(self, model: str) -> dict[str, int]:
        key, params = current_tag_rows(model)
        rows = (
            self.conn()
            .execute(
                f"SELECT label, COUNT(*) FROM tags WHERE model = {key} AND rank = 0 GROUP BY label"
                " ORDER BY COUNT(*) DESC, label",
                params,
            )
            .fetchall()
        )
        return {r[0]: int(r[1]) for r in rows}

    @reads
    def tag_rows(self, model: str) -> str:
        """The `tags.model` value holding `model`'s current tags (see `transaction.TAG_ROWS_KEY`)."""
        sql, params = current_tag_rows(model)
        return str(self.conn().execute(f"SELECT {sql}", params).fetchone()[0])

    @reads
    def tag_row_keys(self, model: str) -> list[str]:
        """Every `tags.model` value `model`'s tags were ever written under and still hold rows: the current one,
        and those a killed `tag` run left (one index range step each, not a scan of the rows)."""
        conn = self.conn()
        keys = (
            [model] if conn.execute("SELECT 1 FROM tags WHERE model = ? LIMIT 1", (model,)).fetchone() else []
        )
        after, end = model + "#", model + "$"
        while row := conn.execute(
            "SELECT model FROM tags WHERE model > ? AND model < ? ORDER BY model LIMIT 1", (after, end)
        ).fetchone():
            keys.append(after := row[0])
        return keys

    @reads
    def image_ids_for_embeddings(self, model: str, first: int, last: int) -> dict[int, list[int]]:
        """embedding id -> ids of the 'ok' images holding those bytes, for the embeddings of `model` with ids in
        [`first`, `last`] (one chunk of a `tag` run, read inside the transaction that writes its tags)."""
        out: dict[int, list[int]] = {}
        for eid, image_id in (
            self.conn()
            .execute(
                "SELECT e.id, i.id FROM embeddings e JOIN images i ON i.sha256 = e.sha256"
                " WHERE e.model = ? AND e.id >= ? AND e.id <= ? AND i.status = 'ok' ORDER BY i.id",
                (model, int(first), int(last)),
            )
            .fetchall()
        ):
            out.setdefault(int(eid), []).append(int(image_id))
        return out

    # -- statistics -------------------------------------------------------------------------
    @reads
    def status_counts(self) -> dict[str, int]:
        rows = self.conn().execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall()
        counts = {"ok": 0, "failed": 0}
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    @reads
    def failures(self, limit: int = 50) -> list[tuple[str, str]]:
        rows = (
            self.conn()
            .execute(
                "SELECT path, error FROM images WHERE status = 'failed' ORDER BY id LIMIT ?", (int(limit),)
            )
            .fetchall()
        )
        return [(from_db(r[0]), r[1] or "") for r in rows]

    @reads
    def failed_with_reason(self, prefix: str) -> list[tuple[int, str]]:
        """(id, reason) of the failed records whose reason starts with `prefix`."""
        rows = (
            self.conn()
            .execute(
                "SELECT id, error FROM images WHERE status = 'failed' AND substr(error, 1, ?) = ?",
                (len(prefix), prefix),
            )
            .fetchall()
        )
        return [(int(r[0]), r[1]) for r in rows]

    @reads
    def integrity_ok(self) -> bool:
        return self.conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
