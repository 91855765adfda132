"""A library folder moved, renamed or copied keeps its uploaded photos (audit 58, finding 1).

Uploads (`Library.add_bytes`, the REST upload) live in the library's own ``uploads/`` folder, but their records held
the absolute path under the folder's first name: after ``mv X Y`` originals and thumbnails failed ("No such file"),
`index prune` deleted every upload's record (vectors and tags too) although each file sat in ``Y/uploads/``, and a
re-upload answered with the dead record. Records of uploads recorded under another folder's ``uploads/`` now follow
the library: rewritten on open when this library's copy is there (every writer), and read so where the database
cannot be written. `index copy --to-library` copies the upload files into the destination's ``uploads/``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clipforge.cli.main import main
from clipforge.library import Library

PHOTOS = Path("/work/shared/data/imagenet_sample/images")


def _photos(count: int) -> list[tuple[str, bytes]]:
    if not PHOTOS.is_dir():
        pytest.skip(f"real photos {PHOTOS} are absent")
    names = sorted(os.listdir(PHOTOS))[:count]
    return [(name, (PHOTOS / name).read_bytes()) for name in names]


def _uploaded(root: Path, tiny_encoder, photos: list[tuple[str, bytes]]) -> list[int]:
    with Library(root, tiny_encoder) as library:
        return [library.add_bytes(data, name).id for name, data in photos]


def _check_moved(library, ids: list[int], photos: list[tuple[str, bytes]], root: Path) -> None:
    """Every upload read from the moved folder: its path, original, thumbnail and search hit."""
    for image_id, (name, data) in zip(ids, photos, strict=True):
        record = library.get_image(image_id)
        sha = hashlib.sha256(data).hexdigest()
        assert record.path == str(root / "uploads" / sha[:2] / sha / (Path(name).stem + ".jpg")), record.path
        assert library.image_bytes(image_id) == (data, "image/jpeg")
        with Image.open(io.BytesIO(library.thumbnail(image_id, 64))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) == 64
    hit = library.search(image=photos[0][1], top_k=1)[0]
    assert (hit.id, hit.score > 0.999) == (ids[0], True) and hit.path == library.get_image(ids[0]).path


@pytest.mark.parametrize("how", ["move", "copy"])
def test_uploads_follow_a_moved_or_copied_library_folder(tmp_path, tiny_encoder, how) -> None:
    photos = _photos(3)
    ids = _uploaded(tmp_path / "X", tiny_encoder, photos)
    if how == "move":
        (tmp_path / "X").rename(tmp_path / "Y")
    else:  # `cp -a X Y`: Y must own its copies, not lean on X's files
        shutil.copytree(tmp_path / "X", tmp_path / "Y", symlinks=True)
    with Library(tmp_path / "Y", create=False) as library:
        _check_moved(library, ids, photos, tmp_path / "Y")
        again = library.add_bytes(photos[1][1], photos[1][0])  # the same bytes uploaded again: the live record
        assert again.id == ids[1] and os.path.isfile(again.path) and again.path.startswith(str(tmp_path / "Y"))
        assert library.prune() == 0 and library.stats()["images"]["ok"] == 3
    if how == "copy":
        shutil.rmtree(tmp_path / "X")  # the copy is whole without the original folder
        with Library(tmp_path / "Y", create=False) as library:
            _check_moved(library, ids, photos, tmp_path / "Y")


def test_index_prune_of_a_moved_library_keeps_its_uploads(tmp_path, tiny_encoder, capsys) -> None:
    """The audit's commands: `index prune` deleted every upload of a moved library ("pruned 5 images")."""
    photos = _photos(2)
    ids = _uploaded(tmp_path / "X", tiny_encoder, photos)
    # a library written before uploads followed the folder
    with Library(tmp_path / "X", create=False) as library, library.store.transaction() as tx:
        tx.execute("DELETE FROM meta WHERE key = 'uploads_dir'")
    (tmp_path / "X").rename(tmp_path / "Y")
    capsys.readouterr()
    assert main(["index", "prune", "--library", str(tmp_path / "Y")]) == 0
    assert capsys.readouterr().out == "pruned 0 images whose files are gone\n"
    assert main(["index", "list", "--library", str(tmp_path / "Y")]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in listed] == ids
    assert all(line.split(maxsplit=1)[1].startswith(str(tmp_path / "Y" / "uploads")) for line in listed), listed
    # a file really gone is still pruned
    with Library(tmp_path / "Y", create=False) as library:
        os.unlink(library.get_image(ids[0]).path)
        assert library.prune() == 1 and [r.id for r in library.list_images()] == ids[1:]


def test_a_moved_library_that_cannot_be_written_reads_its_uploads(tmp_path, tiny_encoder, without_root_override):
    """Mounted read-only at another path (a container): nothing can be rewritten, the uploads are read from here."""
    photos = _photos(2)
    ids = _uploaded(tmp_path / "X", tiny_encoder, photos)
    (tmp_path / "X").rename(tmp_path / "Y")
    lib = tmp_path / "Y"
    modes = {p: p.stat().st_mode for p in [lib, *lib.rglob("*")]}
    for path in modes:
        path.chmod(path.stat().st_mode & ~0o222)
    script = (
        "import sys; from clipforge.library import Library\n"
        "lib = Library(sys.argv[1], create=False)\n"
        "for i in map(int, sys.argv[2:]):\n"
        "    r = lib.get_image(i); data, mime = lib.image_bytes(i); lib.thumbnail(i, 32)\n"
        "    print(r.path, len(data), mime)\n"
    )
    try:
        done = subprocess.run([*without_root_override, sys.executable, "-c", script, str(lib), *map(str, ids)],
                              capture_output=True, text=True, timeout=120)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    for line, (_, data) in zip(lines, photos, strict=True):
        path, size, mime = line.split()
        assert path.startswith(str(lib / "uploads")) and (int(size), mime) == (len(data), "image/jpeg")
    # read so, not written: the database still names the old folder (a writable open then rewrites it)
    with sqlite3.connect(lib / "library.sqlite3") as db:
        stored = [row[0] for row in db.execute("SELECT path FROM images ORDER BY id")]
    assert all(p.startswith(str(tmp_path / "X" / "uploads")) for p in stored), stored
    with Library(lib, create=False):
        pass
    with sqlite3.connect(lib / "library.sqlite3") as db:
        stored = [row[0] for row in db.execute("SELECT path FROM images ORDER BY id")]
    assert all(p.startswith(str(lib / "uploads")) for p in stored), stored


def test_index_copy_to_a_library_copies_the_upload_files(tmp_path, tiny_encoder, images_factory, capsys) -> None:
    """`index copy --to-library` copied the upload records but not their files (the README said "not copied"):
    the destination's uploads pointed into the source folder, dead once it was gone."""
    photos = _photos(2)
    ids = _uploaded(tmp_path / "X", tiny_encoder, photos)
    folder_photo = images_factory(tmp_path / "photos", 1, formats=("png",))[0]
    with Library(tmp_path / "X", create=False) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    capsys.readouterr()
    assert main(["index", "copy", "--library", str(tmp_path / "X"), "--to-library", str(tmp_path / "Z"), "-q"]) == 0
    assert capsys.readouterr().out.startswith("copied 1 model space (3 files, 0 failed records")
    shutil.rmtree(tmp_path / "X")
    with Library(tmp_path / "Z", create=False) as library:
        uploads = [r for r in library.list_images() if r.path != str(folder_photo)]
        assert len(uploads) == 2 and len(library.list_images()) == 3
        for record in uploads:
            assert record.path.startswith(str(tmp_path / "Z" / "uploads"))
            data, _ = library.image_bytes(record.id)
            assert hashlib.sha256(data).hexdigest() == record.sha256
        assert library.prune() == 0
    assert ids  # (the source's ids: the destination numbers its own records)


def test_a_milvus_librarys_moved_folder_keeps_its_uploads(tmp_path, tiny_encoder) -> None:
    """The Milvus store keeps the records, the `--library` folder the upload files: moved, it still serves them
    (originals, thumbnails, search, re-upload, prune), read from the folder's new `uploads/`."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from clipforge.library.milvus_library import MilvusLibrary

    photos = _photos(2)
    store = f"milvus-lite:{tmp_path}/m.db"
    with MilvusLibrary(store, tmp_path / "X", tiny_encoder) as library:
        ids = [library.add_bytes(data, name).id for name, data in photos]
    (tmp_path / "X").rename(tmp_path / "Y")
    with MilvusLibrary(store, tmp_path / "Y", create=False) as library:
        _check_moved(library, ids, photos, tmp_path / "Y")
        assert [r.path for r in library.store.images_with_sha(hashlib.sha256(photos[0][1]).hexdigest())] == [
            library.get_image(ids[0]).path]  # what the server's re-upload answers with
        assert library.prune() == 0 and library.stats()["images"]["ok"] == 2
        again = library.add_bytes(photos[1][1], photos[1][0])
        assert again.id == ids[1] and again.path == library.get_image(ids[1]).path and os.path.isfile(again.path)


def test_the_rest_api_of_a_moved_library_serves_its_uploads(tmp_path, tiny_encoder) -> None:
    """The audit's REST calls after `mv X Y`: originals and thumbnails were 404 `file_unavailable`, and a re-upload
    answered `created: false` with the record of the dead file."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.server import create_app

    photos = _photos(2)
    with Library(tmp_path / "X", tiny_encoder) as library, TestClient(create_app(library)) as client:
        ids = [client.post("/api/images", files={"file": (name, data, "image/jpeg")}).json()["image"]["id"]
               for name, data in photos]
    (tmp_path / "X").rename(tmp_path / "Y")
    with Library(tmp_path / "Y", tiny_encoder, create=False) as library, TestClient(create_app(library)) as client:
        for image_id, (_, data) in zip(ids, photos, strict=True):
            got = client.get(f"/api/images/{image_id}")
            assert (got.status_code, got.content) == (200, data)
            assert client.get(f"/api/images/{image_id}/thumb").status_code == 200
        again = client.post("/api/images", files={"file": (photos[0][0], photos[0][1], "image/jpeg")})
        assert again.status_code == 200 and again.json()["created"] is False
        assert again.json()["image"]["id"] == ids[0]
        assert client.get(again.json()["image"]["url"]).content == photos[0][1]
