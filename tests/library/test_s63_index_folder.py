"""A library whose `index/` is a file, not a folder (audit 63 filesystem #9).

The index folder is made where the index is saved (`atomic_path`'s mkdir), and its refusal was said as the OS's
"File exists", which names no culprit. Now `index rebuild` says which path is a file where a folder is expected (exit
2, one line, the file left as it was), and a search or an add that saves the index on the way warns in the same words.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.library import Library

_KEPT = "the index was not saved (searches still work meanwhile, each building it in memory)"


def _library(tmp_path: Path, images_factory, encoder) -> Path:
    """A library of 4 photos whose index folder is gone (a rebuild, or a search, has an index to save)."""
    images_factory(tmp_path / "photos", 4)
    with Library(tmp_path / "lib", encoder) as library:
        library.add([tmp_path / "photos"], workers=0, progress=False)
    for path in (tmp_path / "lib" / "index").glob("*"):
        path.unlink()
    (tmp_path / "lib" / "index").rmdir()
    return tmp_path / "lib"


@pytest.mark.parametrize("how", ["file", "link to a file"])
def test_index_rebuild_says_the_index_folder_is_a_file(tmp_path, images_factory, tiny_encoder, capsys, how) -> None:
    library = _library(tmp_path, images_factory, tiny_encoder)
    if how == "file":
        (library / "index").write_bytes(b"x\n")
    else:
        (tmp_path / "notes.txt").write_bytes(b"x\n")
        (library / "index").symlink_to(tmp_path / "notes.txt")
    assert main(["index", "rebuild", "--library", str(library)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: could not write the index {library}/index/"), err
    assert err[0].endswith(f".faiss: {library}/index is a file where a folder is expected; {_KEPT}: move that file "
                           "aside and run `clipforge index rebuild` again"), err  # was "the write failed (File exists)"
    assert captured.out == ""
    assert (library / "index").read_bytes() == b"x\n"  # nothing lost
    (library / "index").unlink()
    assert main(["index", "rebuild", "--library", str(library)]) == 0  # the folder made again, the index saved
    assert [p.suffix for p in (library / "index").iterdir()] == [".faiss"]


def test_a_search_warns_in_the_same_words_and_answers(tmp_path, images_factory, tiny_encoder, caplog) -> None:
    library = _library(tmp_path, images_factory, tiny_encoder)
    (library / "index").write_bytes(b"")
    with Library(library, tiny_encoder) as opened, caplog.at_level(logging.WARNING):
        hits = opened.search("a photo", top_k=2)
    assert len(hits) == 2
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith(f"could not save index {library}/index/"), warned
    assert warned[0].endswith(f".faiss ({library}/index is a file where a folder is expected); keeping it in memory "
                              "only"), warned  # was "(File exists)"


def test_an_index_folder_that_is_a_fifo_is_named_as_one(tmp_path, images_factory, tiny_encoder, capsys) -> None:
    """Named as `special_kind` names it everywhere else (review 63: "a special file")."""
    import os

    library = _library(tmp_path, images_factory, tiny_encoder)
    os.mkfifo(library / "index")
    assert main(["index", "rebuild", "--library", str(library)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f".faiss: {library}/index is a FIFO where a folder is expected; {_KEPT}: "
                                             "move that special file aside and run `clipforge index rebuild` "
                                             "again"), err
