"""The library database schema and its migrations.

`PRAGMA user_version` holds the schema version. Opening a library runs any missing
migrations (each in its own transaction), and refuses a file written by a newer clipforge
or an SQLite file that is not a library, rather than guessing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from clipforge.errors import UserError

__all__ = ["SCHEMA_VERSION", "SchemaError", "migrate"]

SCHEMA_VERSION = 1

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

# Migrations from version i to i + 1, appended when the schema changes.
_MIGRATIONS: dict[int, str] = {}


class SchemaError(UserError, RuntimeError):
    """The database was written by a newer clipforge, or is not a clipforge library."""


def migrate(store: Any, path: Path) -> None:
    """Create the schema in a new file, or bring an older one up to `SCHEMA_VERSION`."""
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
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
    while version < SCHEMA_VERSION:
        with store.transaction() as tx:
            for statement in _MIGRATIONS[version].split(";"):
                if statement.strip():
                    tx.execute(statement)
            version += 1
            tx.execute(f"PRAGMA user_version = {version}")
