"""audit65 citizen finding 7: public-API argument mistakes are one line naming the argument and what it takes.

Before: `encode_images("a.jpg")` read the characters as files ("1: file not found", "/: not a regular file"),
`search(123)` was "object of type 'int' has no len()", `top_k=None` int()'s own message and `top_k=2.7` two results
without a word, `get_image(10**30)` SQLite's OverflowError, `list_images(limit=-1)` every image (SQLite's LIMIT -1),
`encode_bytes("a str")` hashlib's "Strings must be encoded before hashing", `Library(123)` pathlib's "expected str,
bytes or os.PathLike object, not int".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.library import Library


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory):
    from tests.library.conftest import write_images

    root = tmp_path_factory.mktemp("s65args")
    photos = write_images(root / "photos", 3)
    lib = Library(root / "lib", model="test-vit-tiny")
    lib.add([str(p) for p in photos], progress=False)
    yield lib, photos
    lib.close()


def test_one_path_str_or_bytes_is_one_image_as_one_string_is_one_text(library) -> None:
    lib, photos = library
    encoder = lib.encoder
    want = encoder.encode_images([str(photos[0])])
    assert want.shape == (1, encoder.embed_dim)
    for one in (str(photos[0]), photos[0], photos[0].read_bytes()):
        got = encoder.encode_images(one)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6)  # the same reader whatever the form
    image = Image.open(photos[0])
    np.testing.assert_array_equal(encoder.encode_images(image), encoder.encode_images([image]))
    assert encoder.encode_texts("a cat").shape == (1, encoder.embed_dim)  # the rule it follows


def test_an_item_that_is_no_image_is_named_by_its_position(library) -> None:
    lib, photos = library
    with pytest.raises(TypeError) as error:
        lib.encoder.encode_images([str(photos[0]), 7])
    assert str(error.value) == "images[1] must be a path, image bytes or a PIL image, got int"
    with pytest.raises(TypeError) as error:
        lib.encoder.encode_images(7)
    assert str(error.value) == ("images must be a path, image bytes, a PIL image or a list of those, got int")


def test_encode_bytes_names_bytes(library) -> None:
    lib, photos = library
    with pytest.raises(TypeError) as error:
        lib.encoder.encode_bytes("a str")  # type: ignore[arg-type]
    assert str(error.value) == "encode_bytes takes an image file's bytes, got str (a path: encode_images([path]))"
    assert lib.encoder.encode_bytes(photos[0].read_bytes()).shape == (lib.encoder.embed_dim,)
    assert lib.encoder.encode_bytes(bytearray(photos[0].read_bytes())).shape == (lib.encoder.embed_dim,)
    assert lib.encoder.encode_bytes(memoryview(photos[0].read_bytes())).shape == (lib.encoder.embed_dim,)  # as before


@pytest.mark.parametrize(("query", "said"), [
    (123, "query must be a str (search arithmetic such as '\"cat\" - \"grass\"'), got int"),
    (["a", "b"], "query must be a str (search arithmetic such as '\"cat\" - \"grass\"'), got list; several texts: "
                 "search(text=[...])"),
    (b"cat", "query must be a str (search arithmetic such as '\"cat\" - \"grass\"'), got bytes"),
])
def test_a_query_that_is_no_string_is_one_type_error(library, query, said) -> None:
    with pytest.raises(TypeError) as error:
        library[0].search(query)
    assert str(error.value) == said


@pytest.mark.parametrize("top_k", [None, 2.7, "3", True, -1])
def test_a_top_k_that_is_no_count_is_refused_naming_it(library, top_k) -> None:
    with pytest.raises(ValueError) as error:
        library[0].search("a cat", top_k=top_k)
    assert str(error.value) == f"top_k must be an int of 0 or more, got {top_k!r}"


def test_valid_searches_still_answer(library) -> None:
    lib, photos = library
    assert len(lib.search("a cat", top_k=2)) == 2
    assert len(lib.search("a cat", top_k=np.int64(1))) == 1
    assert len(lib.search("a cat", top_k=2.0)) == 2  # a whole float (a JSON number) worked before: kept
    assert len(lib.search("a cat", top_k=np.float32(1))) == 1
    assert lib.search("a cat", top_k=0) == []
    assert len(lib.search(text=["a cat", "a dog"], top_k=3)) == 3
    assert lib.search(image=str(photos[1]), top_k=1)[0].path == str(photos[1])


def test_an_id_past_sqlites_range_is_not_found(library) -> None:
    lib, _ = library
    assert lib.get_image(10**30) is None
    assert lib.get_image(-(10**30)) is None
    assert lib.get_image(-1) is None  # as before
    assert lib.get_image("1").id == 1  # as before
    with pytest.raises(KeyError) as error:
        lib.thumbnail(10**30)
    assert str(error.value) == repr(f"no image with id {10**30} in library {lib.paths.root}")


@pytest.mark.parametrize(("kwargs", "said"), [
    ({"limit": -1}, "limit must be 0 or more (None: no limit), got -1"),
    ({"offset": -5}, "offset must be 0 or more, got -5"),
])
def test_a_negative_page_is_refused(library, kwargs, said) -> None:
    with pytest.raises(ValueError) as error:
        library[0].list_images(**kwargs)
    assert str(error.value) == said


def test_valid_pages_still_list(library) -> None:
    lib, _ = library
    assert [r.id for r in lib.list_images()] == [1, 2, 3]
    assert [r.id for r in lib.list_images(limit=1, offset=1)] == [2]
    assert lib.list_images(limit=0) == []
    assert [r.id for r in lib.list_images(offset=2)] == [3]


@pytest.mark.parametrize("path", [123, 1.5, ["a"]])
def test_a_library_path_that_is_no_path_names_it(path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError) as error:
        Library(path)
    assert str(error.value) == f"path must be a library folder (a str or os.PathLike) or None, got {type(path).__name__}"
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


@pytest.mark.parametrize(("kwargs", "said"), [
    ({"text": 123}, "text must be a str or a list of str, got int"),
    ({"text": ["a cat", 5]}, "text must be a str or a list of str, got list"),
    ({"image": 123}, "image must be a path, bytes or a PIL image, or a list of them; got int"),
    ({"image": [b"x", 5]}, "image must be a path, bytes or a PIL image, or a list of them; got list"),
])
def test_search_names_its_own_text_and_image_arguments(library, kwargs, said) -> None:
    """Review 65 (revapi): `search(text=123)` was Python's "'int' object is not iterable", `search(image=123)` named
    "images[0]", an argument search has not."""
    with pytest.raises(TypeError) as error:
        library[0].search(**kwargs)
    assert str(error.value) == said


def test_a_path_given_as_the_query_points_at_image(library) -> None:
    with pytest.raises(TypeError, match=r"got PosixPath; an image: search\(image=path\)$"):
        library[0].search(Path("a.jpg"))


def test_a_library_takes_what_load_model_returns(tmp_path: Path) -> None:
    """Review 65 (revapi): `Library(model=load_model(...))` was a TypeError; the one `api.loaded.unwrap_model` reads a
    LoadedModel and a (model, preprocess) pair for the library and the classifier alike."""
    import clipforge
    from tests.library.conftest import write_images

    loaded = clipforge.load_model("test-vit-tiny")
    photos = write_images(tmp_path / "photos", 2)
    with Library(tmp_path / "lib", model=loaded) as lib:
        assert lib.encoder.model is not None
        lib.add([str(p) for p in photos], progress=False)
        assert lib.search(image=str(photos[0]), top_k=1)[0].path == str(photos[0])
