"""Both stores answer a search's query and a one-image classify with the same code (`library.queries`).

`Library` (SQLite + FAISS) and `MilvusLibrary` had their own copies of `search` (query -> unit vector ->
the store's ranking) and `classify_image`; a fix to one (the negative `top_k` refusal, the scoring of a
sigmoid model) could miss the other. Each class now only ranks (`search_vector`).
"""

from __future__ import annotations

import pytest

from clipforge.library.library import Library
from clipforge.library.queries import QueryMethods


def test_search_and_classify_image_are_one_function_on_every_store() -> None:
    pytest.importorskip("pymilvus")
    from clipforge.library.milvus_library import MilvusLibrary

    for name in ("search", "classify_image"):
        assert getattr(Library, name) is getattr(QueryMethods, name), name
        assert getattr(MilvusLibrary, name) is getattr(QueryMethods, name), name
    assert Library.search_vector is not MilvusLibrary.search_vector  # each store ranks in its own way
