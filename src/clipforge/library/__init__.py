"""The image library: SQLite store, FAISS index, crash-safe indexing, search and zero-shot tags.

    from clipforge.library import Library
    lib = Library("~/photos-library", model="ViT-B/32")
    lib.add(["~/Pictures"], recursive=True)
    hits = lib.search('"a dog on the beach" - "people"', top_k=10)
"""

from clipforge.library.dbfile import DamagedLibraryError, display_path
from clipforge.library.encoder import Encoder, resolve_encoder
from clipforge.library.export import ExportReport, export_embeddings
from clipforge.library.indexer import AddReport
from clipforge.library.library import Library, ModelMismatchError, open_library
from clipforge.library.paths import default_library_dir
from clipforge.library.query import QueryError, QueryTerm, parse_query
from clipforge.library.search import SearchHit
from clipforge.library.store import SCHEMA_VERSION, ImageRecord, SchemaError
from clipforge.library.tagging import TagReport
from clipforge.library.vector_index import IndexSpec, build_index, recall_at_k

__all__ = [
    "SCHEMA_VERSION", "AddReport", "DamagedLibraryError", "Encoder", "ExportReport", "ImageRecord", "IndexSpec",
    "Library", "ModelMismatchError", "QueryError", "QueryTerm", "SchemaError", "SearchHit", "TagReport", "build_index",
    "default_library_dir", "display_path", "export_embeddings", "open_library", "parse_query", "recall_at_k",
    "resolve_encoder",
]
