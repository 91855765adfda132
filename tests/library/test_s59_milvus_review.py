"""Review 59 (revmilvus): another tool's collections under clipforge's names are refused, never dropped or half-used.

1. `tag` (milvus-lite) and `index drop-space` dropped a foreign ``C_m<fp>_t<n>`` (and a foreign ``C_m<fp>`` put back
   after a `tag` moved the rows to ``_t1``) without a word: the collections found by name were dropped unchecked.
   `tag` with a foreign ``C_tagsets`` refused only after creating an empty ``_t1``.
2. `index copy` into Milvus wrote a whole space before refusing a later space's foreign collection or a foreign
   ``C_tagsets``; copying out of a store with a foreign ``C_tagsets`` filled the destination first.
3. `serve` (`MilvusLibrary(..., create=True)`) started on a store with a foreign ``C_tagsets``: every upload was a 500.
4. pymilvus without milvus-lite got pymilvus's own advice; the server wheel's line kept ``-c constraints.txt``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from pymilvus import MilvusClient  # noqa: E402

from clipforge.cli.main import main  # noqa: E402
from clipforge.library.encoder import resolve_encoder  # noqa: E402

NAMES = "(a store named {c} uses the collections {c}_spaces, {c}_tagsets, {c}_m<fingerprint> and {c}_m<fingerprint>_t<n>)"


@pytest.fixture(scope="module")
def fps() -> tuple[str, str]:
    return resolve_encoder("test-vit-tiny").fingerprint, resolve_encoder("test-rn-tiny").fingerprint


def _foreign(db: Path, name: str, rows: int, dim: int = 4) -> None:
    client = MilvusClient(str(db))
    try:
        client.create_collection(name, dimension=dim)
        if rows:
            client.insert(name, [{"id": i, "vector": [0.1] * dim} for i in range(rows)])
    finally:
        client.close()


def _state(db: Path) -> dict[str, int]:
    """Each collection of the store and its row count."""
    client = MilvusClient(str(db))
    try:
        out = {}
        for name in sorted(client.list_collections()):
            client.load_collection(name)
            key = client.describe_collection(name)["fields"][0]["name"]
            flt = f"{key} >= 0" if key in ("id",) else f'{key} != ""'
            out[name] = client.query(name, filter=flt, output_fields=["count(*)"])[0]["count(*)"]
        return out
    finally:
        client.close()


def _add(tmp_path: Path, store: str, photos: Path, model: str = "test-vit-tiny") -> None:
    assert main(["index", "add", str(photos), "--store", store, "--library", str(tmp_path / "lib"), "--model", model,
                 "--workers", "0", "-q"]) == 0


def _tag(store: str, tmp_path: Path) -> list[str]:
    return ["tag", "--labels", "dog,cat", "-q", "--store", store, "--library", str(tmp_path / "lib")]


@pytest.fixture
def photos(tmp_path, images_factory) -> Path:
    images_factory(tmp_path / "photos", 3, formats=("png",))
    return tmp_path / "photos"


def test_tag_refuses_a_foreign_t_collection_and_drops_nothing(tmp_path, photos, capfd, fail_line, fps) -> None:
    db, store = tmp_path / "m.db", f"milvus-lite:{tmp_path / 'm.db'}#lib"
    _add(tmp_path, store, photos)
    foreign = f"lib_m{fps[0][:16]}_t1"
    _foreign(db, foreign, 7)
    before = _state(db)
    err = fail_line(*_tag(store, tmp_path))
    assert err == (f"error: Milvus store milvus-lite:{db} (collection lib): collection {foreign} exists with dim 4 "
                   "and fields [id, vector]; clipforge's space for test-vit-tiny needs dim 32 and fields [path, id, "
                   "sha256, size, mtime_ns, width, height, status, error, added_at, tags, tag_scores, vector]: drop it "
                   f"or use another collection name {NAMES.format(c='lib')}")
    assert _state(db) == before  # the foreign rows kept, no vocabulary collection made


def test_tag_refuses_a_foreign_base_collection_put_back_after_a_tag(tmp_path, photos, capfd, fail_line, fps) -> None:
    db, store = tmp_path / "m.db", f"milvus-lite:{tmp_path / 'm.db'}#lib"
    _add(tmp_path, store, photos)
    assert main(_tag(store, tmp_path)) == 0  # the rows move to lib_m<fp>_t1
    base = f"lib_m{fps[0][:16]}"
    assert f"{base}_t1" in _state(db) and base not in _state(db)
    _foreign(db, base, 11)
    before = _state(db)
    err = fail_line(*_tag(store, tmp_path))
    assert f"collection {base} exists with dim 4 and fields [id, vector]" in err, err
    assert _state(db) == before


def test_tag_with_a_foreign_tagsets_creates_nothing(tmp_path, photos, capfd, fail_line, fps) -> None:
    db, store = tmp_path / "m.db", f"milvus-lite:{tmp_path / 'm.db'}#lib"
    _add(tmp_path, store, photos)
    _foreign(db, "lib_tagsets", 2, dim=2)
    before = _state(db)
    err = fail_line(*_tag(store, tmp_path))
    assert "collection lib_tagsets exists with fields [id, vector]; clipforge's record of tag vocabularies" in err
    assert _state(db) == before  # no empty lib_m<fp>_t1 made before the refusal


def test_drop_space_refuses_a_foreign_t_collection(tmp_path, photos, capfd, fail_line, fps) -> None:
    db, store = tmp_path / "m.db", f"milvus-lite:{tmp_path / 'm.db'}#ds"
    _add(tmp_path, store, photos)
    _add(tmp_path, store, photos, "test-rn-tiny")
    foreign = f"ds_m{fps[1][:16]}_t7"
    _foreign(db, foreign, 9)
    before = _state(db)
    err = fail_line("index", "drop-space", "test-rn-tiny", "--store", store, "--library", str(tmp_path / "lib"))
    assert f"collection {foreign} exists with dim 4 and fields [id, vector]; clipforge's space for test-rn-tiny" in err
    assert err.endswith(NAMES.format(c="ds")), err
    assert _state(db) == before  # the registry row, the space and the foreign rows all kept


def _two_space_source(tmp_path: Path, photos: Path) -> str:
    src = f"milvus-lite:{tmp_path / 'src.db'}#src"
    _add(tmp_path, src, photos)
    _add(tmp_path, src, photos, "test-rn-tiny")
    assert main(_tag(src, tmp_path)) == 0  # a vocabulary for the default space
    return src


def test_copy_refuses_a_foreign_second_space_before_writing(tmp_path, photos, capfd, fail_line, fps) -> None:
    src = _two_space_source(tmp_path, photos)
    db = tmp_path / "dst.db"
    foreign = f"cpa_m{fps[1][:16]}"
    _foreign(db, foreign, 3)
    err = fail_line("index", "copy", "--store", src, "--to", f"milvus-lite:{db}#cpa", "-q")
    assert f"collection {foreign} exists with dim 4 and fields [id, vector]" in err, err
    assert _state(db) == {foreign: 3}  # no registry, no first space


def test_copy_refuses_a_foreign_destination_tagsets_before_writing(tmp_path, photos, capfd, fail_line) -> None:
    src = _two_space_source(tmp_path, photos)
    db = tmp_path / "dst.db"
    _foreign(db, "cpb_tagsets", 0, dim=2)
    err = fail_line("index", "copy", "--store", src, "--to", f"milvus-lite:{db}#cpb", "-q")
    assert "collection cpb_tagsets exists with fields [id, vector]" in err, err
    assert _state(db) == {"cpb_tagsets": 0}


def test_copy_out_of_a_store_with_a_foreign_tagsets_writes_nothing(tmp_path, photos, capfd, fail_line) -> None:
    db, store = tmp_path / "m.db", f"milvus-lite:{tmp_path / 'm.db'}#cpc"
    _add(tmp_path, store, photos)
    _foreign(db, "cpc_tagsets", 0, dim=2)
    out = tmp_path / "back"
    err = fail_line("index", "copy", "--store", store, "--to-library", str(out), "-q")
    assert "collection cpc_tagsets exists with fields [id, vector]" in err, err
    assert not (out / "library.sqlite3").exists(), sorted(out.rglob("*"))  # the destination was not filled


def test_serve_create_refuses_a_foreign_tagsets_at_the_start(tmp_path, capfd) -> None:
    from clipforge.library.milvus_library import MilvusLibrary
    from clipforge.library.milvus_store import CollectionMismatchError

    db = tmp_path / "m.db"
    _foreign(db, "delta_tagsets", 0, dim=2)
    for create in (True, None):  # `serve --create --model M`, and a plain open
        with pytest.raises(CollectionMismatchError, match="collection delta_tagsets exists with fields"):
            MilvusLibrary(f"milvus-lite:{db}#delta", tmp_path / "lib", model="test-vit-tiny", create=create)
        assert _state(db) == {"delta_tagsets": 0}  # no registry, no space recorded


def test_serve_of_an_existing_library_with_a_foreign_tagsets_refuses(tmp_path, photos, capfd) -> None:
    from clipforge.library.milvus_library import MilvusLibrary
    from clipforge.library.milvus_store import CollectionMismatchError

    db, store = tmp_path / "m.db", f"milvus-lite:{tmp_path / 'm.db'}#cpb"
    _add(tmp_path, store, photos)
    _foreign(db, "cpb_tagsets", 0, dim=2)
    with pytest.raises(CollectionMismatchError, match="collection cpb_tagsets exists with fields"):
        MilvusLibrary(store, tmp_path / "lib", create=False)
    MilvusClient(str(db)).close()  # the folder was let go


def test_pymilvus_without_milvus_lite_names_the_extra(tmp_path, capfd, fail_line, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "milvus_lite", None)  # what `pip install pymilvus` (3.x) alone leaves
    err = fail_line("index", "stats", "--store", f"milvus-lite:{tmp_path / 'm.db'}", "--library",
                str(tmp_path / "lib"))
    assert err == ("error: a milvus-lite store needs milvus-lite (pymilvus is installed without it): "
                   "pip install 'clipforge[milvus]'")


def test_the_server_wheel_line_has_no_constraints_file(tmp_path, monkeypatch) -> None:
    from clipforge.library.milvus_server import MilvusServerError, start_local_server

    monkeypatch.setitem(sys.modules, "milvus", types.ModuleType("milvus"))  # some other `milvus` module
    with pytest.raises(MilvusServerError) as caught:
        start_local_server(tmp_path / "data")
    assert str(caught.value).endswith("(pip install 'clipforge[milvus-server]')"), str(caught.value)
    assert "constraints" not in str(caught.value)
