"""Every write to a library database, as methods of one open transaction.

`Store.transaction()` begins an immediate (write-locked) transaction and yields a
`Transaction`; whatever is done through it commits together or not at all. Keeping every
write here - and no write anywhere else - means one calling convention and one place to
read when asking "what can change the library".
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from clipforge.library import schema
from clipforge.library.dbfile import to_db
from clipforge.library.schema import TAG_ROWS_VERSION, require_version

__all__ = [
    "CHECKED_KEY", "CHUNK", "META_DIM", "META_DTYPE", "META_FINGERPRINT", "META_NAME", "TAG_ROWS_KEY", "VOCABULARY_KEY",
    "Transaction", "checked_mark", "chunks", "current_tag_rows",
]

META_FINGERPRINT = "model_fingerprint"
META_NAME = "model_name"
META_DIM = "embed_dim"
META_DTYPE = "vector_dtype"
"""The meta keys of a library's default model space (`Transaction.record_model`)."""

CHECKED_KEY = "vectors_checked:"
"""Meta key prefix: the `removals` value at which no 'ok' image lacked its vector of a model (`Store.vectors_checked`)."""


def checked_mark(model: str, removals: int) -> tuple[str, str]:
    """The meta (key, value) of `model`'s mark at `removals`: the count, marked as written by code whose adds void
    the other models' marks (`Transaction.void_vector_checks`). A bare count is a mark of clipforge before that: its
    plain adds left the other spaces' marks standing, so after an upgrade `index add DIR --model M` never filled M
    with the photos they had indexed. Such a mark is not believed (one scan, then a mark of this form)."""
    return CHECKED_KEY + model, f"{int(removals)}:voided-by-adds"


VOCABULARY_KEY = "tag_labels:"
"""Meta key prefix of a model space's remembered tag vocabulary (labels, templates, top_k) in a store."""

TAG_ROWS_KEY = schema.TAG_ROWS_KEY  # "tag_rows:" (spelled in `schema`, which must know it too)
"""Meta key prefix naming the `tags.model` value that holds a model space's current tags.

`clipforge tag` writes a whole library's new tags under a fresh value (`<fingerprint>#<n>`) in short
transactions, then switches this key and the vocabulary in one transaction and deletes the old rows after: a
kill -9 at any point leaves one vocabulary's tags answering, and a reader never sees two. Absent (every library
tagged before this scheme, or a copy), the tags are under the fingerprint itself. Read only while the space's
vocabulary is recorded too, so `index drop-space` (which deletes the vocabulary) cannot leave rows to come back.

A release that knows no such key reads the tags under the fingerprint, so the transaction writing one raises the
library to `schema.TAG_ROWS_VERSION` (`Transaction.set_meta`), which those releases refuse in one line."""


def current_tag_rows(model: str) -> tuple[str, tuple[str, str, str]]:
    """(SQL expression, its parameters) for the `tags.model` value holding `model`'s current tags.

    One expression inside each query, not a value read before it: a statement reads one snapshot, so a reader
    never pairs the old key with the rows the switch left behind being deleted."""
    return (
        "COALESCE((SELECT k.value FROM meta k WHERE k.key = ? AND EXISTS"
        " (SELECT 1 FROM meta v WHERE v.key = ?)), ?)",
        (TAG_ROWS_KEY + model, VOCABULARY_KEY + model, model),
    )


CHUNK = 900
"""Ids bound in one statement (`chunks`): SQLite limits the bound parameters per statement."""


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """Slices of at most `size` items: SQLite limits the bound parameters per statement."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Transaction:
    """Writes inside one open transaction (obtained from `Store.transaction()`, never built directly)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Raw SQL inside this transaction (schema migrations; reads that must see uncommitted rows)."""
        return self.conn.execute(sql, params)

    # -- meta -------------------------------------------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        """Write one meta key. A `TAG_ROWS_KEY` one raises the library's version to `TAG_ROWS_VERSION` in this
        transaction (every writer of such a key comes here: `switch_tags`), so an older release refuses the library
        rather than read or write its tags under the fingerprint."""
        if key.startswith(TAG_ROWS_KEY):
            require_version(self.conn, TAG_ROWS_VERSION)
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def record_vectors_checked(self, model: str, removals: int) -> None:
        """No 'ok' image of `model` lacked its vector when `removals` had this value (see `Store.vectors_checked`)."""
        self.set_meta(*checked_mark(model, removals))

    def void_vector_checks(self, keep: str) -> None:
        """Image rows were written with vectors of model `keep` only: every other model's check that no 'ok' image
        lacks its vector no longer holds (a photo added by `index add --model M` has no vector of the default model,
        and the default space's next add must find it, as `index stats` must count it)."""
        self.conn.execute(
            "DELETE FROM meta WHERE substr(key, 1, ?) = ? AND key != ?",
            (len(CHECKED_KEY), CHECKED_KEY, CHECKED_KEY + keep),
        )

    def record_model(self, fingerprint: str, name: str, embed_dim: int, vector_dtype: str) -> str | None:
        """Record the library's default model once: the model of its first vectors, in their transaction (an add
        that stores no vector - an empty folder, only bad files - leaves the library without one, so a later
        `index add --model M` makes M the default instead of a second space beside an empty default). A recorded
        model that holds no vector is replaced the same way: what every add before this rule left after an empty
        first add (audit 56's own library: the next `--model M` photos were a second space, said nowhere, and
        plain `search` answered "no photo matched"), or a library whose every photo was removed.

        Returns the name of the model replaced ("" for one passed as an object), None when none was: a library
        made for M (`serve --create --model M`) that an `index add --model N` fills first is N's from then on,
        and the server searching M's space must be told (`ModelReplacedNotice`)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (META_FINGERPRINT,)).fetchone()
        if row is not None and (row[0] == fingerprint or self.conn.execute(
                "SELECT 1 FROM embeddings WHERE model = ? LIMIT 1", (row[0],)).fetchone() is not None):
            return None
        replaced = None
        if row is not None:
            named = self.conn.execute("SELECT value FROM meta WHERE key = ?", (META_NAME,)).fetchone()
            replaced = str(named[0]) if named is not None and named[0] is not None else ""
        for key, value in ((META_FINGERPRINT, fingerprint), (META_NAME, name or ""),
                           (META_DIM, str(int(embed_dim))), (META_DTYPE, vector_dtype)):
            self.set_meta(key, value)
        return replaced

    def bump_generation(self) -> None:
        """Tell every reader that the searchable vectors changed (see `Store.generation`)."""
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def ensure_model(self, fingerprint: str, name: str | None, embed_dim: int) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?)", (fingerprint, name, embed_dim, time.time())
        )

    # -- images -----------------------------------------------------------------------------
    def upsert_image(
        self,
        path: str,
        sha256: str | None,
        size: int,
        mtime_ns: int,
        width: int | None,
        height: int | None,
        status: str,
        error: str | None,
        added_at: float | None = None,
    ) -> int:
        """Write a file's record; a new one is stamped `added_at` (default: now), a known one keeps its time."""
        row = self.conn.execute(
            "INSERT INTO images(path, sha256, size, mtime_ns, width, height, added_at, status, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,"
            " mtime_ns = excluded.mtime_ns, width = excluded.width, height = excluded.height,"
            " status = excluded.status, error = excluded.error RETURNING id",
            (to_db(path), sha256, size, mtime_ns, width, height, added_at or time.time(), status, error),
        ).fetchone()
        return int(row[0])

    def mark_failed(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        reason: str,
        sha256: str | None = None,
        added_at: float | None = None,
    ) -> None:
        """Record why `path` cannot be indexed; what the previous bytes of that path had (tags, an
        unshared vector) goes."""
        before = self.conn.execute("SELECT id, sha256 FROM images WHERE path = ?", (to_db(path),)).fetchone()
        self.upsert_image(path, sha256, size, mtime_ns, None, None, "failed", reason, added_at)
        if before is not None and before[1]:
            self.delete_tags_for(before[0])
            self.gc_embeddings([before[1]])

    def relink_image(self, image_id: int, new_path: str, size: int, mtime_ns: int) -> None:
        """A moved file keeps its id (and so its tags): only the path and stat change."""
        self.conn.execute(
            "UPDATE images SET path = ?, size = ?, mtime_ns = ? WHERE id = ?",
            (to_db(new_path), size, mtime_ns, image_id),
        )

    def delete_images(self, image_ids: Iterable[int]) -> int:
        ids = [int(i) for i in image_ids]
        removed = 0
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            removed += self.conn.execute(f"DELETE FROM images WHERE id IN ({marks})", chunk).rowcount
        self.gc_embeddings()
        self.bump_generation()
        return removed

    def gc_embeddings(self, shas: Iterable[str] | None = None) -> int:
        """Drop vectors no 'ok' image refers to any more (all of them, or just `shas`).

        Embedding ids are never reused (AUTOINCREMENT) and every deletion bumps the `removals`
        counter, so an index can tell "only rows were added since I was built" (extend it in
        place) from "rows were removed" (rebuild).
        """
        orphan = "NOT EXISTS (SELECT 1 FROM images i WHERE i.sha256 = embeddings.sha256 AND i.status = 'ok')"
        if shas is None:
            removed = self.conn.execute(f"DELETE FROM embeddings WHERE {orphan}").rowcount
        else:
            removed = 0
            for sha in set(shas):
                removed += self.conn.execute(
                    f"DELETE FROM embeddings WHERE sha256 = ? AND {orphan}", (sha,)
                ).rowcount
        if removed:
            self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'removals'")
        return removed

    # -- embeddings and tags ----------------------------------------------------------------
    def insert_embedding(self, sha256: str, model: str, vector: np.ndarray, dtype: str = "float32") -> None:
        blob = np.ascontiguousarray(vector, dtype=np.float16 if dtype == "float16" else np.float32).tobytes()
        self.conn.execute(
            "INSERT OR IGNORE INTO embeddings(sha256, model, dtype, vector) VALUES (?, ?, ?, ?)",
            (sha256, model, dtype, blob),
        )

    def delete_tags_for(self, image_id: int) -> None:
        self.conn.execute("DELETE FROM tags WHERE image_id = ?", (image_id,))

    def tag_rows(self, model: str) -> str:
        """The `tags.model` value holding `model`'s current tags, as this transaction sees it."""
        sql, params = current_tag_rows(model)
        return str(self.conn.execute(f"SELECT {sql}", params).fetchone()[0])

    def replace_tags(
        self, model: str, rows: Iterable[tuple[int, str, float, int]], expected: str | None = None
    ) -> bool:
        """Write (image_id, label, score, rank) rows as `model`'s current tags, replacing those images' previous
        ones. `expected`: the rows' key (`tag_rows`) read when their vocabulary was; when `tag` switched the
        vocabulary since, nothing is written and False comes back (the switch tagged those photos itself)."""
        key = self.tag_rows(model)
        if expected is not None and key != expected:
            return False
        rows = list(rows)
        for image_id in {r[0] for r in rows}:
            self.conn.execute("DELETE FROM tags WHERE image_id = ? AND model = ?", (image_id, key))
        self.insert_tags(key, rows)
        return True

    def insert_tags(self, key: str, rows: Iterable[tuple[int, str, float, int]]) -> None:
        """Write (image_id, label, score, rank) rows under the `tags.model` value `key` for images with none there
        (`tag` writing a fresh key): `replace_tags`' one DELETE per image was half of a whole-library `tag`'s
        write time."""
        self.conn.executemany(
            "INSERT INTO tags(image_id, model, label, score, rank) VALUES (?, ?, ?, ?, ?)",
            [(r[0], key, r[1], float(r[2]), int(r[3])) for r in rows],
        )

    def switch_tags(self, model: str, key: str, vocabulary: str) -> None:
        """Make the rows under `key` `model`'s tags and `vocabulary` (JSON) its vocabulary, together."""
        self.set_meta(VOCABULARY_KEY + model, vocabulary)
        self.set_meta(TAG_ROWS_KEY + model, key)

    def delete_tag_rows(self, key: str, first_image: int, last_image: int) -> int:
        """Delete the rows under the `tags.model` value `key` (one that is no model's current tags) of the images
        with ids in [`first_image`, `last_image`]; returns how many. A large purge is many short transactions, each
        one range of the table's primary key (by image): rows picked by label were spread over every page of it,
        and rewriting the same pages in each commit made the purge slower than the run."""
        return self.conn.execute(
            "DELETE FROM tags WHERE image_id >= ? AND image_id <= ? AND +model = ?",  # by the key: one range
            (int(first_image), int(last_image), key),
        ).rowcount

    def drop_tags(self, model: str) -> None:
        """Forget all of `model`'s tags (every key it wrote them under) and its vocabulary: `index drop-space`."""
        self.conn.execute(
            "DELETE FROM tags WHERE model = ? OR (model > ? AND model < ?)", (model, model + "#", model + "$")
        )
        self.conn.execute(
            "DELETE FROM meta WHERE key IN (?, ?)", (VOCABULARY_KEY + model, TAG_ROWS_KEY + model)
        )
