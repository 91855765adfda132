"""Opening a library: what a creation records, and what a refused call leaves (audit 58, findings 2 and 9).

2. `Library(path, create=True, model=M)` (what `serve --create --model M` opens) recorded nothing: the first add
   recorded its model. An `index add DIR` from another process without `--model` then used the shipped default,
   made it the library's model, and the running server (M) answered every search with no hits. M is recorded
   when the library is created (or first opened to be written with a model while it records none).
9. `Library(path, vector_dtype="float64")` (and a bad `index`, `max_pixels`, `precision`) raised after creating
   an empty `library.sqlite3`; every keyword is now checked before anything is made on disk.
"""

from __future__ import annotations

import json

import pytest

from clipforge.cli.main import main
from clipforge.library import Library

QUIET = ["--workers", "0", "-q"]


def _stats(capsys, lib) -> dict:
    capsys.readouterr()
    assert main(["index", "stats", "--json", "--library", str(lib)]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_library_created_with_a_model_keeps_it_for_a_plain_add(tmp_path, images_factory, capsys) -> None:
    """Python API: created with test-rn-tiny (not the default), then `index add DIR` without --model."""
    images_factory(tmp_path / "photos", 2, formats=("png",))
    lib = tmp_path / "lib"
    with Library(lib, model="test-rn-tiny", create=True) as library:
        assert library.stats()["model"]["name"] == "test-rn-tiny"  # recorded before any photo
    assert main(["index", "add", str(tmp_path / "photos"), "--library", str(lib), *QUIET]) == 0
    stats = _stats(capsys, lib)
    assert stats["model"]["name"] == "test-rn-tiny"
    assert [(s["name"], s["images"], s["default"]) for s in stats["spaces"]] == [("test-rn-tiny", 2, True)]
    with Library(lib, create=False) as library:  # opened without a model: the recorded one
        assert library.encoder.name == "test-rn-tiny" and len(library.search(text="a photo", top_k=5)) == 2


def test_serve_create_with_a_model_claims_the_new_library(tmp_path, images_factory, capsys) -> None:
    """What `serve --create --model M` opens (`open_server_library`), then the ingestion job written like the
    README's examples (`index add DIR`, no --model) in another process: both use M, and the server finds the
    job's photos."""
    pytest.importorskip("fastapi")
    from clipforge.server.runner import open_server_library

    images_factory(tmp_path / "photos", 3, formats=("png",))
    lib = tmp_path / "lib"
    served = open_server_library(lib, "test-rn-tiny", create=True)
    try:
        assert main(["index", "add", str(tmp_path / "photos"), "--library", str(lib), *QUIET]) == 0
        assert _stats(capsys, lib)["model"]["name"] == "test-rn-tiny"
        assert len(served.search(text="a photo", top_k=5)) == 3
    finally:
        served.close()


def test_an_explicit_model_on_the_empty_library_still_becomes_its_model(tmp_path, images_factory, capsys) -> None:
    """The claim holds no vector: the first vectors of an explicit `index add DIR --model N` make N the library's
    model, as before (audit 56: a first add that stored nothing must not fix the model)."""
    images_factory(tmp_path / "photos", 2, formats=("png",))
    (tmp_path / "empty").mkdir()
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(tmp_path / "empty"), "--model", "test-vit-tiny", *lib, *QUIET]) == 0
    assert _stats(capsys, tmp_path / "lib")["model"]["name"] == "test-vit-tiny"
    assert main(["index", "add", str(tmp_path / "photos"), "--model", "test-rn-tiny", *lib, *QUIET]) == 0
    stats = _stats(capsys, tmp_path / "lib")
    assert [(s["name"], s["images"], s["default"]) for s in stats["spaces"]] == [("test-rn-tiny", 2, True)]


@pytest.mark.parametrize(("keyword", "value", "message"), [
    ("vector_dtype", "float64", "vector_dtype must be 'float32' or 'float16', got 'float64'"),
    ("index", "bogus", "unknown index kind 'bogus'; expected one of "),
    ("max_pixels", -5, "max_pixels must be a positive number of pixels (e.g. 178956970, the default), got -5"),
    ("max_pixels", "lots", "max_pixels must be a positive number of pixels (e.g. 178956970, the default), got 'lots'"),
    ("precision", "fp16", "fp16 is not supported on CPU"),
])
def test_a_refused_keyword_leaves_no_library_behind(tmp_path, keyword, value, message) -> None:
    target = tmp_path / "deep" / "lib"
    with pytest.raises(ValueError) as caught:
        Library(target, **{keyword: value})
    assert str(caught.value).startswith(message), caught.value
    assert list(tmp_path.iterdir()) == []  # neither the library nor the folders above it


def test_an_index_of_the_wrong_type_is_one_line(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"^index must be a kind \('flat', 'ivf', 'hnsw', 'auto'\) or an IndexSpec, "
                                        r"got int$"):
        Library(tmp_path / "lib", index=3)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_answer_over_another_models_photos_says_so(tmp_path, images_factory, capsys) -> None:
    """A server of M beside photos another writer indexed explicitly with N (the first vectors decide the default
    model, audit 56): its searches found nothing and said "no photo matched"; the sentence names the cause."""
    images_factory(tmp_path / "photos", 2, formats=("png",))
    lib = tmp_path / "lib"
    served = Library(lib, model="test-rn-tiny", create=True)
    try:
        assert main(["index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", "--library", str(lib),
                     *QUIET]) == 0
        assert served.search(text="a photo", top_k=5) == []
        assert served.no_results_reason() == (
            "none of the library's 2 photos has a vector of the model this search uses: they were indexed with "
            "another model (`clipforge index stats` lists the model spaces); `clipforge index add --model M` embeds "
            "them with model M")
    finally:
        served.close()
