"""Two writers (torchrun ranks) creating one collection at once.

A milvus-lite server answered the second rank's create with "[Errno 17] File exists" while the first rank's
create was still laying out the collection, so `has_collection` still said no and the rank failed: the
collection is waited for, within a bound, before the failure is believed."""

from __future__ import annotations

import pytest

from clipforge.library import milvus_store
from clipforge.library.backend import StoreSpec
from clipforge.library.milvus_store import MilvusStore, StoreUnavailableError


class EngineError(Exception):
    """Stands for pymilvus's MilvusException: `MilvusStore.call` turns engine errors into one sentence."""


EngineError.__module__ = "pymilvus.exceptions"


class RacingClient:
    """A server on which another writer's create of the collection finishes `appears_after` checks later."""

    def __init__(self, appears_after: int | None,
                 refusal: str = "[Errno 17] File exists: '/data/collections/photos_spaces'") -> None:
        self.appears_after, self.refusal = appears_after, refusal
        self.checks = 0

    def create_collection(self, name, schema=None, index_params=None):
        raise EngineError(self.refusal)

    def has_collection(self, name):
        self.checks += 1
        return self.appears_after is not None and self.checks > self.appears_after


def _store(client: RacingClient) -> MilvusStore:
    store = object.__new__(MilvusStore)
    store.spec = StoreSpec(kind="milvus", uri="http://127.0.0.1:19530", collection="photos")
    store.client = client
    return store


def test_a_create_racing_another_writers_create_waits_for_it():
    client = RacingClient(appears_after=3)
    _store(client).create_collection("photos_spaces", schema=None, index=None)
    assert client.checks == 4


def test_a_create_that_fails_for_its_own_reason_still_fails(monkeypatch):
    monkeypatch.setattr(milvus_store, "CREATE_RACE_SECONDS", 0.3)
    client = RacingClient(appears_after=None)
    with pytest.raises(StoreUnavailableError, match=r"failed \(\[Errno 17\] File exists"):
        _store(client).create_collection("photos_spaces", schema=None, index=None)
    assert client.checks >= 2


def test_a_create_refused_for_another_reason_is_said_at_once():
    """A quota or a permission is no race: it was answered after 30 s and 300 engine calls."""
    client = RacingClient(appears_after=None, refusal="exceeded the limit number of collections")
    with pytest.raises(StoreUnavailableError, match="exceeded the limit number of collections"):
        _store(client).create_collection("photos_spaces", schema=None, index=None)
    assert client.checks == 0
