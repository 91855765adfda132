"""Search within folders: `Library.search(under=...)` and `clipforge search --in DIR` (rclip's habit).

A folder filter is exact on both stores: its photos and those of every folder below it, never a sibling
that merely starts the same (`photos` vs `photos2`), with `_` and `%` in names taken literally (SQL and
Milvus LIKE read them as wildcards). `--in DIR` indexes the folder's new or changed photos first unless
`--no-index`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.library import Library

NAMES = ("my_photos", "my_photos2", "myXphotos", "50%off", "plain")


@pytest.fixture()
def folders(tmp_path, images_factory) -> Path:
    """Five sibling folders of three photos each (distinct pictures), one with a subfolder."""
    root = tmp_path / "photos"
    for seed, name in enumerate(NAMES):
        images_factory(root / name, 3, seed=seed, prefix=name.replace("%", "pc"))
    images_factory(root / "my_photos" / "nested", 2, seed=99, prefix="deep")
    return root


def _names(hits) -> set[str]:
    return {Path(h.path).parent.name if Path(h.path).parent.name != "nested" else "my_photos/nested" for h in hits}


def _stores(tmp_path):
    yield "embedded", lambda encoder: Library(tmp_path / "lib", encoder)
    if importlib.util.find_spec("milvus_lite") and importlib.util.find_spec("pymilvus"):
        from clipforge.library.milvus_library import MilvusLibrary

        yield "milvus-lite", lambda encoder: MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", encoder)


def test_search_under_a_folder_is_exact_on_both_stores(tmp_path, tiny_encoder, folders):
    for store, make in _stores(tmp_path):
        with make(tiny_encoder) as library:
            assert library.add(folders, workers=0, progress=False).added == 17
            everything = library.search("a photo", top_k=50)
            assert len(everything) == 17
            inside = library.search("a photo", top_k=50, under=folders / "my_photos")
            assert _names(inside) == {"my_photos", "my_photos/nested"} and len(inside) == 5, store
            for name in ("myXphotos", "50%off", "plain"):
                found = library.search("a photo", top_k=50, under=str(folders / name))
                assert _names(found) == {name} and len(found) == 3, (store, name)
            both = library.search("a photo", top_k=50, under=[folders / "plain", folders / "50%off"])
            assert _names(both) == {"plain", "50%off"}, store
            assert library.search("a photo", top_k=50, under=folders / "nowhere") == []
            assert library.search("a photo", top_k=50, under=[]) == []
            # the top k within a folder is k photos there, even when a look-alike sibling ranks higher (the query
            # photo itself, first everywhere else)
            like = next((folders / "myXphotos").iterdir())
            assert library.search(image=like, top_k=1)[0].path == str(like)
            assert _names(library.search(image=like, top_k=2, under=folders / "my_photos")) <= {
                "my_photos", "my_photos/nested"}
            assert len(library.search(image=like, top_k=2, under=folders / "my_photos")) == 2, store
            # ranks within the folder are the library's own ranks, restricted
            ranked = [h.path for h in everything if h.path.startswith(str(folders / "plain") + os.sep)]
            assert [h.path for h in library.search("a photo", top_k=3, under=folders / "plain")] == ranked
            relative = os.path.relpath(folders / "plain")
            assert len(library.search("a photo", top_k=50, under=relative)) == 3  # normalised like index paths


def test_folder_filter_combines_with_tags(tmp_path, tiny_encoder, folders):
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(folders, workers=0, progress=False)
        library.classify("red, green", templates="simple", top_k=1, progress=False)
        for label in ("red", "green"):
            tagged = {h.path for h in library.search("a photo", top_k=50, filter_tags=label)}
            both = library.search("a photo", top_k=50, filter_tags=label, under=folders / "plain")
            assert {h.path for h in both} == {p for p in tagged if p.startswith(str(folders / "plain") + os.sep)}


def test_cli_search_in_a_folder_indexes_it_first(tmp_path, folders, capsys, images_factory):
    library = str(tmp_path / "cli-lib")
    common = ["--library", library, "--model", "test-vit-tiny", "--top-k", "50"]
    assert main(["search", "a photo", "--in", str(folders / "plain"), *common]) == 0
    out, err = capsys.readouterr()
    assert "indexed" in err and "added 3" in err
    assert sorted(Path(line.split()[-1]).parent.name for line in out.splitlines()) == ["plain"] * 3
    images_factory(folders / "plain", 4, seed=7, prefix="new")  # one more photo there
    assert main(["search", "a photo", "--in", str(folders / "plain"), "--no-index", *common]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and "indexed" not in err  # not indexed: still the three
    assert main(["search", "a photo", "--in", str(folders / "plain"), *common]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 7 and "added 4" in err and "skipped 3 unchanged" in err
    assert main(["search", "a photo", "--in", str(folders / "my_photos"), "--no-index", *common]) == 0
    assert capsys.readouterr() == ("", f"no results: no indexed photo in {folders / 'my_photos'} (without "
                                   "--no-index, search indexes the photos there first)\n")  # a notice: stderr
    assert main(["search", "a photo", "--in", str(folders / "nowhere"), *common]) == 2
    assert capsys.readouterr().err.strip() == f"error: --in {folders / 'nowhere'}: no such folder"
    assert main(["search", "a photo", "--library", str(tmp_path / "none"), "--model", "test-vit-tiny"]) == 2
    assert "search a folder directly: `clipforge search QUERY --in FOLDER`" in capsys.readouterr().err


def test_paths_output_is_the_files_one_per_line_as_the_file_system_names_them(tmp_path, folders, capsysbinary):
    """`--paths` prints the matching files and nothing else, best first, raw names (a pipe gets names that
    open: a Latin-1 `café.png`, not valid UTF-8, is printed as its bytes, not escaped)."""
    odd = os.fsdecode(b"caf\xe9.png")
    sorted((folders / "plain").iterdir())[0].rename(folders / "plain" / odd)
    common = ["--library", str(tmp_path / "lib"), "--model", "test-vit-tiny", "--in", str(folders / "plain")]
    assert main(["search", "a photo", "--top-k", "5", "--paths", *common]) == 0
    paths = capsysbinary.readouterr().out.splitlines()
    assert len(paths) == 3 and all(os.path.isfile(p) for p in paths)
    assert os.fsencode(str(folders / "plain" / odd)) in paths
    with Library(tmp_path / "lib") as library:  # the same files in the library's order
        ranked = [h.path for h in library.search("a photo", top_k=5, under=folders / "plain")]
    assert [os.fsdecode(p) for p in paths] == ranked
