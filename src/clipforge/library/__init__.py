"""The image library: SQLite store, FAISS index, crash-safe indexing, search and zero-shot tags.

    from clipforge.library import Library
    lib = Library("~/photos-library", model="ViT-B/32")
    lib.add(["~/Pictures"], recursive=True)
    hits = lib.search('"a dog on the beach" - "people"', top_k=10)

Names are imported on first use (PEP 562): ``clipforge.library.scan`` loads without torch.
"""

from __future__ import annotations

from clipforge._lazy import lazy_exports

_SOURCES: dict[str, str] = {
    "SCHEMA_VERSION": "store",
    "AddReport": "indexer",
    "DamagedLibraryError": "dbfile",
    "Encoder": "encoder",
    "ExportReport": "export",
    "ImageRecord": "store",
    "IndexSpec": "vector_index",
    "Library": "library",
    "ModelMismatchError": "library",
    "QueryError": "query",
    "QueryTerm": "query",
    "SchemaError": "store",
    "SearchHit": "search",
    "TagReport": "tagging",
    "build_index": "vector_index",
    "default_library_dir": "paths",
    "display_path": "dbfile",
    "export_embeddings": "export",
    "open_library": "library",
    "parse_query": "query",
    "recall_at_k": "vector_index",
    "resolve_encoder": "encoder",
}

__all__ = sorted(_SOURCES)


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
