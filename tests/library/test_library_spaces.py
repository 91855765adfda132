"""Model spaces: one library, vectors of several models, each searched in its own space (both stores)."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.milvus_library import open_store_library

_find = __import__("importlib.util").util.find_spec
STORES = ["sqlite", pytest.param("milvus", marks=pytest.mark.skipif(
    _find("milvus_lite") is None, reason="needs the milvus extra")), pytest.param("server", marks=pytest.mark.skipif(
        not (os.environ.get("CLIPFORGE_TEST_MILVUS_ADDRESS") or _find("milvus")),
        reason="opt-in: a Milvus server (the milvus-server extra, or $CLIPFORGE_TEST_MILVUS_ADDRESS)"))]


def _store(kind: str, tmp_path, request) -> str | None:
    """None (the embedded store), a milvus-lite file, or a fresh collection on a real Milvus server."""
    if kind == "server":
        key = f"t{uuid.uuid4().hex[:12]}"
        return f"milvus://{request.getfixturevalue('milvus_server')}/{key}"
    return f"milvus-lite:{tmp_path}/m.db" if kind == "milvus" else None


def _store_args(store: str | None) -> list[str]:
    return ["--store", store] if store else []


def _ranked(hits) -> list[tuple[str, float]]:
    return [(h.path, round(h.score, 5)) for h in hits]


@pytest.mark.parametrize("kind", STORES)
def test_two_models_in_one_library(kind, tmp_path, images_factory, capsys, request) -> None:
    images_factory(tmp_path / "photos", 8, formats=("png", "jpg"))
    store = _store(kind, tmp_path, request)
    lib = ["--library", str(tmp_path / "lib"), *_store_args(store)]
    quiet = ["--workers", "0", "-q", "--json"]
    assert main(["index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", *lib, *quiet]) == 0
    capsys.readouterr()
    # Fill the second model's space with every known file, then again: resumable, nothing embedded twice.
    assert main(["index", "add", "--model", "test-rn-tiny", *lib, *quiet]) == 0
    assert json.loads(capsys.readouterr().out)["embedded"] == 8
    assert main(["index", "add", "--model", "test-rn-tiny", *lib, *quiet]) == 0
    assert json.loads(capsys.readouterr().out)["embedded"] == 0
    assert main(["index", "stats", "--json", *lib]) == 0
    spaces = json.loads(capsys.readouterr().out)["spaces"]
    assert [(s["name"], s["images"], s["default"]) for s in spaces] == [("test-vit-tiny", 8, True),
                                                                        ("test-rn-tiny", 8, False)]
    # Each space answers exactly as a library built with that model alone.
    for model in ("test-rn-tiny", "test-vit-tiny"):
        alone = Library(tmp_path / f"alone-{model}", model)
        alone.add(tmp_path / "photos", workers=0, progress=False)
        with open_store_library(store, tmp_path / "lib", model, create=False) as library:
            assert library.encoder.name == model
            assert _ranked(library.search("a red square", top_k=5)) == _ranked(alone.search("a red square", top_k=5))
    assert main(["index", "drop-space", "test-vit-tiny", *lib]) == 2  # the default goes last
    assert "default" in capsys.readouterr().err or kind == "sqlite"
    assert main(["index", "drop-space", "test-rn-tiny", *lib]) == 0
    assert "dropped model space test-rn-tiny" in capsys.readouterr().out
    assert main(["search", "red", "--model", "test-rn-tiny", *lib]) == 2
    assert "index add --model test-rn-tiny" in capsys.readouterr().err


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("milvus_lite") is None, reason="milvus extra")
def test_server_answers_from_a_milvus_store_and_names_its_model(tmp_path, images_factory) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.server.app import create_app
    from clipforge.server.runner import open_server_library

    images_factory(tmp_path / "photos", 4)
    store = f"milvus-lite:{tmp_path}/m.db"
    with open_store_library(store, tmp_path / "lib", "test-vit-tiny") as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    library = open_server_library(tmp_path / "lib", "test-vit-tiny", store=store)
    with TestClient(create_app(library, ui=False)) as client:
        out = client.post("/api/search", json={"text": "a photo", "top_k": 3}).json()
        assert out["model"] == "test-vit-tiny" and len(out["results"]) == 3
        first = out["results"][0]
        assert client.get(f"/api/images/{first['id']}/thumb?size=32").status_code == 200
        assert client.get("/api/stats").json()["images"]["ok"] == 4
        extra = images_factory(tmp_path / "more", 1, seed=5)[0].read_bytes()
        assert client.post("/api/images", files={"file": ("new.png", extra, "image/png")}).status_code == 201
        assert client.post("/api/images", files={"file": ("again.png", extra, "image/png")}).status_code == 200
        assert client.get("/api/stats").json()["images"]["ok"] == 5
    library.close()


@pytest.mark.parametrize("kind", STORES[:2])
def test_the_reads_of_a_second_space_are_that_spaces(kind, tmp_path, images_factory, capsys, request) -> None:
    """Tags, stats and the empty-result sentence follow the model a library was opened with. On SQLite they
    read the default space's: `tag --list --model M` after tagging M's space said "no tags yet", and
    `stats()` named the default model beside M's index."""
    images_factory(tmp_path / "photos", 4, formats=("png",))
    store = _store(kind, tmp_path, request)
    lib = ["--library", str(tmp_path / "lib"), *_store_args(store)]
    quiet = ["--workers", "0", "-q"]
    assert main(["index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", *lib, *quiet]) == 0
    assert main(["index", "add", "--model", "test-rn-tiny", *lib, *quiet]) == 0
    assert main(["tag", "--labels", "red,blue", "--templates", "simple", "--model", "test-rn-tiny", *lib, "-q"]) == 0
    capsys.readouterr()
    assert main(["tag", "--list", "--json", "--model", "test-rn-tiny", *lib]) == 0
    counts = json.loads(capsys.readouterr().out)["tags"]
    assert set(counts) == {"red", "blue"} and sum(counts.values()) == 4
    assert main(["tag", "--list", "--json", *lib]) == 0  # the default space was never tagged
    assert json.loads(capsys.readouterr().out)["tags"] == {}
    with open_store_library(store, tmp_path / "lib", "test-rn-tiny", create=False) as library:
        stats = library.stats()
        assert stats["model"]["name"] == "test-rn-tiny"
        assert stats["model"]["fingerprint"] == library.encoder.fingerprint
        assert stats["model"]["embed_dim"] == library.encoder.embed_dim
        assert stats["tags"] == {k: v for k, v in counts.items() if v} and stats["distinct_contents"] == 4
        first = library.list_images(limit=1)[0]
        assert {label for label, _ in library.tags(first.id)} == {"red", "blue"}
        assert "red" in library.no_results_reason("green")
