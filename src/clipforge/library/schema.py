"""The library database schema and its migrations.

`PRAGMA user_version` holds the schema version. Opening a library runs any missing
migrations (each in its own transaction), and refuses a file written by a newer clipforge
or an SQLite file that is not a library, rather than guessing.

The versions (as git's repository-format extensions: a version says what a reader must understand, and a library
is raised to it only by the first write that needs it, so one that never uses a newer layout stays readable by the
releases before it):

- 1: the tables below; a model space's tags are the `tags` rows whose `model` is its fingerprint. Every library is
  created at 1, by every release.
- 2: the same tables, but a model space's tags may live under another `tags.model` value (`<fingerprint>#<n>`),
  named by the meta key `tag_rows:<fingerprint>` (`transaction.TAG_ROWS_KEY`: how `clipforge tag` switches a whole
  library's tags at once since Dec 6, 2026). The transaction that first writes such a key sets 2
  (`require_version`), and opening a writable version-1 library that already holds one (written by the Dec 6
  release, which left the version at 1) sets 2 too. A release before 2's was told to read the tags under the
  fingerprint: it found none (or wrote tags the newer one never read), silently.

Releases before version 2 refuse a version-2 library in one line ("library schema version 2 is newer than this
clipforge understands (1); upgrade clipforge"), as this one refuses 3 and later; a read-only version-1 library
holding such a key is read as it is (it cannot be marked).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from clipforge.errors import UserError

__all__ = ["CREATED_VERSION", "SCHEMA_VERSION", "TAG_ROWS_KEY", "TAG_ROWS_VERSION", "SchemaError", "migrate",
           "require_version"]

SCHEMA_VERSION = 2
"""The newest library version this clipforge reads and writes (see the module docstring); newer ones are refused."""

CREATED_VERSION = 1
"""The version a new library is created at: the oldest that describes it, so older releases can share it."""

TAG_ROWS_VERSION = 2
"""The first version whose libraries may name a model space's tags by a `TAG_ROWS_KEY` meta key."""

TAG_ROWS_KEY = "tag_rows:"
"""Meta key prefix naming the `tags.model` value of a model space's current tags (documented, and used, as
`transaction.TAG_ROWS_KEY`; spelled here because the schema must know it and cannot import the transaction)."""

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id       INTEGER PRIMARY KEY,
    path     TEXT NOT NULL UNIQUE,
    sha256   TEXT,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    width    INTEGER,
    height   INTEGER,
    added_at REAL NOT NULL,
    status   TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error    TEXT
);
CREATE INDEX images_sha256 ON images(sha256);
CREATE TABLE models (
    fingerprint TEXT PRIMARY KEY,
    name        TEXT,
    embed_dim   INTEGER NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE embeddings (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL,
    model  TEXT NOT NULL REFERENCES models(fingerprint),
    dtype  TEXT NOT NULL CHECK (dtype IN ('float32', 'float16')),
    vector BLOB NOT NULL,
    UNIQUE (sha256, model)
);
CREATE INDEX embeddings_model ON embeddings(model, id);
CREATE TABLE tags (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    model    TEXT NOT NULL,
    label    TEXT NOT NULL,
    score    REAL NOT NULL,
    rank     INTEGER NOT NULL,
    PRIMARY KEY (image_id, model, label)
);
CREATE INDEX tags_label ON tags(model, label, rank);
"""

# DDL migrations, by the version they bring a library to (from any older one), appended when the tables change.
# Version 2 has none: it only says what the meta table may hold (`require_version` sets it).
_MIGRATIONS: dict[int, str] = {}


class SchemaError(UserError, RuntimeError):
    """The database was written by a newer clipforge, or is not a clipforge library."""


def require_version(conn: Any, version: int) -> None:
    """Inside an open write transaction: raise the library's version to `version` if it is lower, committed
    with the write that needs it (SQLite's user_version is in the database header: a rollback, or a kill before the
    commit, leaves the old version with the old contents)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] < version:
        conn.execute(f"PRAGMA user_version = {int(version)}")


def _holds_tag_rows(conn: Any) -> bool:
    """Whether some `TAG_ROWS_KEY` meta key exists (a range of the primary key, not a scan)."""
    end = TAG_ROWS_KEY[:-1] + chr(ord(TAG_ROWS_KEY[-1]) + 1)
    return conn.execute("SELECT 1 FROM meta WHERE key >= ? AND key < ? LIMIT 1", (TAG_ROWS_KEY, end)).fetchone() \
        is not None


def migrate(store: Any, path: Path) -> None:
    """Create the schema in a new file (at `CREATED_VERSION`), or bring an older one up to what it holds."""
    conn = store.conn()
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{path}: library schema version {version} is newer than this clipforge "
                          f"understands ({SCHEMA_VERSION}); upgrade clipforge")
    if version == 0:
        with store.transaction() as tx:
            # Re-read under the write lock: another process may have created the schema meanwhile.
            version = tx.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = {r[0] for r in tx.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if tables:
                    raise SchemaError(f"{path}: an SQLite file that is not a clipforge library "
                                      f"(tables {sorted(tables)})")
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        tx.execute(statement)
                tx.execute("INSERT INTO meta VALUES ('generation', '0')")
                tx.execute("INSERT INTO meta VALUES ('removals', '0')")
                tx.execute("INSERT INTO meta VALUES ('created_at', ?)", (str(time.time()),))
                tx.execute(f"PRAGMA user_version = {CREATED_VERSION}")
                return
    for target in sorted(t for t in _MIGRATIONS if version < t <= SCHEMA_VERSION):
        with store.transaction() as tx:
            for statement in _MIGRATIONS[target].split(";"):
                if statement.strip():
                    tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {target}")
        version = target
    if version < TAG_ROWS_VERSION <= SCHEMA_VERSION and not getattr(store, "read_only", False) \
            and _holds_tag_rows(conn):
        # Tags switched by the Dec 6 release, which left the version at 1: mark the library, so that older
        # releases refuse it instead of reading (or writing) the tags under the fingerprint.
        # Without waiting: a read (`search`) must not queue behind another process's write for the busy timeout
        # (60 s, then a traceback); the next open after that write marks it.
        try:
            with store.transaction(wait=False) as tx:  # re-read under the write lock
                if _holds_tag_rows(tx):
                    require_version(tx, TAG_ROWS_VERSION)
        except (OSError, sqlite3.OperationalError):  # a library this user cannot write, a full disk, a held lock:
            pass  # read it as it is
