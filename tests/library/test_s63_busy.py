"""A library another process is writing (audit 63 concurrency, findings 4 and 6).

4. `index add` / `index remove` / `index prune` waited SQLite's busy timeout (60 s) for another process's write
   transaction, then ended with a `sqlite3.OperationalError: database is locked` traceback and exit status 1. Now
   one line, exit 2 (`LibraryBusyError`, raised where the write begins or commits), nothing of the write kept; the
   server answers an upload refused so with its 503 `library_busy`, as before.
6. A writer finding the library lock held said "another clipforge process is adding to the library X" whoever held
   it (a `tag`, a `prune`), with no prefix; a writer waiting on SQLite's write lock said nothing for up to 60 s. Now
   the lock file names its holder (pid and command) and the waiter says so in a ``notice:`` line, and a writer that
   waits for the database says once that it does.

The busy timeout is made short here (`dbfile.BUSY_TIMEOUT_S`) so that nothing waits 60 s.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.errors import Notice
from clipforge.library import dbfile, store_connection
from clipforge.library.lock import library_lock

QUIET = ["--workers", "0", "-q"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _rows(db: Path) -> list[tuple]:
    """Everything a write of these commands changes: the image records, their vectors and the meta table."""
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return [(t, *row) for t in tables for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1")]
    finally:
        conn.close()


def _short_waits(monkeypatch, busy_s: float, notice_s: float = 0.1) -> None:
    monkeypatch.setattr(dbfile, "BUSY_TIMEOUT_S", busy_s)
    monkeypatch.setattr(store_connection, "WAIT_NOTICE_S", notice_s, raising=False)


def _hold(db: Path) -> sqlite3.Connection:
    """Another process's long write, as `audit_concurrency/w/holdtx.py` holds it (another connection, BEGIN
    IMMEDIATE: SQLite's locks are the same between two connections of one process as between two processes)."""
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


@pytest.fixture()
def lib(tmp_path, images_factory, capsys) -> Path:
    images_factory(tmp_path / "photos", 3, formats=("png",))
    images_factory(tmp_path / "more", 2, seed=5, formats=("png",))
    code, _, err = _run(capsys, "index", "add", str(tmp_path / "photos"), "--model", "clipforge-tiny",
                        "--library", str(tmp_path / "lib"), *QUIET)
    assert code == 0, err
    return tmp_path / "lib"


@pytest.mark.parametrize("command", ["add", "remove", "prune"])
def test_a_writer_kept_out_past_the_busy_timeout_says_so_in_one_line_and_writes_nothing(command, lib, tmp_path,
                                                                                          monkeypatch, capsys) -> None:
    argv = {"add": ["index", "add", str(tmp_path / "more"), *QUIET],
            "remove": ["index", "remove", "1"],
            "prune": ["index", "prune"]}[command] + ["--library", str(lib)]
    if command == "prune":
        (tmp_path / "photos" / "img001.png").unlink()
    _short_waits(monkeypatch, 0.5)
    db = lib / "library.sqlite3"
    before = _rows(db)
    holder = _hold(db)
    try:
        code, out, err = _run(capsys, *argv)
    finally:
        holder.rollback()
        holder.close()
    busy = (f"error: library {lib} is busy: another process has held its database for writing for 0.5 s; nothing "
            "was written by this command; try again when it finishes\n")
    waiting = (f"notice: waiting for another process that is writing the library {lib} (SQLite's write lock on its "
               "database); giving up after 0.5 s\n")
    assert (code, out) == (2, ""), err
    assert err == (busy if command == "add" else waiting + busy)  # (`-q` hides notices)
    assert _rows(db) == before
    code, out, err = _run(capsys, *argv)  # the other write over: the same command does it all
    assert code == 0 and err == "", err
    assert out.startswith({"add": "added 2 files,", "remove": "removed 1 image", "prune": "pruned 1"}[command]), out


class _CommitRefused:
    """A connection whose COMMIT meets another connection's lock (rare in WAL mode, but a COMMIT may say it)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args):
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database is locked")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def test_a_commit_refused_as_busy_is_rolled_back_and_said_as_busy(lib, monkeypatch) -> None:
    from clipforge.library.store import Store

    _short_waits(monkeypatch, 0.5)
    store = Store(lib / "library.sqlite3", create=False)
    try:
        with store.transaction() as tx:  # one write this process made before
            tx.execute("INSERT INTO meta VALUES ('s63-before', '1')")
        real = store.conn()
        monkeypatch.setattr(store, "conn", lambda: _CommitRefused(real))
        with pytest.raises(sqlite3.OperationalError) as caught, store.transaction() as tx:
            tx.execute("INSERT INTO meta VALUES ('s63', 'half')")
        assert type(caught.value) is dbfile.LibraryBusyError
        assert str(caught.value) == (
            f"library {lib} is busy: another process has held its database for writing for 0.5 s; this write was not "
            "made (what this command wrote before it is kept); try again when it finishes")
        assert not real.in_transaction
    finally:
        monkeypatch.undo()
        store.close()
    meta = dict(sqlite3.connect(lib / "library.sqlite3").execute("SELECT key, value FROM meta"))
    assert meta["s63-before"] == "1" and "s63" not in meta  # rolled back, the earlier write kept


def test_a_writer_waiting_for_the_database_says_so_once_then_writes(lib, monkeypatch) -> None:
    from clipforge.library.store import Store

    _short_waits(monkeypatch, 60.0, notice_s=0.1)
    store = Store(lib / "library.sqlite3", create=False)
    holder = _hold(lib / "library.sqlite3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def release() -> None:  # once the writer has said it waits (at most 30 s)
            deadline = time.monotonic() + 30
            while not caught and time.monotonic() < deadline:
                time.sleep(0.02)
            holder.rollback()

        releaser = threading.Thread(target=release)
        releaser.start()
        try:
            with store.transaction() as tx:
                tx.execute("INSERT INTO meta VALUES ('s63', 'written')")
        finally:
            releaser.join(60)
            holder.close()
            store.close()
    assert [(w.category, str(w.message)) for w in caught] == [
        (Notice, f"waiting for another process that is writing the library {lib} (SQLite's write lock on its "
                 "database); giving up after 60 s")]
    meta = dict(sqlite3.connect(lib / "library.sqlite3").execute("SELECT key, value FROM meta"))
    assert meta["s63"] == "written"


def _uploads(library) -> list[Path]:
    """The library's uploads folder, less the lock file its writers take turns on."""
    return sorted(p for p in Path(library.paths.uploads_dir).rglob("*") if p.name != ".lock")


def test_the_server_answers_an_upload_kept_out_503_library_busy_as_before(tmp_path, images_factory, tiny_encoder,
                                                                          monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from clipforge.library import Library
    from clipforge.server import create_app

    _short_waits(monkeypatch, 0.5)  # before the library opens: its connections' own busy timeout too
    photos = images_factory(tmp_path / "photos", 2, formats=("png",))
    upload = images_factory(tmp_path / "upload", 1, seed=9, formats=("png",))[0].read_bytes()
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(photos[0].parent, workers=0, progress=False)
    before = _rows(library.paths.db)
    uploads = _uploads(library)
    try:
        with TestClient(create_app(library, ui=False)) as client:
            holder = _hold(library.paths.db)
            try:
                answer = client.post("/api/images", files={"file": ("orange.png", upload, "image/png")})
            finally:
                holder.rollback()
                holder.close()
            assert answer.status_code == 503, answer.text
            assert answer.json() == {"error": "library_busy", "detail": (
                "the library is being written by another process (e.g. `clipforge tag`): the image was not added; "
                "try again shortly")}
            assert answer.headers["retry-after"] == "10"
            assert _rows(library.paths.db) == before
            kept = sorted(set(_uploads(library)) - set(uploads))  # the whole file stays for a retry (review 63: its
            assert [p.name for p in kept if p.is_file()] == ["orange.png"]  # removal could take another server's)
            assert client.post("/api/images", files={"file": ("orange.png", upload, "image/png")}).status_code == 201
            assert sorted(set(_uploads(library)) - set(uploads)) == kept  # the retry stored nothing again
    finally:
        library.close()


# -- finding 6: who holds the library lock --------------------------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from clipforge.library.lock import library_lock
    path = Path(sys.argv[1])
    sys.argv = sys.argv[2:]  # the command line the holder was started with
    with library_lock(path):
        print("held", flush=True)
        sys.stdin.readline()
""")

_RAW_HOLDER = textwrap.dedent("""
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)  # an older clipforge: the lock taken, nothing written in the file
    print("held", flush=True)
    sys.stdin.readline()
""")


def _start(script: str, *args: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline() == "held\n"
    return child


def _release_once_waited_on(child: subprocess.Popen, lock: Path) -> threading.Thread:
    """Let `child` go once this process waits for its lock (a blocked request in /proc/locks: "->" before the
    lock's inode), or after 30 s."""
    inode = f":{lock.stat().st_ino} "

    def release() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()):
                break
            time.sleep(0.02)
        child.stdin.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


needs_proc_locks = pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")


@needs_proc_locks
def test_a_writer_waiting_for_the_library_lock_names_its_holder(lib, capsys) -> None:
    lock = lib / "library.lock"
    child = _start(_HOLDER, str(lock), "/usr/local/bin/clipforge", "index", "prune", "--library", str(lib))
    try:
        assert lock.read_text() == f"{child.pid}\tclipforge index prune\n"
        releaser = _release_once_waited_on(child, lock)
        code, out, err = _run(capsys, "index", "remove", "1", "--library", str(lib))
        releaser.join(60)
    finally:
        child.kill()
        child.wait(30)
    assert (code, out) == (0, "removed 1 image\n"), err
    assert err == (f"notice: waiting for another clipforge process (pid {child.pid}: clipforge index prune) that is "
                   f"writing the library {lib}\n")
    assert lock.read_text().startswith(f"{os.getpid()}\t")  # the next holder's record replaced the child's


@needs_proc_locks
@pytest.mark.parametrize("contents", [b"", b"12x\tclipforge tag\n", b"999999999\tclipforge tag\n", b"4"])
def test_a_lock_file_without_its_holders_record_names_the_holder_by_pid(contents, tmp_path) -> None:
    """An older clipforge's empty lock file, junk, the record of a holder that died (`kill -9`), half a record: the
    kernel says which process holds the lock, and nothing else is claimed about it."""
    lock = tmp_path / "library.lock"
    lock.write_bytes(contents)
    child = _start(_RAW_HOLDER, str(lock))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            releaser = _release_once_waited_on(child, lock)
            with library_lock(lock):
                assert lock.read_text().startswith(f"{os.getpid()}\t")
            releaser.join(60)
    finally:
        child.kill()
        child.wait(30)
    assert [(w.category, str(w.message)) for w in caught] == [
        (Notice, f"waiting for another clipforge process (pid {child.pid}) that is writing the library {tmp_path}")]


@pytest.mark.parametrize(("argv", "recorded"), [
    (["/usr/local/bin/clipforge", "index", "add", "photos", "--library", "L", "-q"], "clipforge index add"),
    (["/x/site-packages/clipforge/__main__.py", "tag", "--labels", "cat,dog"], "clipforge tag"),
    (["/usr/bin/clipforge", "serve", "--token", "s3cret"], "clipforge serve"),  # never its other arguments
    (["/usr/bin/clipforge", "search", "--in", "photos", "cat"], "clipforge search"),
    (["-c"], "python"),
    (["my\nscript.py", "run"], "my?script.py run"),
])
def test_the_lock_file_records_the_holders_pid_and_command_words(argv, recorded, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    lock = tmp_path / "library.lock"
    monkeypatch.setattr(sys, "argv", argv)
    with library_lock(lock):
        assert lock.read_text() == f"{os.getpid()}\t{recorded}\n"
