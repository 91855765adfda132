"""`index stats` says what the next search does with the saved index (audit 62, finding 6).

A few photos added (fewer than 5% of the library) are appended to the index in memory by each search and never
saved, yet `index stats` said "stale (rebuilt on next search)" however many searches ran: nothing is rebuilt, and
the next search does not make it fresh. It now counts the vectors newer than the saved index and says whether the
next search saves them; "stale (rebuilt on next search)" is kept for what is rebuilt (photos removed).
"""

from __future__ import annotations

import json

from clipforge.cli.main import main
from clipforge.library import Library

IN_MEMORY = "(added in memory at each search; `index rebuild` saves it)"


def _index_line(capsys, lib: str) -> str:
    assert main(["index", "stats", "--library", lib]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("index ")]
    assert len(lines) == 1, lines
    return lines[0]


def _index_json(capsys, lib: str) -> dict:
    assert main(["index", "stats", "--library", lib, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["index"]


def _search(capsys, lib: str) -> None:
    assert main(["search", "a cat", "--library", lib, "-k", "3"]) == 0
    capsys.readouterr()


def _add(capsys, folder, lib: str) -> None:
    assert main(["index", "add", str(folder), "--library", lib, "--model", "test-vit-tiny", "--workers", "0",
                 "-q"]) == 0
    capsys.readouterr()


def test_stats_says_what_the_next_search_does_with_the_saved_index(tmp_path, images_factory, capsys):
    lib = str(tmp_path / "lib")
    images_factory(tmp_path / "photos", 21)
    _add(capsys, tmp_path / "photos", lib)
    _search(capsys, lib)
    assert _index_line(capsys, lib) == "index     flat fresh, recall@10 1.0"
    assert _index_json(capsys, lib)["newer_vectors"] == 0

    # One photo more (1 of 22, under the 5% a search saves at): every search adds it in memory, none saves it.
    images_factory(tmp_path / "one", 1, seed=101, prefix="one")
    _add(capsys, tmp_path / "one", lib)
    expected = f"index     flat 1 vector newer than the saved index {IN_MEMORY}, recall@10 1.0"
    assert _index_line(capsys, lib) == expected
    _search(capsys, lib)
    _search(capsys, lib)
    assert _index_line(capsys, lib) == expected  # still so after searches: it was "stale (rebuilt on next search)"
    status = _index_json(capsys, lib)
    assert (status["fresh"], status["newer_vectors"], status["next_search"]) == (False, 1, "extend_in_memory")

    # Two more (3 of 24), added without touching the index (`index add` would extend it and save at this size, as a
    # search does): the next search adds and saves them, and then the index is fresh.
    images_factory(tmp_path / "two", 2, seed=102, prefix="two")
    with Library(lib) as library:
        library.add(tmp_path / "two", workers=0, progress=False, update_index=False)
    assert _index_line(capsys, lib) == (
        "index     flat 3 vectors newer than the saved index (added and saved by the next search), recall@10 1.0")
    assert _index_json(capsys, lib)["next_search"] == "extend_and_save"
    _search(capsys, lib)
    assert _index_line(capsys, lib) == "index     flat fresh, recall@10 1.0"

    # `index rebuild` saves what searches only added in memory.
    images_factory(tmp_path / "three", 1, seed=103, prefix="three")
    _add(capsys, tmp_path / "three", lib)
    assert _index_line(capsys, lib).startswith("index     flat 1 vector newer than the saved index (added in memory")
    assert main(["index", "rebuild", "--library", lib]) == 0
    capsys.readouterr()
    assert _index_line(capsys, lib) == "index     flat fresh, recall@10 1.0"

    # A photo removed: the saved index holds a vector the library no longer has, so the next search rebuilds it.
    assert main(["index", "remove", str(tmp_path / "three"), "--library", lib]) == 0
    capsys.readouterr()
    assert _index_line(capsys, lib) == "index     flat stale (rebuilt on next search), recall@10 1.0"
    status = _index_json(capsys, lib)
    assert (status["newer_vectors"], status["next_search"]) == (0, "rebuild")
    _search(capsys, lib)
    assert _index_line(capsys, lib) == "index     flat fresh, recall@10 1.0"
    assert _index_json(capsys, lib)["next_search"] == "none"


def test_stats_of_a_library_whose_index_was_never_saved(tmp_path, images_factory, capsys):
    lib = str(tmp_path / "lib")
    images_factory(tmp_path / "photos", 3)
    _add(capsys, tmp_path / "photos", lib)
    for path in (tmp_path / "lib" / "index").glob("*.faiss"):  # the index file `index add` saved is gone
        path.unlink()
    line = _index_line(capsys, lib)
    assert line.startswith("index     flat not built yet"), line
    status = _index_json(capsys, lib)
    assert (status["exists"], status["newer_vectors"], status["next_search"]) == (False, 0, "build")
