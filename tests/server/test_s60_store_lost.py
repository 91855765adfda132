"""A Milvus server that goes away while `serve` runs: the client gets 503 naming the store as the cause.

The server's requests reached the store, the store's `StoreConnectionError` was no user error, and every
search, listing and upload answered 500 `internal_error` ("a bug") with a traceback in the log, as if the
server were broken, and no client could tell that trying again later would work. Now: 503
`store_connection_error`, `Retry-After`, a sentence that names neither the store's host nor its
collection (those are the operator's, in the log line), and no traceback; the CLI still says the whole line.
"""

from __future__ import annotations

import importlib.util
import logging

import pytest
from fastapi.testclient import TestClient

from clipforge.cli.main import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("milvus_lite") is None, reason="needs the milvus extra (milvus-lite)"
)


class _Unavailable(Exception):
    """What pymilvus raises when the server's socket is gone: a gRPC error whose code() is UNAVAILABLE."""

    def code(self):
        class _Code:
            name = "UNAVAILABLE"

        return _Code()

    def __str__(self) -> str:
        return "failed to connect to all addresses; last error: ipv4:10.1.2.3:19530: Connection refused"


@pytest.fixture()
def served_store(tmp_path, kit):
    from clipforge.server.app import create_app
    from clipforge.server.runner import open_server_library

    photos = kit.write_photos(tmp_path / "photos")
    store = f"milvus-lite:{tmp_path}/m.db"
    where = ["--library", str(tmp_path / "lib"), "--store", store]
    assert main(["index", "add", str(photos[0].parent), "--model", "test-vit-tiny", *where, "--workers", "0",
                 "-q"]) == 0
    library = open_server_library(tmp_path / "lib", "test-vit-tiny", store=store)
    try:
        yield library, create_app(library, ui=False)
    finally:
        library.close()


def _lose_the_server(library, monkeypatch) -> None:
    """Every call the store makes from now on fails as a vanished server's does."""
    import clipforge.library.milvus_engine as engine

    def gone(*args, **kwargs):
        raise _Unavailable()

    monkeypatch.setattr(engine, "is_engine_error", lambda exc: isinstance(exc, _Unavailable))
    monkeypatch.setattr("clipforge.library.milvus_store.is_engine_error", engine.is_engine_error)
    for name in ("search", "query", "upsert", "insert", "get", "delete"):
        monkeypatch.setattr(library.milvus.client, name, gone)


def test_a_lost_store_answers_503_with_retry_after_and_no_traceback(served_store, monkeypatch, caplog, kit):
    library, app = served_store
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/api/search", json={"text": "a photo", "top_k": 2}).status_code == 200
        _lose_the_server(library, monkeypatch)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="clipforge.server.errors"):
            answers = [
                client.post("/api/search", json={"text": "a photo", "top_k": 2}),
                client.get("/api/images", params={"limit": 2}),
            ]
        monkeypatch.undo()  # the server answers again: nothing of the failure stays behind
        again = client.post("/api/search", json={"text": "a photo", "top_k": 2})
        assert again.status_code == 200 and len(again.json()["results"]) == 2, again.text
    for answer in answers:
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["error"] == "store_connection_error", body
        assert body["detail"] == (
            "the library's Milvus store is not answering (the server log names it); try again shortly"
        )
        assert int(answer.headers["Retry-After"]) >= 1
    assert not [r for r in caplog.records if r.exc_info], "a lost store is no bug: no traceback"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "10.1.2.3:19530" in logged and "503 store_connection_error" in logged, logged


def test_a_store_lost_while_an_original_or_thumbnail_is_read_is_503_not_a_missing_file(served_store, monkeypatch):
    """The file routes read the record, then the store again: a store lost in between was "file_unavailable"
    (404) with the store's address and the engine's words in its detail, to an anonymous client."""
    from clipforge.library.milvus_engine import StoreConnectionError

    library, app = served_store

    def lost(*args, **kwargs):
        raise StoreConnectionError("Milvus store milvus://10.1.2.3:19530/photos failed (connection refused)")

    monkeypatch.setattr(type(library), "thumbnail", lost)
    monkeypatch.setattr(type(library), "image_bytes", lost)
    with TestClient(app, raise_server_exceptions=False) as client:
        image_id = client.get("/api/images", params={"limit": 1}).json()["images"][0]["id"]
        for path in (f"/api/images/{image_id}", f"/api/images/{image_id}/thumb"):
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"] == "store_connection_error" and "10.1.2.3" not in answer.text
