"""The photo library's CLI as a fresh user met it (audit 56, findings 1, 2, 8, 10 and 14).

1. `index add 照片 --model clipforge-tiny-zh` on a clipforge-tiny library said "warning: re-embedded 79 images whose
   vectors were missing" and went on silently: plain `search`/`tag` read clipforge-tiny's space, which the new
   photo was not in; the language notice did not name the library's zh space; `index stats` counted the default
   space's vectors as the "distinct by content" files (80 where 81 existed) and said no image lacked a vector (the
   check was not voided by the other model's add, so the next plain add never embedded the new photo either); an
   add that stored nothing (an empty folder) fixed the library's default model.
2. A bare word naming an extension-less file here (`cat`, a copy of a photo) was an image search, silently, with
   `--json` reporting `"images": []`; beside a text file `sunset`, `search sunset` failed "not an image".
8. `search --image FILE` hid FILE's identical copies (one vector, one result) in the text and --paths outputs.
10. `search '“cat'` (a curly quote never closed) was searched as text; `search '"cat'` is an unterminated quote.
14. `index remove 99999` pointed to `index stats`, which shows no ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.library.query import QueryError, parse_query

QUIET = ["--workers", "0", "-q"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_add_into_a_second_model_space_says_so_and_plain_adds_fill_the_default(tmp_path, images_factory,
                                                                                 capsys) -> None:
    """Finding 1, end to end with the two shipped tiny models."""
    photos = images_factory(tmp_path / "photos", 4, formats=("png",))
    (tmp_path / "照片").mkdir()
    shutil.copy(photos[0], tmp_path / "照片" / "丁鲷.png")  # the same bytes as a photo already indexed
    images_factory(tmp_path / "照片" / "海边", 1, seed=7, formats=("png",))  # new bytes
    lib = ["--library", str(tmp_path / "lib")]
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "clipforge-tiny", *lib, *QUIET)[0] == 0
    code, out, err = _run(capsys, "index", "add", str(tmp_path / "照片"), "--model", "clipforge-tiny-zh", *lib, *QUIET)
    assert code == 0 and out.startswith("added 2 files,"), out
    assert err == ("notice: filled model space clipforge-tiny-zh with 3 images the library already held (indexed with "
                   "another model); it is not the library's default: plain `search` and `tag` use the default model "
                   "clipforge-tiny: pass `--model clipforge-tiny-zh` to search or tag this space\n")
    # A later add into that space with nothing left to fill still says where its photos went.
    images_factory(tmp_path / "more", 1, seed=9, formats=("png",))
    code, _, err = _run(capsys, "index", "add", str(tmp_path / "more"), "--model", "clipforge-tiny-zh", *lib, *QUIET)
    assert code == 0 and err == (
        "notice: indexed into model space clipforge-tiny-zh; it is not the library's default: plain `search` and "
        "`tag` use the default model clipforge-tiny: pass `--model clipforge-tiny-zh` to search or tag this space\n")

    code, _, err = _run(capsys, "search", "一条鱼", *lib, "-k", "1")
    assert code == 0
    assert err.splitlines()[0].startswith("notice: the query '一条鱼' is written in zh but model clipforge-tiny")
    assert err.splitlines()[1:] == [
        "notice: this library has a model space of clipforge-tiny-zh, which reads zh: add `--model clipforge-tiny-zh`"]
    assert _run(capsys, "search", "一条鱼", *lib, "-k", "1", "--model", "clipforge-tiny-zh")[2] == ""

    # 7 files, 6 contents (丁鲷.png = photos[0]); the default space lacks the 2 photos added with the zh model only.
    code, out, _ = _run(capsys, "index", "stats", *lib)
    assert "images    7 indexed, 0 failed, 6 distinct by content\n" in out
    assert ("vectors   2 indexed images have no vector (it cannot be found by search): run `clipforge index add` "
            "(any path) to embed them\n") in out
    assert "space     clipforge-tiny fingerprint" in out and " 4 vectors (default)\n" in out
    code, _, err = _run(capsys, "index", "add", str(tmp_path / "photos"), *lib, *QUIET)
    assert code == 0 and err == ("notice: filled model space clipforge-tiny with 2 images the library already held "
                                 "(indexed with another model)\n")
    stats = json.loads(_run(capsys, "index", "stats", "--json", *lib)[1])
    assert stats["missing_vectors"] == 0 and stats["distinct_contents"] == 6
    assert [(s["name"], s["images"], s["default"]) for s in stats["spaces"]] == [
        ("clipforge-tiny", 6, True), ("clipforge-tiny-zh", 6, False)]


def test_a_lost_vector_is_still_a_warning_and_the_api_hears_a_fill(tmp_path, images_factory, tiny_encoder) -> None:
    """A vector no model has (lost to a writer that bypassed the lock) keeps the old warning; a space given the
    photos of another is a `FilledSpaceNotice` and `last_filled`, for programs using the library."""
    from clipforge.library import Library
    from clipforge.library.library_writes import FilledSpaceNotice

    images_factory(tmp_path / "photos", 3, formats=("png",))
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        lost = library.list_images(limit=1)[0]
        with library.store.transaction() as tx:
            tx.execute("DELETE FROM embeddings WHERE sha256 = ?", (lost.sha256,))
            tx.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'removals'")
        images_factory(tmp_path / "other", 1, seed=5, formats=("png",))
        with pytest.warns(UserWarning) as caught:  # any add repairs it: here one of another folder
            library.add(tmp_path / "other", workers=0, progress=False)
        assert [(type(w.message), str(w.message)) for w in caught] == [
            (UserWarning, "re-embedded 1 image whose vector was missing")]
        assert library.last_filled == 0
    with Library(tmp_path / "lib", "test-rn-tiny", new_space=True) as library, pytest.warns(FilledSpaceNotice) as got:
        images_factory(tmp_path / "one", 1, seed=3, formats=("png",))
        library.add(tmp_path / "one", workers=0, progress=False)
    assert library.last_filled == 4
    assert [str(w.message) for w in got] == [
        "filled model space test-rn-tiny with 4 images the library already held (indexed with another model)"]


@pytest.mark.parametrize("first", ["empty", "bad"])
def test_an_add_that_stores_no_vector_does_not_choose_the_default_model(tmp_path, images_factory, capsys,
                                                                        first) -> None:
    """`index add EMPTY` (or a folder of broken files) made the shipped default the library's model; the next
    `index add photos --model M` then built a second space beside an empty default one."""
    (tmp_path / "first").mkdir()
    if first == "bad":
        (tmp_path / "first" / "broken.jpg").write_text("not an image\n")
    images_factory(tmp_path / "photos", 2, formats=("png",))
    lib = ["--library", str(tmp_path / "lib")]
    # a folder of broken files only: every file it tried failed, status 2 since audit 66 (as embed and classify)
    assert _run(capsys, "index", "add", str(tmp_path / "first"), "--model", "test-vit-tiny", *lib,
                *QUIET)[0] == (2 if first == "bad" else 0)
    code, _, err = _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-rn-tiny", *lib, *QUIET)
    assert code == 0 and "not the library's default" not in err, err
    stats = json.loads(_run(capsys, "index", "stats", "--json", *lib)[1])
    assert [(s["name"], s["images"], s["default"]) for s in stats["spaces"]] == [("test-rn-tiny", 2, True)]
    assert stats["model"]["name"] == "test-rn-tiny"
    assert stats["images"] == {"ok": 2, "failed": 1 if first == "bad" else 0}


@pytest.fixture()
def photo_library(tmp_path, images_factory, capsys, monkeypatch) -> tuple[list[str], list[Path]]:
    """A library of 4 photos and one identical copy (`zz_copy.png`), searched from a folder holding a copy of a photo
    named `cat` and a text file named `sunset` (the working directory)."""
    photos = images_factory(tmp_path / "photos", 4, formats=("png",))
    shutil.copy(photos[1], tmp_path / "photos" / "zz_copy.png")
    lib = ["--library", str(tmp_path / "lib"), "--model", "test-vit-tiny"]
    assert main(["index", "add", str(tmp_path / "photos"), *lib, *QUIET]) == 0
    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(photos[2], here / "cat")
    (here / "sunset").write_text("a text file\n")
    monkeypatch.chdir(here)
    capsys.readouterr()
    return lib, photos


def test_a_bare_word_is_text_even_beside_a_file_of_that_name(photo_library, capsys) -> None:
    lib, photos = photo_library
    code, out, err = _run(capsys, "search", "cat", *lib, "-k", "1", "--json")
    plain = json.loads(out)
    assert code == 0 and plain["images"] == [] and plain["query"] == "cat"
    assert err == "notice: 'cat' was searched as text, though a file of that name is here: `image:cat` searches by " \
                  "that file\n"
    forced = json.loads(_run(capsys, "search", "text:cat", *lib, "-k", "1", "--json")[1])
    assert forced["results"] == plain["results"]  # the very text search
    assert _run(capsys, "search", "sunset", *lib, "-k", "1")[0] == 0  # was: error: sunset: not an image
    for query in ("./cat", "image:cat"):  # a path, or the prefix: the file's own photo first, at 1.0
        code, out, _ = _run(capsys, "search", query, *lib, "-k", "1", "--json")
        found = json.loads(out)
        assert code == 0 and found["images"] == [query.removeprefix("image:")], found
        assert found["results"][0]["path"] == str(photos[2]) and found["results"][0]["score"] == pytest.approx(1, abs=1e-5)
    assert [(t.kind, t.value) for t in parse_query("cat + 2:photo.png")] == [("text", "cat"), ("image", "photo.png")]
    from clipforge.cli.main import build_parser  # `--help` exits: the parser's own help text

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["search"]
    help_text = " ".join(sub.format_help().split())
    assert "image:FILE (image:cat, image:\"my photo.png\") searches by that file, text:WORDS" in help_text


def test_identical_copies_of_a_result_are_said_in_text_and_paths_output(photo_library, capsys) -> None:
    lib, photos = photo_library
    copy = photos[1].parent / "zz_copy.png"
    code, out, err = _run(capsys, "search", "--image", str(copy), *lib, "-k", "1")
    assert code == 0 and err == ""
    assert out == f"  1  1.0000  {photos[1]}  (+1 identical: {copy})\n"
    code, out, err = _run(capsys, "search", "--image", str(copy), *lib, "-k", "1", "--paths")
    assert code == 0 and out == f"{photos[1]}\n"
    assert err == (f"notice: 1 identical copy of these photos is not listed, one name per content ({copy}); --json "
                   "lists each result's `duplicates`\n")
    assert json.loads(_run(capsys, "search", "--image", str(copy), *lib, "-k", "1", "--json")[1])["results"][0][
        "duplicates"] == [str(copy)]


OPEN_QUOTES = ["“cat", "「猫", "『猫", "＂cat", '"cat" + “dog']  # not ‘cat: what smart punctuation types for 'tis (s63)


@pytest.mark.parametrize("query", OPEN_QUOTES)
def test_an_open_curly_quote_never_closed_is_an_unterminated_quote(query) -> None:
    with pytest.raises(QueryError, match="^unterminated quote at position "):
        parse_query(query, lambda _: False)


def test_search_refuses_an_open_curly_quote_in_one_line_as_an_ascii_one(photo_library, capsys) -> None:
    lib, _ = photo_library
    for query in ['"cat', *OPEN_QUOTES]:
        code, out, err = _run(capsys, "search", query, *lib)
        assert (code, out, err.count("\n")) == (2, "", 1) and "error: unterminated quote at position" in err, err


def test_closed_or_inner_curly_quotes_stay_as_they_were() -> None:
    def texts(query: str) -> list[str]:
        return [t.value for t in parse_query(query, lambda _: False)]

    assert texts("“猫” - “草地”") == ["猫", "草地"]
    assert texts("一只叫“咪咪”的猫") == ["一只叫“咪咪”的猫"]
    assert texts("“Starry Night” painting") == ["“Starry Night” painting"]
    assert texts("“猫 - 狗") == ["“猫", "狗"]  # left open before an operator: text (tests/chinese pins it)


def test_remove_of_an_unknown_id_points_to_the_listing_that_shows_ids(photo_library, capsys) -> None:
    lib, photos = photo_library
    lib = lib[:2]  # remove and list take no --model
    code, _, err = _run(capsys, "index", "remove", "99999", *lib)
    assert code == 2
    assert err.endswith("has no image with id 99999 (nothing removed; `clipforge index list` shows each file's id)\n")
    code, out, _ = _run(capsys, "index", "list", *lib)
    listed = [line.split(None, 1) for line in out.splitlines()]
    assert code == 0 and sorted(path for _, path in listed) == sorted(map(str, [*photos, photos[1].parent / "zz_copy.png"]))
    ident = next(i for i, path in listed if path == str(photos[3]))
    assert _run(capsys, "index", "remove", ident, *lib)[1] == "removed 1 image\n"
    assert str(photos[3]) not in _run(capsys, "index", "list", *lib)[1]
