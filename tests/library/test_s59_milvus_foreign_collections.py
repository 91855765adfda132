"""A collection under a name clipforge uses, made by someone else, is refused before anything is written (audit 59).

Operator finding 1: another tool's collection named ``<name>_m<fingerprint>`` (dim 512 where the model has 256) was
reused blindly: `index add` recorded the space in ``<name>_spaces``, failed on the first insert ("vector field
'vector' expected dim 512, got 256 ...; running the same command again finishes the rest", which no re-run did),
and then `index stats` showed a healthy empty library whose `search` failed in the engine's words. A foreign
``<name>_spaces`` failed every insert the same way. Now every existing collection clipforge would use (registry,
vocabularies, a space's rows) is compared with what clipforge would create, in one line naming it and the
difference, and only a lost connection is told that running again finishes the rest.

Newcomer finding 3: the missing-extra line gave a checkout's command (`pip install -c constraints.txt -e
'.[milvus]'`), which fails for an installed package; every other extra's line says ``pip install 'clipforge[X]'``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from pymilvus import DataType, MilvusClient  # noqa: E402
from pymilvus.exceptions import MilvusException  # noqa: E402

from clipforge.cli.main import main  # noqa: E402
from clipforge.library.encoder import resolve_encoder  # noqa: E402

SPACE_FIELDS = "path, id, sha256, size, mtime_ns, width, height, status, error, added_at, tags, tag_scores, vector"
RERUN = "running the same command again"


@pytest.fixture(scope="module")
def vit_fp() -> str:
    return resolve_encoder("test-vit-tiny").fingerprint


def _client(db: Path) -> MilvusClient:
    return MilvusClient(str(db))


def _photos(tmp_path: Path, images_factory) -> Path:
    images_factory(tmp_path / "photos", 3, formats=("png",))
    return tmp_path / "photos"


def _names(client: MilvusClient) -> list[str]:
    return sorted(client.list_collections())


def _foreign(db: Path, name: str, dimension: int) -> None:
    """Another tool's plain collection (fields id and vector) under a name clipforge would use."""
    client = _client(db)
    try:
        client.create_collection(name, dimension=dimension)
    finally:
        client.close()


def test_a_foreign_space_collection_is_refused_and_nothing_is_registered(tmp_path, images_factory, capfd, fail_line,
                                                                          vit_fp) -> None:
    photos, db = _photos(tmp_path, images_factory), tmp_path / "m.db"
    client = _client(db)
    foreign = f"gamma_m{vit_fp[:16]}"
    client.create_collection(foreign, dimension=512)  # another tool's collection under the space's name
    client.insert(foreign, [{"id": i, "vector": [0.1] * 512} for i in range(5)])
    client.close()
    store = f"milvus-lite:{db}#gamma"
    add = ["index", "add", str(photos), "--store", store, "--library", str(tmp_path / "lib"), "--model",
           "test-vit-tiny", "--workers", "0", "-q"]
    want = (f"error: Milvus store milvus-lite:{db} (collection gamma): collection {foreign} exists with dim 512 and "
            f"fields [id, vector]; clipforge's space for test-vit-tiny needs dim 32 and fields [{SPACE_FIELDS}]: drop "
            "it or use another collection name (a store named gamma uses the collections gamma_spaces, "
            "gamma_tagsets, gamma_m<fingerprint> and gamma_m<fingerprint>_t<n>)")
    assert fail_line(*add) == want
    assert fail_line(*add) == want  # the same line again, never "running again finishes the rest"
    err = fail_line("index", "stats", "--store", store, "--library", str(tmp_path / "lib"))
    assert err.startswith(f"error: no library in milvus-lite:{db} (collection gamma)"), err  # not a healthy library
    client = _client(db)
    try:
        assert _names(client) == [foreign]  # no registry was made, nothing recorded
        assert client.query(foreign, filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"] == 5
    finally:
        client.close()


def test_a_foreign_registry_is_refused_by_writes_and_reads(tmp_path, images_factory, capfd, fail_line) -> None:
    photos, db = _photos(tmp_path, images_factory), tmp_path / "m.db"
    _foreign(db, "beta_spaces", 8)
    store = f"milvus-lite:{db}#beta"
    want = (f"error: Milvus store milvus-lite:{db} (collection beta): collection beta_spaces exists with fields "
            "[id, vector]; clipforge's registry of model spaces needs fields [fingerprint, name, dim, collection, "
            "is_default, created, dummy]: drop it or use another collection name (a store named beta uses the "
            "collections beta_spaces, beta_tagsets, beta_m<fingerprint> and beta_m<fingerprint>_t<n>)")
    lib = str(tmp_path / "lib")
    assert fail_line("index", "add", str(photos), "--store", store, "--library", lib, "--model", "test-vit-tiny",
                 "--workers", "0", "-q") == want
    assert fail_line("index", "stats", "--store", store, "--library", lib) == want
    assert fail_line("search", "a dog", "--store", store, "--library", lib) == want
    client = _client(db)
    try:
        assert _names(client) == ["beta_spaces"]  # no space collection was made beside it
    finally:
        client.close()


def test_a_foreign_vocabulary_collection_is_refused_before_the_add_writes(tmp_path, images_factory, capfd, fail_line) -> None:
    photos, db = _photos(tmp_path, images_factory), tmp_path / "m.db"
    _foreign(db, "delta_tagsets", 2)
    err = fail_line("index", "add", str(photos), "--store", f"milvus-lite:{db}#delta", "--library",
                str(tmp_path / "lib"), "--model", "test-vit-tiny", "--workers", "0", "-q")
    assert ("collection delta_tagsets exists with fields [id, vector]; clipforge's record of tag vocabularies needs "
            "fields [fingerprint, vocabulary, dummy]: drop it or use another collection name") in err, err
    assert RERUN not in err
    client = _client(db)
    try:
        assert _names(client) == ["delta_tagsets"]
    finally:
        client.close()


def test_a_space_collection_replaced_by_another_schema_is_named_with_the_field_that_differs(
        tmp_path, images_factory, capfd, fail_line, vit_fp) -> None:
    """A library's space whose collection was dropped and made again by another tool with the same field names
    but one other type: the reads refuse it, naming that field, instead of the engine's error mid-search."""
    photos, db = _photos(tmp_path, images_factory), tmp_path / "m.db"
    store, lib = f"milvus-lite:{db}#c", str(tmp_path / "lib")
    assert main(["index", "add", str(photos), "--store", store, "--library", lib, "--model", "test-vit-tiny",
                 "--workers", "0", "-q"]) == 0
    collection = f"c_m{vit_fp[:16]}"
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)  # clipforge's, width INT64
    schema.add_field("path", DataType.VARCHAR, max_length=8192, is_primary=True)
    for name, kind in (("id", DataType.INT64), ("sha256", DataType.VARCHAR), ("size", DataType.INT64),
                       ("mtime_ns", DataType.INT64), ("width", DataType.INT64), ("height", DataType.INT32),
                       ("status", DataType.VARCHAR), ("error", DataType.VARCHAR), ("added_at", DataType.DOUBLE)):
        schema.add_field(name, kind, **({"max_length": 2048} if kind == DataType.VARCHAR else {}))
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=16, max_length=512)
    schema.add_field("tag_scores", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=16)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=32)
    client = _client(db)
    client.drop_collection(collection)
    client.create_collection(collection, schema=schema)
    client.close()
    want = (f"error: Milvus store milvus-lite:{db} (collection c): collection {collection} exists with field width "
            "INT64; clipforge's space for test-vit-tiny needs width INT32: drop it or use another collection name "
            "(a store named c uses the collections c_spaces, c_tagsets, c_m<fingerprint> and c_m<fingerprint>_t<n>)")
    assert fail_line("index", "stats", "--store", store, "--library", lib) == want
    assert fail_line("search", "a dog", "--store", store, "--library", lib) == want
    assert fail_line("index", "add", str(photos), "--store", store, "--library", lib, "--workers", "0",
                 "-q") == want


@pytest.mark.parametrize(("message", "rerun"), [
    ("Fail connecting to server on 127.0.0.1:19530, illegal connection params or server unavailable", True),
    ("failed to connect to all addresses; last error: UNAVAILABLE", True),
    ("Deadline Exceeded", True),
    ("field 'vector' expected dim 512, got 32", False),
    ("exceeded the limit number of collections", False),
    ("PermissionDenied: not allowed to Upsert", False),
])
def test_only_a_lost_connection_is_told_to_run_again(tmp_path, images_factory, capfd, fail_line, monkeypatch, message,
                                                     rerun) -> None:
    photos, db = _photos(tmp_path, images_factory), tmp_path / "m.db"
    real = MilvusClient.upsert

    def refuse(self, collection, rows, *args, **kwargs):  # the space's first batch
        if collection.endswith("_spaces"):
            return real(self, collection, rows, *args, **kwargs)
        raise MilvusException(message=message)

    monkeypatch.setattr(MilvusClient, "upsert", refuse)
    err = fail_line("index", "add", str(photos), "--store", f"milvus-lite:{db}", "--library",
                str(tmp_path / "lib"), "--model", "test-vit-tiny", "--workers", "0", "-q")
    assert message in err
    assert (RERUN in err) is rerun, err


def test_a_grpc_status_of_the_connection_counts_as_interrupted() -> None:
    from clipforge.library.milvus_engine import interrupted

    class _Code:
        def __init__(self, name: str) -> None:
            self.name = name

    class _RpcError(Exception):
        def __init__(self, code: str) -> None:
            super().__init__("rpc failed")
            self._code = _Code(code)

        def code(self) -> _Code:
            return self._code

    assert interrupted(_RpcError("UNAVAILABLE")) and interrupted(_RpcError("DEADLINE_EXCEEDED"))
    assert not interrupted(_RpcError("INVALID_ARGUMENT"))
    assert not interrupted(MilvusException(code=1100, message="group_by_field 'sha256' not found in schema"))


def test_a_missing_pymilvus_names_the_extra_as_every_other_extra_does(tmp_path, monkeypatch, capfd, fail_line) -> None:
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # not installed: `import pymilvus` fails
    err = fail_line("index", "stats", "--store", f"milvus-lite:{tmp_path}/m.db", "--library", str(tmp_path / "lib"))
    assert err == "error: a Milvus store needs pymilvus and milvus-lite: pip install 'clipforge[milvus]'"
    assert not (tmp_path / "m.db").exists()


def test_serve_create_on_a_foreign_space_collection_refuses_at_the_start(tmp_path, vit_fp) -> None:
    """`serve --create --model M` records M's space at once (`MilvusLibrary._claim_model`): a foreign collection
    under its name is refused there, nothing is registered, and the store is not left open."""
    from clipforge.library.milvus_library import MilvusLibrary
    from clipforge.library.milvus_store import CollectionMismatchError

    db = tmp_path / "m.db"
    client = _client(db)
    client.create_collection(f"clipforge_m{vit_fp[:16]}", dimension=512)
    client.close()
    store = f"milvus-lite:{db}"
    with pytest.raises(CollectionMismatchError, match=f"collection clipforge_m{vit_fp[:16]} exists with dim 512"):
        MilvusLibrary(store, tmp_path / "lib", model="test-vit-tiny", create=True)
    client = _client(db)  # the engine's folder lock was given back
    try:
        assert _names(client) == [f"clipforge_m{vit_fp[:16]}"]
    finally:
        client.close()
