"""Review of 2512c35 (the library CLI after audit 56) with real libraries: what the commit left wrong.

- `index list` read its pages by OFFSET: an `index remove` (another process) between two pages shifted the rows,
  and files that were never removed were never listed (200,000 rows, 3,000 removed during the listing: ids
  5001-8000 missing). Into a closed pipe (`index list | head -1`) it said `error: [Errno 32] Broken pipe`, exit 2.
- `index add --model M` with no path (README: "a second model's space: every known file ... says it is not the
  default") filled M's space and said nothing: the notice keyed on added/updated files, and a fill touches them.
- A library written before 2512c35 keeps its "no vector missing" marks, which that code's adds never voided: after
  upgrading, `index add DIR --model M` never filled M with the photos older plain adds had indexed.
- A library whose first add stored nothing before 2512c35 has a default model with no vector (audit finding 1's
  own case): `index add DIR --model M` still became a silent second space, and plain `search` said "no photo
  matched" beside the indexed photo.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from clipforge.cli.main import EXIT_BROKEN_PIPE, main
from clipforge.library.library import Library, record_model
from clipforge.library.store import Store

QUIET = ["--workers", "0", "-q"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _rows(root: Path, count: int) -> None:
    """`count` file records written through the store (a listing reads no vector and loads no model)."""
    library = Library(root, create=True)
    with library.store.transaction() as tx:
        for i in range(count):
            tx.upsert_image(f"/photos/{i:05d}.jpg", hashlib.sha256(str(i).encode()).hexdigest(), 100, 1, 8, 8, "ok",
                            None)
    library.store.close()


def test_index_list_lists_each_file_once_while_another_process_removes_some(tmp_path, capsys, monkeypatch) -> None:
    """After the first page (5000 rows) is printed, another process removes three files already listed: every
    other file must still be listed once (by OFFSET, the next page began 3 rows late: ids 5001-5003 never came)."""
    root, total = tmp_path / "lib", 5010
    _rows(root, total)
    db = Library(root, create=False).paths.db
    pages: list[int] = []

    def after_first_page(read):
        def wrapped(self, *args, **kwargs):
            records = read(self, *args, **kwargs)
            pages.append(len(records))
            if len(pages) == 1:
                other = Store(db, create=False)  # `index remove 1 2 3` elsewhere
                with other.transaction() as tx:
                    tx.delete_images([1, 2, 3])
                other.close()
            return records
        return wrapped

    for name in ("list_images", "images_after"):  # the page reader, whichever `index list` uses
        if hasattr(Store, name):
            monkeypatch.setattr(Store, name, after_first_page(getattr(Store, name)))
    code, out, err = _run(capsys, "index", "list", "--library", str(root))
    assert code == 0 and err == ""
    listed = [int(line.split()[0]) for line in out.splitlines()]
    assert len(pages) >= 2  # it did read by pages
    assert listed == list(range(1, total + 1))  # 1-3 printed before their removal; nothing after them skipped


def test_index_list_into_a_closed_pipe_ends_quietly(tmp_path, capsys, monkeypatch) -> None:
    """`clipforge index list | head -1`: the pipe closes, as it does for `search --paths | head -1` (exit 141, no
    error line); it was `error: [Errno 32] Broken pipe`, exit 2."""
    _rows(tmp_path / "lib", 3)

    class ClosedPipe(io.TextIOBase):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    code = main(["index", "list", "--library", str(tmp_path / "lib")])
    assert code == EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def test_filling_a_second_space_without_a_path_says_it_is_not_the_default(tmp_path, images_factory, capsys) -> None:
    photos = images_factory(tmp_path / "photos", 3, formats=("png",))
    lib = ["--library", str(tmp_path / "lib")]
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", *lib, *QUIET)[0] == 0
    code, out, err = _run(capsys, "index", "add", "--model", "test-rn-tiny", *lib, *QUIET)
    assert code == 0 and out.startswith("added 0 files, updated 0, relinked 0, skipped 3 unchanged, failed 0; "
                                        "embedded 3,"), out
    assert err == ("notice: filled model space test-rn-tiny with 3 images the library already held (indexed with "
                   "another model); it is not the library's default: plain `search` and `tag` use the default model "
                   "test-vit-tiny: pass `--model test-rn-tiny` to search or tag this space\n")
    for photo in photos:  # nothing left to fill, only files re-read (their time changed): no word
        os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    code, out, err = _run(capsys, "index", "add", "--model", "test-rn-tiny", *lib, *QUIET)
    assert code == 0 and out.startswith("added 0 files, updated 0, relinked 0, skipped 3 unchanged, failed 0; "
                                        "embedded 0,"), out
    assert err == ""


def test_a_check_mark_left_by_an_older_version_does_not_hide_photos_from_a_second_space(
        tmp_path, images_factory, capsys) -> None:
    """Before 2512c35 a plain add left the other spaces' marks ("no 'ok' image lacks its vector", meta
    `vectors_checked:<fingerprint>` = the removals count) in place. Such a mark, still there after an upgrade, must
    not be believed: the next `index add DIR --model M` fills M with the photos it does not hold."""
    images_factory(tmp_path / "photos", 2, formats=("png",))
    images_factory(tmp_path / "later", 2, seed=5, formats=("png",))
    images_factory(tmp_path / "other", 1, seed=9, formats=("png",))
    lib = ["--library", str(tmp_path / "lib")]
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", *lib, *QUIET)[0] == 0
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-rn-tiny", *lib, *QUIET)[0] == 0
    assert _run(capsys, "index", "add", str(tmp_path / "later"), *lib, *QUIET)[0] == 0  # the default space only
    library = Library(tmp_path / "lib", create=False)
    second = next(s for s in library.spaces() if s["name"] == "test-rn-tiny")
    with library.store.transaction() as tx:  # the mark as the older code wrote it and its plain add kept it
        tx.set_meta("vectors_checked:" + second["fingerprint"], str(library.store.removals()))
    library.store.close()

    code, _, err = _run(capsys, "index", "add", str(tmp_path / "other"), "--model", "test-rn-tiny", *lib, *QUIET)
    assert code == 0 and err.startswith("notice: filled model space test-rn-tiny with 2 images the library already "
                                        "held"), err
    stats = json.loads(_run(capsys, "index", "stats", "--json", *lib)[1])
    assert [(s["name"], s["images"]) for s in stats["spaces"]] == [("test-vit-tiny", 4), ("test-rn-tiny", 5)]


def test_an_older_library_whose_default_model_holds_no_vector_takes_the_first_vectors_model(
        tmp_path, images_factory, capsys) -> None:
    """Before 2512c35 every add recorded its model first: `index add EMPTY` left a default model and no vector. The
    first vectors decide the default model now, in such a library too: `index add DIR --model M` makes M the default
    (it was a second space, said nowhere, and plain `search` answered "no photo matched")."""
    photo = images_factory(tmp_path / "photos", 1, formats=("png",))[0]
    library = Library(tmp_path / "lib", model="test-vit-tiny")
    encoder = library.encoder  # what the older add recorded before looking at any file
    record_model(library.store, encoder.fingerprint, encoder.name or "", encoder.embed_dim, "float32")
    library.store.close()
    lib = ["--library", str(tmp_path / "lib")]

    code, _, err = _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-rn-tiny", *lib, *QUIET)
    assert code == 0 and err == ""
    found = json.loads(_run(capsys, "search", "a photo", *lib, "-k", "1", "--json")[1])
    assert [hit["path"] for hit in found["results"]] == [str(photo)]
    stats = json.loads(_run(capsys, "index", "stats", "--json", *lib)[1])
    assert stats["model"]["name"] == "test-rn-tiny"
    assert [(s["name"], s["images"], s["default"]) for s in stats["spaces"]] == [("test-rn-tiny", 1, True)]


@pytest.mark.parametrize("failed", [False, True])
def test_index_list_pages_a_large_library_once_each(tmp_path, capsys, failed) -> None:
    """5,010 rows (one page and a bit): each id once, in order; --failed: none of them."""
    _rows(tmp_path / "lib", 5010)
    code, out, err = _run(capsys, "index", "list", "--library", str(tmp_path / "lib"), *(["--failed"] if failed else []))
    assert code == 0 and err == ""
    assert [int(line.split()[0]) for line in out.splitlines()] == ([] if failed else list(range(1, 5011)))


def test_a_plain_add_with_a_smaller_pixel_limit_keeps_a_second_space_photo(tmp_path, images_factory, capsys) -> None:
    """A plain add now fills the default space with the photos `index add --model M` indexed. Its own smaller
    `--max-pixels` (here 1,000, below the photo's 48x40) marked such a photo failed, in every space (the row is
    shared): M's search lost it, and the notice still said the default space was "filled with 1 image". A fill
    reads what the library already holds: the pixels a run admitted are admitted again."""
    images_factory(tmp_path / "photos", 1, formats=("png",))
    photo = images_factory(tmp_path / "second", 1, seed=3, formats=("png",))[0]
    (tmp_path / "empty").mkdir()
    lib = ["--library", str(tmp_path / "lib")]
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", *lib, *QUIET)[0] == 0
    assert _run(capsys, "index", "add", str(tmp_path / "second"), "--model", "test-rn-tiny", *lib, *QUIET)[0] == 0
    code, out, err = _run(capsys, "index", "add", str(tmp_path / "empty"), "--max-pixels", "1000", *lib, "--workers",
                          "0")
    assert code == 0 and "failed 0" in out, out
    assert err.splitlines()[-1] == ("notice: filled model space test-vit-tiny with 1 image the library already held "
                                    "(indexed with another model)"), err
    assert _run(capsys, "index", "list", "--failed", *lib)[1] == ""
    for model in ("test-rn-tiny", "test-vit-tiny"):  # in both spaces now
        found = json.loads(_run(capsys, "search", "--image", str(photo), "--model", model, *lib, "-k", "1",
                                "--json")[1])
        assert [hit["path"] for hit in found["results"]] == [str(photo)]


def test_a_fill_counts_only_the_photos_it_filled(tmp_path, images_factory, capsys) -> None:
    """A photo of the second space broken on disk since: the plain add's fill fails it (`index list --failed` shows
    it) and says it filled nothing (it said "filled model space ... with 1 image")."""
    images_factory(tmp_path / "photos", 1, formats=("png",))
    photo = images_factory(tmp_path / "second", 1, seed=3, formats=("png",))[0]
    (tmp_path / "empty").mkdir()
    lib = ["--library", str(tmp_path / "lib")]
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "test-vit-tiny", *lib, *QUIET)[0] == 0
    assert _run(capsys, "index", "add", str(tmp_path / "second"), "--model", "test-rn-tiny", *lib, *QUIET)[0] == 0
    photo.write_bytes(b"no longer a picture\n")
    code, _, err = _run(capsys, "index", "add", str(tmp_path / "empty"), *lib, "--workers", "0")
    assert code == 0 and "filled" not in err and "re-embedded" not in err, err
    listed = _run(capsys, "index", "list", "--failed", *lib)[1]
    assert listed.split()[1] == str(photo) and "(failed: not an image" in listed
