"""`serve` on a Milvus store whose collections were released while it ran (audit 65, finding 1).

An admin freeing memory (`release_collection`), or a milvus-lite server restarted (its collections come back
released): every `/api/search` and `/api/images` answered 503 for as long as `serve` ran, since only opening the
store loaded a collection, until some other process opened it. The store now loads a released collection and asks
once more, so the same running server answers as before.
"""

from __future__ import annotations

import importlib.util

import pytest
from fastapi.testclient import TestClient

from tests.server.test_s60_store_lost import served_store  # noqa: F401 (the fixture: a served milvus-lite library)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("milvus_lite") is None, reason="needs the milvus extra (milvus-lite)"
)


def test_serve_answers_again_after_its_collections_are_released(served_store) -> None:  # noqa: F811 (the fixture)
    library, app = served_store
    with TestClient(app, raise_server_exceptions=False) as client:
        search = client.post("/api/search", json={"text": "a photo", "top_k": 2})
        assert search.status_code == 200 and len(search.json()["results"]) == 2
        milvus = library.milvus.client
        for name in milvus.list_collections():
            milvus.release_collection(name)
        library._changed()  # past the 10 s cache of pages and stats
        again = client.post("/api/search", json={"text": "a photo", "top_k": 2})
        assert (again.status_code, again.json()["results"]) == (200, search.json()["results"])
        page = client.get("/api/images", params={"limit": 2})
        assert page.status_code == 200 and len(page.json()["images"]) == 2
