"""A store's connections live as long as the threads that use them (audit 62, soak finding 1).

`clipforge serve` answers requests on anyio's worker threads, which end after 10 s idle: each burst after a pause ran
on fresh threads, each opened its own connection (2 descriptors), and the ended threads' connections stayed open for
good - a server used now and then ran out of descriptors in about a day. Out of descriptors, SQLite says "unable to
open database file", which was taken for a permission problem: the store turned read-only for the rest of its life and
told the operator to fix permissions that were fine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from clipforge.library.store import Store

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")


def _open_count(db: Path, suffix: str = "") -> int:
    """How many descriptors of this process are open on the database file (`suffix` "-wal": on its write-ahead log).
    Each connection opens both. SQLite's unix VFS keeps a closed connection's database descriptor open while another
    connection of the process holds a lock on that file (closing it would drop that lock), and gives it to the next
    connection that opens: those stay at the most connections ever open together; write-ahead log descriptors close
    with their connection."""
    target = os.fspath(db.resolve()) + suffix
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            count += os.readlink(f"/proc/self/fd/{fd}") == target
    return count


def _query_in_threads(store: Store, threads: int, while_alive: list[int] | None = None) -> list[object]:
    """`threads` threads that each read the store, then wait until all have read (so that they are alive together,
    as a server's workers are during a burst), then end. `while_alive`: gets the database's descriptor count then."""
    got: list[object] = []
    all_read = threading.Barrier(threads + 1)

    def work() -> None:
        try:
            got.append(store.meta_count("removals"))
            got.append(store.meta_count("removals"))  # the same connection again: no new one
        finally:
            all_read.wait(10)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    all_read.wait(10)
    if while_alive is not None:
        while_alive.append(_open_count(store.path))
    for worker in workers:
        worker.join(10)
    return got


def test_ended_threads_leave_no_connection_open(tmp_path: Path) -> None:
    store = Store(tmp_path / "library.sqlite3")
    assert _open_count(store.path) == 1  # this thread's, opened to create the library
    counts: list[int] = []
    assert _query_in_threads(store, 5, counts) == [0] * 10
    descriptors = len(os.listdir("/proc/self/fd"))
    for _burst in range(5):  # bursts of requests on fresh worker threads
        assert _query_in_threads(store, 5, counts) == [0] * 10
    assert len(os.listdir("/proc/self/fd")) == descriptors  # nothing grows from burst to burst
    assert counts == [6] * 6  # while a burst runs: its 5 threads' connections and this thread's (was 6, 11, ... 31)
    assert len(store._all) == 1  # every ended thread's connection is closed: this thread's is left
    assert _open_count(store.path, "-wal") == 1
    assert _open_count(store.path) == 6  # kept by SQLite for the next burst's connections (see `_open_count`)
    store.close()
    assert _open_count(store.path) == 0
    assert _query_in_threads(store, 3) == [0] * 6  # a closed store opens again on use, as before
    assert _open_count(store.path) == 0


def test_a_store_holds_no_more_connections_than_live_threads(tmp_path: Path) -> None:
    store = Store(tmp_path / "library.sqlite3")
    for _ in range(40):  # one thread at a time, as a quiet server's requests come
        assert _query_in_threads(store, 1) == [0, 0]
    assert len(store._all) == 1  # the store's own connections: this thread's (there were 41)
    assert (_open_count(store.path), _open_count(store.path, "-wal")) == (2, 1)  # this thread's, and one kept


def test_opening_a_connection_closes_those_of_ended_threads(tmp_path: Path) -> None:
    """The backstop for a thread whose local data outlives it (here kept on purpose): the next connection opened
    closes the ended thread's."""
    store = Store(tmp_path / "library.sqlite3")
    kept: list[object] = []

    def read_and_keep() -> None:
        store.meta_count("removals")
        kept.append(store._local.end)  # what would have closed this thread's connection as it ended

    for _ in range(3):
        thread = threading.Thread(target=read_and_keep)
        thread.start()
        thread.join(10)
        assert len(store._all) == 2  # this thread's, and the ended one's: nothing has opened since
        assert _query_in_threads(store, 1) == [0, 0]  # opens one: closes the ended thread's
        assert len(store._all) == 1
    assert _open_count(store.path, "-wal") == 1


def test_a_connection_stays_with_its_live_thread(tmp_path: Path) -> None:
    """Closing ended threads' connections never closes one a live thread holds (here: this one's, read between)."""
    store = Store(tmp_path / "library.sqlite3")
    conn = store.conn()
    for _ in range(3):
        _query_in_threads(store, 2)
        assert store.conn() is conn
        assert store.meta_count("removals") == 0


_OUT_OF_FILES = textwrap.dedent("""
    import os, resource, sys, threading
    from clipforge.library.store import Store

    store = Store(sys.argv[1])
    free = int(sys.argv[2])

    def in_thread(work):  # a fresh worker thread, as a server's after a pause: it must open a connection
        got = []
        def run():
            try:
                got.append(work())
            except Exception as exc:
                got.append(exc)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)
        return got[0]

    def write():
        with store.transaction() as tx:
            tx.set_meta("s62", "written")
        return store.get_meta("s62")

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    for _ in range(free):
        os.close(held.pop())
    for work in (lambda: store.meta_count("removals"), write):
        got = in_thread(work)
        print(type(got).__name__, isinstance(got, OSError) and got.errno, got, sep=" | ")
    print("read_only", store.read_only)
    for fd in held:
        os.close(fd)
    print(in_thread(lambda: store.meta_count("removals")), in_thread(write), "read_only", store.read_only)
""")


@pytest.mark.parametrize("free", [0, 1])  # 1: SQLite opens the database file, then cannot open its log
def test_out_of_descriptors_is_said_and_the_store_stays_writable(tmp_path: Path, free: int) -> None:
    db = tmp_path / "library.sqlite3"
    Store(db).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _OUT_OF_FILES, os.fspath(db), str(free)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    said = (f"cannot open library database {db}: this process may open no more files (its limit, `ulimit -n`, is "
            "64); nothing in the library was changed: raise the limit or close what holds them, and try again")
    assert done.stdout.splitlines() == [
        f"LibraryOutOfFilesError | 24 | {said}",  # one line, errno EMFILE, not "give this user write access"
        f"LibraryOutOfFilesError | 24 | {said}",
        "read_only False",  # not taken for a library this user may not write
        "0 written read_only False",  # descriptors back: read and written on the next request
    ]


def test_a_forked_child_closes_none_of_its_parents_connections(tmp_path: Path) -> None:
    """Review 62: in a forked child (a DataLoader worker) Python drops the other threads' local data at once, and the
    finaliser closed their connections there: one whose thread was inside SQLite at the fork waited for ever on a
    lock no thread of the child holds (61 of 100 children stuck beside a reading thread). Here the reading thread is
    idle at the fork (no hang either way); the child must leave its connection alone all the same."""
    store = Store(tmp_path / "library.sqlite3")
    store.meta_count("removals")
    opened, stop = threading.Event(), threading.Event()

    def reader() -> None:
        store.meta_count("removals")
        opened.set()
        stop.wait(30)

    thread = threading.Thread(target=reader)
    thread.start()
    assert opened.wait(10)
    held = len(store._all)
    pid = os.fork()
    if pid == 0:  # the child: report how many connections it still lists, then leave at once
        os._exit(10 + len(store._all))
    _, status = os.waitpid(pid, 0)
    stop.set()
    thread.join(10)
    assert (held, os.waitstatus_to_exitcode(status)) == (2, 12)  # was 11: the reader's connection closed there
    store.close()


MAIN_AFTER_SHUTDOWN = textwrap.dedent("""
    import sys, threading
    from clipforge.library.store import Store
    store = Store(sys.argv[1])
    store.meta_count("removals")
    threading._shutdown()  # what the CLI's fast exit runs: the main thread then says it is not alive
    worker = threading.Thread(target=store.meta_count, args=("removals",))
    worker.start()
    worker.join()
    print(store.meta_count("removals"))  # was: Cannot operate on a closed database
""")


def test_the_main_threads_connection_outlives_threading_shutdown(tmp_path: Path) -> None:
    Store(tmp_path / "library.sqlite3").close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", MAIN_AFTER_SHUTDOWN, str(tmp_path / "library.sqlite3")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert (run.returncode, run.stdout.strip()) == (0, "0"), run.stderr[-2000:]
