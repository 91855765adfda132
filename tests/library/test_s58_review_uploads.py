"""Review of the moved-library uploads (stop 49): what opening a library may cost, and what is an upload.

* Every open of a moved (or upgraded) library rewrote its upload records in a write transaction: a `search` beside
  an `index add` waited out SQLite's 60 s busy timeout, then crashed on "database is locked". The rewrite on open
  never waits now (reads find the uploads without it); a prune still makes it.
* A library reached by two paths (a bind mount) rewrote its records back and forth at each open.
* A user's own photo in a folder shaped like `uploads/<ab>/<sha>/` was served from the library's `uploads/`, and its
  record was never pruned.
* `index copy --to-library` from a moved library that could not be rewritten copied no upload file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.library import Library

PHOTOS = Path("/work/shared/data/imagenet_sample/images")


def _photo() -> tuple[str, bytes]:
    if not PHOTOS.is_dir():
        pytest.skip(f"real photos {PHOTOS} are absent")
    name = sorted(os.listdir(PHOTOS))[0]
    return name, (PHOTOS / name).read_bytes()


def _moved(tmp_path: Path, tiny_encoder) -> tuple[Path, int, bytes]:
    name, data = _photo()
    with Library(tmp_path / "X", tiny_encoder) as library:
        image_id = library.add_bytes(data, name).id
    (tmp_path / "X").rename(tmp_path / "Y")
    return tmp_path / "Y", image_id, data


def test_opening_a_moved_library_beside_a_writer_does_not_wait(tmp_path, tiny_encoder):
    """Before: the open waited 60 s for the writer, then raised sqlite3.OperationalError("database is locked")."""
    root, image_id, data = _moved(tmp_path, tiny_encoder)
    writer = sqlite3.connect(root / "library.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process's `index add` in the middle of a batch
    try:
        begun = time.monotonic()
        with Library(root, create=False) as library:
            opened = time.monotonic() - begun
            assert library.image_bytes(image_id)[0] == data  # read from Y/uploads without the rewrite
            assert library.get_image(image_id).path.startswith(str(root / "uploads"))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert opened < 30, opened  # (a bound, not a timing: the wait it replaces was SQLite's 60 s busy timeout)
    with Library(root, create=False) as library:  # the writer gone, the next open makes the rewrite
        stored = library.store.conn().execute("SELECT path FROM images WHERE id = ?", (image_id,)).fetchone()[0]
    assert str(stored).startswith(str(root / "uploads"))


def test_a_library_reached_by_two_paths_is_not_rewritten_at_each_open(tmp_path, tiny_encoder):
    """A guard (a symlink; the reviewer's bind mount needs privileges a test does not have): the folder recorded is
    compared as a directory (`os.path.samefile`), not as a name."""
    root, _, _ = _moved(tmp_path, tiny_encoder)
    with Library(root, create=False):
        pass
    (tmp_path / "link").symlink_to(root)
    with Library(tmp_path / "link", create=False) as library:
        assert library.store.get_meta("uploads_dir") == os.path.normpath(str(root / "uploads"))


def test_a_users_own_photo_shaped_like_an_upload_is_that_photo(tmp_path, tiny_encoder):
    """Before: listed and served as the library's `uploads/` copy; deleted, `index prune` kept its record."""
    name, data = _photo()
    sha = hashlib.sha256(data).hexdigest()
    with Library(tmp_path / "Z", tiny_encoder) as library:
        uploaded = library.add_bytes(data, name)
        own = tmp_path / "mine" / "uploads" / sha[:2] / sha / (Path(name).stem + ".jpg")  # the upload's very name
        own.parent.mkdir(parents=True)
        own.write_bytes(data)
        library.add(tmp_path / "mine", workers=0, progress=False)
        record = next(r for r in library.list_images() if r.id != uploaded.id)
        assert record.path == str(own)
        own.unlink()
        assert library.prune() == 1
        assert [r.id for r in library.list_images()] == [uploaded.id]


def test_index_copy_from_a_moved_library_not_rewritten_copies_its_uploads(tmp_path, tiny_encoder, capsys):
    """Before: "copied ... files", no `uploads/` in the copy, and the copy's records named the dead old folder, when
    the source's records had not been rewritten (read-only, or another process writing at its open)."""
    root, _, data = _moved(tmp_path, tiny_encoder)
    writer = sqlite3.connect(root / "library.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the source's open cannot rewrite its records now
    try:
        assert main(["index", "copy", "--library", str(root), "--to-library", str(tmp_path / "C"), "-q"]) == 0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    shutil.rmtree(root)
    with Library(tmp_path / "C", create=False) as library:
        (record,) = library.list_images()
        assert record.path.startswith(str(tmp_path / "C" / "uploads"))
        assert library.image_bytes(record.id)[0] == data
