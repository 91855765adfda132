"""A Milvus store opened to be written with a model records that model, as the embedded store does (stop 59).

`serve --create --model M` (or `MilvusLibrary(store, model=M, create=True)`) on an empty Milvus store recorded
nothing: a later `index add DIR` from another process, without --model, used the shipped default model and made its
space the default, while the server of M searched an empty space. The embedded store records M at creation
(`Library._claim_model`); a Milvus store now records M's space, empty. As there, a default space that holds no
vector is taken over by the first vectors of another model, with the same notice (`ModelReplacedNotice`).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.cli.main import main  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402


def _stats(capsys, store: str, lib) -> dict:
    capsys.readouterr()
    assert main(["index", "stats", "--json", "--store", store, "--library", str(lib)]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_store_opened_with_a_model_records_it_for_a_later_plain_add(tmp_path, images_factory, capsys) -> None:
    images_factory(tmp_path / "photos", 2, formats=("png",))
    store = f"milvus-lite:{tmp_path}/m.db"
    MilvusLibrary(store, tmp_path / "server-lib", model="test-rn-tiny", create=True).close()  # serve --create
    with MilvusLibrary(store, tmp_path / "lib", create=False) as reader:  # the store exists now, M's space empty
        assert [(s["name"], s["images"], s["default"]) for s in reader.spaces()] == [("test-rn-tiny", 0, True)]
    capsys.readouterr()
    assert main(["index", "add", str(tmp_path / "photos"), "--store", store, "--library", str(tmp_path / "lib"),
                 "--workers", "0", "-q"]) == 0  # another process, no --model
    stats = _stats(capsys, store, tmp_path / "lib")
    assert stats["model"]["name"] == "test-rn-tiny", stats["model"]
    assert [(s["name"], s["images"]) for s in stats["spaces"]] == [("test-rn-tiny", 2)]


def test_the_serve_path_records_the_model_too(tmp_path, images_factory, capsys) -> None:
    from clipforge.server.runner import open_server_library

    images_factory(tmp_path / "photos", 2, formats=("png",))
    store = f"milvus-lite:{tmp_path}/m.db"
    open_server_library(tmp_path / "server-lib", "test-rn-tiny", create=True, store=store).close()
    with MilvusLibrary(store, tmp_path / "lib") as writer:  # a later writer without a model
        writer.add(tmp_path / "photos", workers=0, progress=False)
        assert writer.encoder.name == "test-rn-tiny"
    assert _stats(capsys, store, tmp_path / "lib")["model"]["name"] == "test-rn-tiny"


def test_no_model_the_default_open_or_a_read_only_open_records_nothing(tmp_path) -> None:
    """Only an explicit `create=True` records the model: the default open (a script's search of an empty store,
    `index add EMPTY --model M`) makes nothing until a photo is stored, and a read-only one refuses the store."""
    store = f"milvus-lite:{tmp_path}/m.db"
    MilvusLibrary(store, tmp_path / "lib", create=True).close()  # no model: the model is not known yet
    with MilvusLibrary(store, tmp_path / "lib", model="test-rn-tiny") as library:
        assert library.search("a photo", top_k=3) == []
        assert library.milvus.spaces() == [] and library.milvus.client.list_collections() == []
    with pytest.raises(FileNotFoundError, match="no library in"):
        MilvusLibrary(store, tmp_path / "lib", model="test-rn-tiny", create=False)
    with pytest.raises(FileNotFoundError, match="no library in"):
        MilvusLibrary(store, tmp_path / "lib", create=False)


def test_another_model_that_fills_the_store_first_takes_it_over_and_says_so(tmp_path, images_factory,
                                                                            capsys) -> None:
    images_factory(tmp_path / "photos", 2, formats=("png",))
    store = f"milvus-lite:{tmp_path}/m.db"
    MilvusLibrary(store, tmp_path / "lib", model="test-vit-tiny", create=True).close()
    capsys.readouterr()
    assert main(["index", "add", str(tmp_path / "photos"), "--store", store, "--library", str(tmp_path / "lib"),
                 "--model", "test-rn-tiny", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert (f"notice: library milvus-lite:{tmp_path}/m.db (collection clipforge) was made for model test-vit-tiny "
            "and held none of its vectors: it is built with test-rn-tiny from now on (plain `search` and `tag` use "
            "it; a server still open on test-vit-tiny must be restarted)") in err, err
    assert "it is not the library's default" not in err
    stats = _stats(capsys, store, tmp_path / "lib")
    assert stats["model"]["name"] == "test-rn-tiny"
    # oldest first, as the embedded store lists its models (audit 65): the default is flagged, not moved first
    assert [(s["name"], s["images"], s["default"]) for s in stats["spaces"]] == [
        ("test-vit-tiny", 0, False), ("test-rn-tiny", 2, True)]
    capsys.readouterr()
    assert main(["index", "add", str(tmp_path / "photos"), "--store", store, "--library", str(tmp_path / "lib"),
                 "--workers", "0"]) == 0  # said once: the default has its vectors now
    assert "was made for model" not in capsys.readouterr().err
