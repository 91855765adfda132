"""An upload whose database write the disk refuses is the documented 507, with nothing of it kept (audit61 #2).

The upload's own file fits under the limit and is written; the library database's write-ahead log then cannot grow
(RLIMIT_FSIZE, what `ulimit -f` sets: every write past it fails with EFBIG, which SQLite reports as "disk I/O error",
not SQLITE_FULL). The library's `LibraryWriteError` for it carried errno EIO, so the server's disk-full test said no:
a 500 `internal_error` with a traceback in the log, and the upload's bytes left in `uploads/` with no record.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest

from tests.server.test_server_attack_disk import _tree, full_disk


def _upload(kit, seed: int) -> bytes:
    data = kit.encode(kit.picture((10, 120, 240), seed=seed, size=(16, 16)), "PNG")
    assert len(data) < 2048  # under the limit: only the database's write fails
    return data


def test_an_upload_whose_database_write_the_disk_refuses_is_a_507_and_leaves_nothing(
        make_client, library, kit, caplog):
    client = make_client(raise_server_exceptions=False)
    data = _upload(kit, 61)
    before, count = _tree(library.paths.uploads_dir), library.stats()["images"]["ok"]
    caplog.set_level(logging.INFO)
    with full_disk(len(data) + 64):  # a WAL frame is a page (4 KB) plus its header: past the limit
        answer = client.post("/api/images", files={"file": ("blue.png", data, "image/png")})
    assert answer.status_code == 507, answer.text
    assert answer.json() == {"error": "insufficient_storage",
                             "detail": "the library's disk is full (or a file size limit stopped the write): the "
                                       "image was not added"}
    assert _tree(library.paths.uploads_dir) == before  # the upload's file and its folder are gone again
    assert library.stats()["images"]["ok"] == count
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    again = client.post("/api/images", files={"file": ("blue.png", data, "image/png")})
    assert again.status_code == 201, again.text
    assert library.stats()["images"]["ok"] == count + 1


def test_the_disk_full_test_knows_the_library_s_refused_write():
    """One predicate (`clipforge.atomic.disk_full`) for every writer: the OS's errnos, SQLite's SQLITE_FULL, the
    library's error for SQLite's "disk I/O error" on a write, safetensors' Rust "(os error 27)"; and not a
    read-only library (403 elsewhere) or an unrelated error."""
    import errno
    import sqlite3

    from clipforge.atomic import disk_full
    from clipforge.library.dbfile import access_error, write_error
    from clipforge.server.service import disk_full as server_disk_full

    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorname = "SQLITE_IOERR_WRITE"
    refused = write_error(Path("lib/library.sqlite3"), io_error)
    assert refused is not None and disk_full(refused) and server_disk_full is disk_full
    assert disk_full(write_error(Path("lib/library.sqlite3"), sqlite3.OperationalError("database or disk is full")))
    assert disk_full(sqlite3.OperationalError("database or disk is full"))
    assert disk_full(OSError(errno.EFBIG, "File too large")) and disk_full(OSError(errno.ENOSPC, "No space"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert disk_full(RuntimeError("Error while serializing: I/O error: File too large (os error 27)"))
    read_only = sqlite3.OperationalError("attempt to write a readonly database")
    read_only.sqlite_errorname = "SQLITE_READONLY"
    denied = access_error(Path("lib/library.sqlite3"), read_only, writing=True)
    assert denied is not None and not disk_full(denied)
    for other in (OSError(errno.EACCES, "Permission denied"), ValueError("bad"), sqlite3.OperationalError("locked"),
                  RuntimeError("I/O error: No such file or directory (os error 2)")):
        assert not disk_full(other), other


@pytest.mark.parametrize("errname", ["SQLITE_IOERR_WRITE", "SQLITE_FULL"])
def test_the_web_page_s_add_to_library_takes_the_same_path(library, kit, errname, monkeypatch):
    """The page's "Add to library" calls `LibraryService.add` (`ui_handlers`): the same 507 words and cleanup."""
    import sqlite3

    from clipforge.server.errors import APIError
    from clipforge.server.service import LibraryService
    from clipforge.server.uploads import SniffedImage

    service = LibraryService(library)
    data = _upload(kit, 62)
    before = _tree(library.paths.uploads_dir)
    real = library.store.transaction

    @contextlib.contextmanager
    def refused(*args, **kwargs):  # the store's own guard turns SQLite's error into the library's
        with real(*args, **kwargs):
            error = sqlite3.OperationalError("database or disk is full" if errname == "SQLITE_FULL"
                                             else "disk I/O error")
            error.sqlite_errorname = errname
            raise error
        yield

    monkeypatch.setattr(library.store, "transaction", refused)
    image = SniffedImage(data=data, format="PNG", width=16, height=16, what="upload")
    with pytest.raises(APIError) as caught:
        service.add(image, "blue.png")
    assert (caught.value.status, caught.value.code) == (507, "insufficient_storage")
    assert _tree(library.paths.uploads_dir) == before
