"""A damaged library is never served as healthy (issue 9, item 13).

Overwritten bytes in the FAISS file, a truncated or overwritten database, an emptied one:
each is either repaired from the source of truth (the index is derived, so it is rebuilt) or
reported in one sentence naming the file - and then nothing else in the library is touched.
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import pytest

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.dbfile import DamagedLibraryError


@pytest.fixture()
def built(tmp_path, tiny_encoder, images_factory):
    """A closed library of 8 images whose index has been saved; returns (folder, photos)."""
    photos = images_factory(tmp_path / "photos", 8)
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    library.search("a photo")
    library.thumbnail(library.list_images()[0].id, size=32)
    assert library.index_manager.index_path.is_file()
    library.close()
    return tmp_path / "lib", photos


def _poison_vector(library: Library, keep_mtime: bool) -> None:
    """Overwrite one stored vector inside the index file with 0x7e7e7e7e (8.4e37) floats."""
    path = library.index_manager.index_path
    data = path.read_bytes()
    some = library.store.list_images()[3]
    vector = library.store.vectors_for_shas(library.encoder.fingerprint, [some.sha256])[some.sha256]
    at = data.find(vector.astype(np.float32).tobytes())
    assert at > 0, "the flat index stores the vectors verbatim"
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"\x7e" * vector.nbytes)
    if keep_mtime:  # the cheap size/mtime check cannot see this; only the checksum can
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("keep_mtime", [True, False])
def test_overwritten_index_bytes_mean_rebuild_not_wrong_hits(built, tiny_encoder, keep_mtime, capsys):
    lib, photos = built
    with Library(lib, tiny_encoder) as library:
        _poison_vector(library, keep_mtime)
    library = Library(lib, tiny_encoder)
    assert library.stats()["index"]["fresh"] is keep_mtime  # mtime moved: reported as changed at once
    if not keep_mtime:
        assert main(["index", "stats", "--library", str(lib)]) == 0
        assert "index     flat file changed since it was saved (checked, and rebuilt if damaged, on next search)" \
            in capsys.readouterr().out
    for photo in photos[:4]:
        hits = library.search(image=photo, top_k=8)
        assert hits[0].path == str(photo) and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert max(h.score for h in hits) <= 1.0 + 1e-5  # no 4e37 scores
        if photo == photos[0]:
            assert library.index_manager.last_action == "rebuilt"
    index = library.stats()["index"]
    assert index["rebuild_reason"] == ("the index file does not match the checksum kept in the database "
                                       "(damaged or replaced)")
    assert index["fresh"] is True and index["count"] == 8
    saved = json.loads(library.store.get_meta(library.index_manager.state_key))
    assert saved["file_crc32"] == f"{zlib.crc32(library.index_manager.index_path.read_bytes()):08x}"
    library.close()


def _library_files(lib) -> dict[str, bytes]:
    return {str(p.relative_to(lib)): p.read_bytes() for p in sorted(lib.rglob("*"))
            if p.is_file() and not p.name.startswith("library.sqlite3") and p.name != "library.lock"}


def _damage(db, how: str) -> None:
    data = db.read_bytes()
    if how == "truncated":
        db.write_bytes(data[: len(data) // 2])
    elif how == "overwritten":  # page 1 (the schema) intact, every table page garbage
        page = int.from_bytes(data[16:18], "big")
        db.write_bytes(data[:page] + bytes(range(256)) * ((len(data) - page) // 256 + 1))
    elif how == "emptied":
        db.write_bytes(b"")
    else:
        db.unlink()


@pytest.mark.parametrize("how", ["truncated", "overwritten", "emptied", "deleted"])
def test_damaged_database_is_one_line_and_touches_nothing(built, capsys, how):
    lib, photos = built
    db = lib / "library.sqlite3"
    assert not (lib / "library.sqlite3-wal").exists()  # closed cleanly: the db file is the whole library
    _damage(db, how)
    damaged_db = db.read_bytes() if how != "deleted" else None
    before = _library_files(lib)
    assert any(name.endswith(".faiss") for name in before)
    with pytest.raises(DamagedLibraryError, match=f"library database {db} is damaged"), Library(lib) as library:
        library.stats()
    commands = [["search", "a cat"], ["search", "--image", str(photos[0])], ["index", "stats"],
                ["index", "rebuild"], ["index", "rebuild", "--index", "hnsw"], ["tag", "--labels", "a,b"],
                ["index", "remove", "1"], ["index", "prune"],
                ["index", "add", str(photos[0].parent), "--model", "test-vit-tiny", "--workers", "0", "-q"]]
    for command in commands:
        assert main([*command, "--library", str(lib)]) == 2, command
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "Traceback" not in err, (command, err)
        assert err.startswith(f"error: library database {db} is damaged (") and "clipforge index add" in err
    assert _library_files(lib) == before  # the index, thumbnails... are untouched
    assert (db.read_bytes() if db.exists() else None) == damaged_db  # and so is the database itself


def test_empty_database_file_alone_is_a_new_library(tmp_path, tiny_encoder, images_factory):
    images_factory(tmp_path / "photos", 2)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "library.sqlite3").write_bytes(b"")  # e.g. a crash right after creating it
    with Library(tmp_path / "lib", tiny_encoder) as library:
        assert library.add(tmp_path / "photos", workers=0, progress=False).added == 2


@pytest.mark.parametrize("blob", [b"\x01\x02", b"\x00" * 4096])
def test_a_vector_blob_of_the_wrong_length_is_named_with_its_photos_and_the_fix(built, capsys, blob):
    """A stored vector cut short (or grown) with the index file gone: every search was a 500 with a 110-line
    traceback (np.stack of rows of different lengths) in the server, a traceback at the CLI. Now one line naming
    the row, the photos holding it and how to embed them again; doing that makes search work."""
    lib, photos = built
    with Library(lib) as library:
        victim = library.list_images()[2]
        embedding = library.store.conn().execute("SELECT id FROM embeddings WHERE sha256 = ?",
                                                 (victim.sha256,)).fetchone()[0]
        library.store.conn().execute("UPDATE embeddings SET vector = ? WHERE id = ?", (blob, embedding))
        index_path, width = library.index_manager.index_path, library.index_manager.embed_dim
    index_path.unlink()
    assert main(["search", "a cat", "--library", str(lib)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"error: library database {lib / 'library.sqlite3'} is damaged: vector {embedding} is "
                          f"{len(blob)} bytes, not {width} values;"), err
    assert f"`clipforge index remove {victim.id}`, then add those photos again" in err, err
    if blob == b"\x01\x02":  # the server says the same, once per request, without its folders
        pytest.importorskip("fastapi")
        from fastapi.testclient import TestClient

        from clipforge.server import create_app

        with Library(lib) as library, TestClient(create_app(library, ui=False)) as client:
            answer = client.post("/api/search", json={"text": "a cat"})
        assert answer.status_code == 503 and answer.json()["error"] == "damaged_library_error", answer.text
        assert answer.json()["detail"].startswith(f"library database library.sqlite3 is damaged: vector {embedding}")
    assert main(["index", "remove", str(victim.id), "--library", str(lib)]) == 0
    assert main(["index", "add", str(photos[0].parent), "--library", str(lib), "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["search", "a cat", "--library", str(lib), "--top-k", "8", "--paths"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8



def _read_only(folder):
    """Remove every write permission below `folder`; returns the modes to put back."""
    modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
    for path, mode in modes.items():
        path.chmod(mode & ~0o222)
    return modes


def _clipforge(prefix: list[str], *args: str):
    import subprocess
    import sys

    return subprocess.run([*prefix, sys.executable, "-m", "clipforge", *args], capture_output=True, text=True,
                          timeout=120)


def _snapshot(folder):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_library_this_user_cannot_write_is_searched_as_it_is(built, without_root_override, capsys):
    """A library in a read-only folder (a shared copy, a read-only mount) could not even be searched: every
    command ended in `attempt to write a readonly database` (SQLite's write-ahead log and its shared memory
    live beside the database). A library whose log is empty holds everything in the file: it is now opened
    read-only and searched as it is, same results, nothing written; a command that must write says so in one
    line, exit 2. (The writable run's answers, to compare with, come from the same command in this process:
    only the read-only runs need a process without root's permission override.)"""
    lib, photos = built
    prefix = without_root_override
    capsys.readouterr()
    assert main(["search", "a cat", "--library", str(lib), "--top-k", "5"]) == 0
    expected = capsys.readouterr().out
    assert main(["index", "stats", "--library", str(lib)]) == 0
    stats = capsys.readouterr().out
    assert not [p.name for p in lib.iterdir() if p.name.endswith(("-wal", "-shm"))]  # closed: its log is merged
    modes = _read_only(lib)
    before = _snapshot(lib)
    try:
        found = _clipforge(prefix, "search", "a cat", "--library", str(lib), "--top-k", "5")
        assert found.returncode == 0, found.stderr
        assert found.stdout == expected and len(found.stdout.splitlines()) == 5
        counted = _clipforge(prefix, "index", "stats", "--library", str(lib))
        assert counted.returncode == 0 and counted.stdout == stats, counted.stderr
        assert _snapshot(lib) == before  # nothing written, no log or shared memory left beside it
        newcomer = photos[0].parent / "newcomer.png"
        from PIL import Image

        Image.new("RGB", (40, 30), (200, 30, 90)).save(newcomer)
        added = _clipforge(prefix, "index", "add", str(photos[0].parent), "--library", str(lib), "--workers", "0",
                           "-q")
        assert added.returncode == 2 and "Traceback" not in added.stderr, added.stderr
        line = added.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: cannot write library database {lib / 'library.sqlite3'} "
                               f"(attempt to write a readonly database); the folder {lib} is read-only for this "
                               f"user: give this user write access to {lib} and its files"), line
        assert _snapshot(lib) == before
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_a_read_only_copy_with_unmerged_writes_is_one_line(built, tmp_path, without_root_override):
    """A library copied while a writer had it open, without SQLite's shared-memory file, carries writes only in
    its write-ahead log; SQLite reads them only through shared memory it must create beside it, and the file
    alone would be an older library. Read-only, such a copy is one line naming the log and what to do, exit 2 -
    never an older answer."""
    import shutil
    import sqlite3

    lib, _ = built
    prefix = without_root_override
    writer = sqlite3.connect(lib / "library.sqlite3", isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO meta VALUES ('written_by_test', '1')")
    copy = tmp_path / "copy"
    shutil.copytree(lib, copy, ignore=shutil.ignore_patterns("*-shm"))  # (with it, SQLite reads the pair)
    writer.close()
    assert (copy / "library.sqlite3-wal").stat().st_size > 0 and not (copy / "library.sqlite3-shm").exists()
    modes = _read_only(copy)
    try:
        done = _clipforge(prefix, "search", "a cat", "--library", str(copy))
        assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == "", done.stderr
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: cannot write library database {copy / 'library.sqlite3'} ("), line
        assert ("; its write-ahead log library.sqlite3-wal holds writes not yet copied into it, which SQLite "
                f"reads only from a folder it can write: give this user write access to {copy} and its files") in line
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_a_garbled_embedding_width_names_the_database_and_the_key(built, capsys):
    """A meta value `embed_dim` of 'abc' made `index stats` (and the server's start) fail with
    "invalid literal for int() with base 10: 'abc'", naming neither the file nor the key."""
    lib, _ = built
    with Library(lib) as library:
        library.store.conn().execute("UPDATE meta SET value = 'abc' WHERE key = 'embed_dim'")
    assert main(["index", "stats", "--library", str(lib)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: library database {lib / 'library.sqlite3'} is damaged (its meta key "
                          "'embed_dim' holds 'abc', not a number)"), err


def test_a_library_read_without_write_access_sees_what_its_owner_adds(built):
    """A server run by a user who may only read the library, while its owner keeps adding photos: the read-only
    connection (immutable while no writer has the log open) kept the pages it had read, and never saw the
    owner's additions (nor would a checkpoint rewriting pages under it be noticed). It opens the library anew
    whenever the database or its log changes, and reads a writer's log through its shared memory meanwhile."""
    import sqlite3

    from clipforge.library.store import LibraryWriteError, Store

    lib, _ = built
    store = Store(lib / "library.sqlite3", create=False)
    store.close()
    store.read_only = True  # what `Store._open` decides for a user without write access
    before = len(store.list_images(status=None))
    owner = sqlite3.connect(lib / "library.sqlite3", isolation_level=None)
    owner.execute("PRAGMA wal_autocheckpoint=0")
    owner.execute("INSERT INTO images (path, sha256, size, mtime_ns, added_at, status, error) "
                  "VALUES ('/x/new.jpg', NULL, 1, 1, 0, 'failed', 'test')")
    assert len(store.list_images(status=None)) == before + 1  # read through the writer's log, before it closes
    owner.execute("DELETE FROM images WHERE path = '/x/new.jpg'")
    owner.close()  # the last writer: its log is checkpointed into the file and removed
    assert len(store.list_images(status=None)) == before
    with pytest.raises(LibraryWriteError, match="attempt to write a readonly database"), store.transaction() as tx:
        tx.execute("DELETE FROM images")
    assert len(store.list_images(status=None)) == before
    store.close()
