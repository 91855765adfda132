"""The one shape of a library's statistics (`index stats --json`, ``GET /api/stats``), whatever the store.

`Library.stats` (SQLite) and `MilvusLibrary.stats` built their dicts apart: `schema_version` only on the embedded
store, `store` only on Milvus, `index` with 16 keys against 3, and `index`, `tags` and `spaces` absent from a store
without a model, so a script had to know which store it read (audit 66 scripter #5). Both start from `new_stats` and
fill the index's keys with `index_status` / `milvus_index`: every key on every store, null where it does not apply.
The README's "`index stats --json` is one object" paragraph documents the keys (a test holds it to them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["INDEX_KEYS", "STATS_KEYS", "index_status", "milvus_index", "new_stats"]

# Top-level keys, in the order written. `missing_vectors` is added by `stats(verify=True)` (`index stats` always
# verifies) and `same_file_names` by the `index stats` command: both stores add both.
STATS_KEYS = ("library", "store", "schema_version", "images", "model", "distinct_contents", "db_bytes", "index",
              "tags", "spaces", "failures")

# The embedded store's vector index as `IndexManager.status` describes it (its keys, less those of a saved file while
# none is saved); a Milvus collection's index is the server's own, so most are null there.
INDEX_KEYS = ("path", "requested", "kind", "exists", "fresh", "next_search", "file_unchanged", "vectors_in_db",
              "newer_vectors", "count", "params", "recall_at_k", "recall_k", "built_at", "last_action",
              "rebuild_reason")


def new_stats(library: str, store: str, schema_version: int | None, db_bytes: int | None) -> dict[str, Any]:
    """The stats of a store holding nothing yet, every key present: `store` is the `--store` kind ("sqlite",
    "milvus-lite", "milvus"), `schema_version` the SQLite file's (null on Milvus), `db_bytes` null where the size
    is a Milvus server's own. `model` and `index` stay null until a model space exists."""
    return {"library": library, "store": store, "schema_version": schema_version, "images": {"ok": 0, "failed": 0},
            "model": None, "distinct_contents": 0, "db_bytes": db_bytes, "index": None, "tags": {}, "spaces": [],
            "failures": []}


def index_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """`IndexManager.status()` with every one of `INDEX_KEYS` (null for those of a saved file while none is)."""
    return {**dict.fromkeys(INDEX_KEYS), **status}


def milvus_index() -> dict[str, Any]:
    """A Milvus collection's index in the same keys: built and kept by Milvus as rows are written, so it is always
    fresh and a search has nothing to do first; no file, count or recall of its own to report."""
    return index_status({"requested": "milvus", "kind": "milvus", "exists": True, "fresh": True,
                         "next_search": "none", "newer_vectors": 0})
