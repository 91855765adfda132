"""A photo collection as people keep one, indexed and searched (session 53's walk-through).

Symlinked folders (one to another disk, a loop, a second name for a walked folder), a dangling link,
deleted photos, names holding a newline, and a folder search over more photos than one SQLite statement
takes: each case is a surprise the walk-through met, pinned here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from clipforge.cli.main import main, report_error
from clipforge.library import Library
from clipforge.library.query import QueryError, parse_query
from clipforge.library.scan import discover_files
from clipforge.library.store import Store


def _store_with(path: Path, images: int, shared: tuple[int, int] | None = None) -> Store:
    """A store of `images` 'ok' rows with 4-d vectors, each its own content except `shared` (two ids, one bytes)."""
    store = Store(path)
    with store.transaction() as tx:
        tx.ensure_model("m", "m", 4)
        for i in range(1, images + 1):
            sha = f"sha{shared[0]}" if shared and i == shared[1] else f"sha{i}"
            tx.insert_embedding(sha, "m", np.full(4, 0.5, np.float32))
            tx.upsert_image(f"/p/{i:05d}.jpg", sha, 10, 1, 4, 4, "ok", None)
    return store


def test_a_folder_search_lists_one_content_once_across_statement_chunks(tmp_path):
    """Ids are read 900 to a statement: the same bytes under image 1 and image 950 came back twice (two
    identical hits for one photo in `search --in` a folder of more than 900 photos)."""
    store = _store_with(tmp_path / "a.sqlite3", 950, shared=(1, 950))
    ids, vectors = store.vectors_for_image_ids("m", list(range(1, 951)))
    assert len(ids) == len(set(ids.tolist())) == 949 and vectors.shape == (949, 4)


def test_a_filtered_search_reads_only_the_photos_it_is_given(tmp_path):
    """For a long list of ids SQLite chose to walk every vector of the model (once per chunk of 900 ids:
    `search --in` a 10,000-photo folder took 34 s, 3 s now): the work for 900 photos must not grow with
    the library around them (counted in SQLite VM steps, not time)."""

    def steps(store: Store) -> int:
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        store.conn().set_progress_handler(tick, 100)
        store.vectors_for_image_ids("m", list(range(1, 901)))
        store.conn().set_progress_handler(None, 0)
        return count[0]

    small, large = _store_with(tmp_path / "s.sqlite3", 1000), _store_with(tmp_path / "l.sqlite3", 4000)
    assert steps(large) <= steps(small) * 1.1


def test_symlinked_folders_outside_the_tree_are_followed_loops_and_aliases_are_not(tmp_path, images_factory):
    photos, phone = tmp_path / "photos", tmp_path / "phone"
    images_factory(photos / "2020", 2, seed=1)
    images_factory(phone / "camera", 2, seed=2, prefix="cam")
    (photos / "phone").symlink_to(phone)  # Pictures/phone -> /media/phone: os.walk skipped it without a word
    (photos / "2020" / "loop").symlink_to(photos)  # a loop
    (photos / "again").symlink_to(photos / "2020")  # a second name for a folder walked anyway
    (phone / "camera" / "back").symlink_to(phone)  # a loop inside the followed tree
    found = [os.path.relpath(p, photos) for p in discover_files([photos], recursive=True)]
    assert found == [
        "2020/img000.png",
        "2020/img001.jpg",
        "phone/camera/cam000.png",
        "phone/camera/cam001.jpg",
    ]


def test_a_dangling_link_fails_once_and_deleted_photos_are_counted(tmp_path, tiny_encoder, images_factory):
    photos = images_factory(tmp_path / "photos", 3)
    (tmp_path / "photos" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with Library(tmp_path / "lib", tiny_encoder) as library:
        first = library.add(tmp_path / "photos", workers=0, progress=False)
        assert (first.added, first.failed, first.gone) == (3, 1, 0)
        photos[1].unlink()
        again = library.add(tmp_path / "photos", workers=0, progress=False)
    # the link is a failure already recorded, unchanged: it was failed anew on every run (and every `search --in`)
    assert (again.unchanged, again.failed, again.gone) == (3, 0, 1)
    assert again.summary_line().endswith(
        "; 1 indexed photo in these folders is gone from disk (`clipforge index prune` forgets them)"
    )
    assert again.to_dict()["gone"] == 1


def test_names_holding_a_newline_stay_whole_in_every_output(tmp_path, images_factory, capsysbinary):
    (photo,) = images_factory(tmp_path / "photos", 1, prefix="a\nb", formats=("png",))
    (tmp_path / "photos" / "bad\nname.jpg").write_bytes(b"")
    lib = ["--library", str(tmp_path / "lib")]
    assert (
        main(
            [
                "index",
                "add",
                str(tmp_path / "photos"),
                *lib,
                "--model",
                "test-vit-tiny",
                "--workers",
                "0",
                "-q",
            ]
        )
        == 0
    )
    capsysbinary.readouterr()
    query = ["search", "--image", str(photo), "-k", "1", *lib]
    assert main([*query, "--paths", "--null"]) == 0
    assert capsysbinary.readouterr().out == os.fsencode(str(photo)) + b"\0"  # for `xargs -0`
    assert main([*query, "--paths"]) == 0
    out, err = capsysbinary.readouterr()
    assert out == os.fsencode(str(photo)) + b"\n"
    assert err.decode() == (
        "notice: 1 of these names holds a newline, which splits it in a line-based pipe: "
        "add --null and read them with `xargs -0`\n"
    )
    assert main(query) == 0
    row = capsysbinary.readouterr().out.decode()
    assert row.count("\n") == 1 and row.endswith(f"  {tmp_path}/photos/a\\nb000.png\n")
    assert main(["index", "stats", *lib]) == 0  # each failure one line too
    assert (
        f"  failed: {tmp_path}/photos/bad\\nname.jpg: file is empty (0 bytes)\n"
        in capsysbinary.readouterr().out.decode()
    )
    assert main(["search", "cat", "--null", *lib]) == 2
    assert (
        capsysbinary.readouterr().err.decode()
        == "error: --null changes how --paths ends each name: give --paths too\n"
    )
    # moved into a folder searched with --in: relinked by content first, and said (relinks alone said nothing)
    (tmp_path / "photos" / "sorted").mkdir()
    moved = photo.rename(tmp_path / "photos" / "sorted" / "kept.png")
    assert main(["search", "x", "--in", str(moved.parent), "--paths", *lib]) == 0
    out, err = capsysbinary.readouterr()
    assert out == os.fsencode(str(moved)) + b"\n"
    assert "relinked 1, skipped 0 unchanged, failed 0; embedded 0, duplicates 0 in " in err.decode()


def test_a_query_error_is_one_line_that_quotes_where(capsys):
    """The caret drawn under the query on two more lines reached the terminal joined into one
    (`... '2:"cat" +' 2:"cat" + ^`): the line `clipforge search` prints is checked, through its one error edge."""
    for query, line in [
        ('2:"cat" +', "expected a term after the operator at position 9 in query '2:\"cat\" +' (at its end)"),
        (
            '"cat" "dog"',
            'expected + or - between terms at position 6 in query \'"cat" "dog"\' (at \'"dog"\'): put + or - '
            'between terms, or search it all as one text with text:"..." (a photo: image:"..." or --image)',
        ),
    ]:
        with pytest.raises(QueryError) as error:
            parse_query(query)
        assert report_error(error.value) == 2
        assert capsys.readouterr().err == f"error: {line}\n"


def test_a_deleted_photo_with_a_copy_on_disk_is_found_under_the_copy(tmp_path, tiny_encoder, images_factory):
    """The hit stood for the lowest id's file: that one deleted, the photo was listed as missing (and piped
    to `--paths` users as a name that does not open) although its copy was right there."""
    (first,) = images_factory(tmp_path / "photos", 1, formats=("png",))
    copy = tmp_path / "photos" / "z copy.png"  # indexed after the original: a higher id
    copy.write_bytes(first.read_bytes())
    with Library(tmp_path / "lib", tiny_encoder) as library:
        assert library.add(tmp_path / "photos", workers=0, progress=False).duplicates == 1
        first.unlink()
        (hit,) = library.search(image=str(copy), top_k=1)
    assert (hit.path, hit.duplicates) == (str(copy), [str(first)])
