"""`index stats` of a Milvus store: counts, distinct contents, failures and top tags of one model space.

Every row of the space is read once (short fields only: status, sha256, tags; never paths or vectors),
which is why `MilvusLibrary.stats` reuses the answer for `listing_ttl` seconds on a server.

Each space's vector count (``spaces[i]["images"]``, the ``space ... N vectors`` line) is its distinct contents,
as the embedded store counts its vectors (one per content: 136 for 140 photos of which 4 are byte-identical
copies); it was the rows here (140), so the two stores answered differently on the same photos. The other spaces'
are read the same way (their sha256 alone).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from clipforge.data.base import BadImage
from clipforge.library.backend import StoreSpec, lite_bytes
from clipforge.library.milvus_store import MilvusSpace
from clipforge.library.stats_schema import milvus_index, new_stats

__all__ = ["first_failures", "ranked_counts", "space_stats"]

_FAILED_READ = 16384  # Milvus's largest query result window


def space_stats(spec: StoreSpec, space: MilvusSpace | None, spaces: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats dict `Library.stats` gives, with its keys (`stats_schema`), for `space` (None: the store holds no
    space yet); `spaces`: `MilvusLibrary.spaces()`, listed as they are. Failed files are named as every --json
    report names them (`BadImage.to_dict`)."""
    out = new_stats(spec.describe(), spec.kind, None, lite_bytes(spec.uri) if spec.kind == "milvus-lite" else None)
    out["spaces"] = spaces  # `schema_version` is the SQLite file's: null here, as `index` while no space exists
    if space is None:
        return out
    # Distinct contents and the top tags need each stored image's sha256 and tags; the first 20 failures come
    # from a limited query. Counts: count(*) on a server; milvus-lite walks every row for a count (2.2 s for 10k
    # rows against 1.5 s to scan their paths), so there one scan that adds the status answers everything.
    if spec.kind == "milvus-lite":
        rows = list(space.iter_rows(fields=["status", "sha256", "tags"]))
        out["images"] = {"ok": sum(r["status"] == "ok" for r in rows)}
        out["images"]["failed"] = len(rows) - out["images"]["ok"]
        rows = [r for r in rows if r["status"] == "ok"]
    else:
        out["images"] = {"ok": space.count('status == "ok"'), "failed": space.count('status == "failed"')}
        rows = list(space.iter_rows('status == "ok"', fields=["sha256", "tags"]))
    out["distinct_contents"] = len({r["sha256"] for r in rows})
    out["spaces"] = [dict(s, images=out["distinct_contents"] if s["fingerprint"] == space.fingerprint
                          else _distinct(space.store.space(s["fingerprint"]), s["images"])) for s in spaces]
    out["failures"] = first_failures(space, 20)
    out["model"] = {"name": space.name or None, "fingerprint": space.fingerprint, "embed_dim": space.dim,
                    "vector_dtype": "float32"}
    out["index"] = milvus_index()
    out["tags"] = ranked_counts(Counter(r["tags"][0] for r in rows if r["tags"]))
    return out


def ranked_counts(counts: Counter[str]) -> dict[str, int]:
    """label -> photos whose top tag it is, most first and equal counts by label: the embedded store's order
    (`ORDER BY COUNT(*) DESC, label`, `Store.tag_counts`) for `index stats`, `tag --list` and the `tag` summary.
    `most_common()` kept ties in the order the rows were met, which differs between stores and between runs."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _distinct(space: MilvusSpace | None, rows: int) -> int:
    """How many distinct contents `space` holds vectors of (`rows`, its row count, when it vanished meanwhile)."""
    if space is None:
        return rows
    return len({r["sha256"] for r in space.iter_rows('status == "ok"', fields=["sha256"])})


def first_failures(space: MilvusSpace, limit: int) -> list[dict[str, str]]:
    """The first `limit` failed files in the order they were recorded (time stored, then path), as the embedded
    store lists them (by id). A query's `limit` took whichever rows the engine met first (7 of one folder's
    failures and 13 of another's, where the embedded store listed the first folder's 13). One bounded query of
    the failed rows' short fields: past `_FAILED_READ` failures the first ones are looked for among that many."""
    found = space.query('status == "failed"', ["path", "added_at"], limit=_FAILED_READ)
    paths = [path for _, path in sorted((r["added_at"], r["path"]) for r in found)[:limit]]
    rows = space.rows_for_paths(paths, ["path", "error"])
    return [BadImage(p, rows[p]["error"]).to_dict() for p in paths if p in rows]
