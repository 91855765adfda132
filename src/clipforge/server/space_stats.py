"""The stats of the model space a server searches in, for `/api/stats` and the web UI's Library tab alike.

A library may hold several model spaces (one per model whose vectors it keeps); `clipforge serve --model M`
searches M's. The SQLite library's `stats` counts its default space, so both front ends read a space's
fields through `served_space_stats` (the web UI's summary listed the default space's tags under `--model M`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["served_space_stats"]


def served_space_stats(library: Any) -> dict[str, Any]:
    """`library.stats()` with the fields of one model space (`model`, `distinct_contents`, `index`, `tags`) taken
    from the space its encoder searches, when that is not the one `stats` reported (the SQLite library's default
    space; `clipforge.library.Library.stats` would be the better home for this, see the server's notes)."""
    stats = dict(library.stats())
    served = library.encoder.fingerprint
    reported = stats.get("model") or {}
    if reported.get("fingerprint") in (None, served) or not hasattr(library, "store"):
        return stats
    space = next((s for s in stats.get("spaces") or [] if s["fingerprint"] == served), None)
    stats["model"] = {
        "name": (space or {}).get("name") or library.encoder.name or None,
        "fingerprint": served,
        "embed_dim": library.encoder.embed_dim,
        "vector_dtype": reported.get("vector_dtype"),
    }
    stats["distinct_contents"] = library.store.embedding_count(served)
    stats["index"] = library.index_manager.status()
    stats["tags"] = library.store.tag_counts(served)
    return stats
