"""Connections to one library database: opened per thread, checked, and made read-only when they must be.

sqlite3 objects must not be shared across threads, so each thread gets its own connection
(autocommit mode), closed when the thread ends: a server's worker threads come and go (anyio ends one after 10 s
idle), and each ended thread's connection kept its two descriptors open for good until the process could open no
more (`conn`). Writes from this process are serialised by a lock, writes from other
processes by SQLite itself (WAL mode: readers never block the writer). Every write is one
`transaction()`, which yields the `Transaction` that owns all writes; a read of several statements that must
see one moment of the database takes one read transaction (`snapshot`).

A user who may read a library but not write it gets read-only connections, for good, reopened
whenever someone with write access changes the file. A damaged database (truncated,
overwritten, emptied) is reported as `DamagedLibraryError` naming the file, never as a bare
sqlite3 traceback (`guard`, and `reads` for each query method), a disk that refuses a write
as `LibraryWriteError`, and a write that another process kept out past the busy timeout (60 s)
as `LibraryBusyError` (`transaction`), after one notice that it waits. A file left short by an
interrupted checkpoint is judged by SQLite together with its write-ahead log before anything reads it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from clipforge.library import dbfile
from clipforge.library.dbfile import (
    DamagedLibraryError,
    LibraryBusyError,
    LibraryWriteError,
    access_error,
    busy_error,
    check_database_file,
    damage_error,
    damaged,
    display_path,
    file_stamp,
    open_read_only,
    open_writable,
    read_only_part,
    write_error,
)
from clipforge.library.lock import tell
from clipforge.library.schema import migrate
from clipforge.library.transaction import Transaction

__all__ = ["CLOSE_WAIT_S", "StoreConnection", "WAIT_NOTICE_S", "reads"]

CLOSE_WAIT_S = 30.0
"""How long `StoreConnection.close` waits for reads running in other threads before closing under them."""

WAIT_NOTICE_S = 2.0
"""How long a write waits for another process's write lock before it says that it is waiting (`_begin`)."""

_F = TypeVar("_F", bound=Callable[..., Any])


def reads(method: _F) -> _F:
    """Turn SQLite's "malformed"/"not a database" during a read into DamagedLibraryError."""

    @functools.wraps(method)
    def wrapper(self: StoreConnection, *args: Any, **kwargs: Any) -> Any:
        with self.reading(), self.guard():
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class StoreConnection:
    """One library database's file, connections and transactions (the queries are `Store`'s)."""

    def __init__(self, db_path: str | Path, create: bool = True) -> None:
        self.path = Path(db_path)
        if not self.path.exists() and not create:
            raise FileNotFoundError(
                f"no library database at {self.path} (run `clipforge index add FOLDER` first, or "
                "search a folder directly: `clipforge search QUERY --in FOLDER`)"
            )
        pending = check_database_file(self.path, create)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.read_only = False  # set when this user can read the library but not write it (`_open`)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._all: dict[int, tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = {}  # every open
        # connection, by its thread's number here (`_own`): the thread it belongs to, and the connection
        self._numbers = itertools.count()
        self._pid = os.getpid()  # connections are closed only in the process that opened them (`_release`)
        self._readers = 0  # `reads` calls running now, in every thread (`close` waits for them)
        self._idle = threading.Condition()
        self._closing = False  # set while `close` runs: a read starting then waits for it (see `reading`)
        self._conns = threading.Lock()  # guards `_all`, `_numbers` (not `_lock`: a read opening its connection during a
        # close must not wait for the lock the close holds)
        self._mine = threading.local()  # this thread's share of `_readers`
        self._wrote = False  # a transaction of this process committed (what a busy write's sentence says is kept)
        if pending is not None:
            self._finish_interrupted_checkpoint(pending)
        with self.guard():
            migrate(self, self.path)

    def _finish_interrupted_checkpoint(self, problem: str) -> None:
        """A short file beside its WAL (see `clipforge.library.dbfile`): let SQLite judge the pair, then
        copy the WAL into the file. Damage only if SQLite cannot read every page whole."""
        try:
            with self.guard():
                verdict = self.conn().execute("PRAGMA integrity_check").fetchall()
        except DamagedLibraryError:
            self.close()
            raise
        if [tuple(r) for r in verdict] != [("ok",)]:
            self.close()
            raise damaged(
                self.path,
                f"{problem}, and its write-ahead log does not complete it "
                f"({'; '.join(str(r[0]) for r in verdict[:3])})",
            )
        with contextlib.suppress(
            sqlite3.Error
        ):  # PASSIVE: never waits for another process's readers or writer
            self.conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finished = check_database_file(self.path, create=False) is None
        warnings.warn(
            f"library database {display_path(str(self.path))} was left half-written by an interrupted write "
            "(a full disk, a file-size limit or a crash during a checkpoint); SQLite checked it whole and "
            + (
                "it is complete again: nothing was lost"
                if finished
                else "it can be read, but the disk still refuses the rest: free some space before adding photos"
            ),
            stacklevel=4,
        )

    # -- connections and transactions -------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; writes go through `transaction`). A read-only one is opened
        anew when its owner changed the file, except inside a read transaction (`snapshot`): the snapshot's reads
        stay on the connection that holds it, and the next read after it sees those changes."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.read_only:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed by `close`: a new one, as always
                if conn.in_transaction:
                    return conn
        if conn is not None and self.read_only and self._local.stamp != file_stamp(self.path):
            self._drop(conn)  # someone with write access changed the library: read it anew
            conn = None
        if conn is None:
            with self.guard():
                conn = self._open()
            self._local.conn = conn
            self._local.stamp = file_stamp(self.path) if self.read_only else None
            self._own(conn)
        return conn

    def _own(self, conn: sqlite3.Connection) -> None:
        """Keep `conn` as this thread's connection until the thread ends, and close those of threads that have.

        A thread's number is set in its thread-local data with a finaliser: when the thread ends, Python drops that
        data and the finaliser closes the thread's connection (`_ended`). Opening a connection also closes any
        other whose thread has ended (a backstop), so the store never holds more connections than live threads
        that read it. Closing another thread's connection is safe only because that thread is gone: connections
        are opened `check_same_thread=False` (`dbfile.open_writable`) for that, and for `close`."""
        number = getattr(self._local, "number", None)
        with self._conns:
            if os.getpid() != self._pid:  # a forked child: the parent's connections are not its to close
                return
            if number is None:
                number = self._local.number = next(self._numbers)
                self._local.end = _ThreadEnd()
                # not at exit: a daemon thread may still be reading (a connection closed under it crashed SQLite)
                weakref.finalize(self._local.end, _ended, weakref.ref(self), number).atexit = False
            ended = [n for n, (thread, _) in self._all.items() if n != number and not _alive(thread())]
            gone = [self._all.pop(n)[1] for n in ended]
            self._all[number] = (weakref.ref(threading.current_thread()), conn)
        for old in gone:
            with contextlib.suppress(sqlite3.Error):
                old.close()

    def _release(self, number: int) -> None:
        """Close the connection of the thread numbered `number` here, which has ended (`_own`). Not in a forked
        child (a DataLoader worker): Python drops the other threads' local data there at once, and closing a
        connection whose thread was inside SQLite at the fork waited for ever on a lock no thread of the child holds
        (review 62: 61 of 100 children stuck beside a reading thread); the entry is kept, as closing it would be."""
        if os.getpid() != self._pid:
            return
        with self._conns:
            held = self._all.pop(number, None)
        if held is not None:
            with contextlib.suppress(sqlite3.Error):
                held[1].close()

    def _drop(self, conn: sqlite3.Connection) -> None:
        with self._conns:
            number = getattr(self._local, "number", None)
            if number in self._all and self._all[number][1] is conn:
                del self._all[number]
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        self._local.conn = None

    def _open(self) -> sqlite3.Connection:
        """A new connection: writable, or read-only for a library this user may read but not write (then
        for good: `dbfile.open_read_only`). A process that may open no more files is no such user: its error
        (`dbfile.LibraryOutOfFilesError`, from `guard`) leaves the store writable, and the next call opens it anew."""
        if self.read_only:
            return open_read_only(self.path)
        try:
            return open_writable(self.path)
        except sqlite3.Error as exc:
            if not isinstance(access_error(self.path, exc), LibraryWriteError) or not self.path.is_file():
                raise
            if read_only_part(self.path) is None:  # nothing here is read-only: out of descriptors a moment ago (the
                raise  # check said otherwise as some were freed), not for good (review 62)
        self.read_only = True  # a library this user may read but not write: search it as it is
        return open_read_only(self.path)

    @contextmanager
    def guard(self, writing: bool = False) -> Iterator[None]:
        """Report a damaged database file as one DamagedLibraryError naming it, and a write the disk
        refused (full, file-size limit) or this user may not make as one LibraryWriteError (`writing`: inside a
        write, which names what is read-only, `dbfile.access_error`)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, LibraryBusyError):  # said already (its folder's name may hold "malformed")
                raise
            error: Exception | None = (
                damage_error(self.path, exc) or write_error(self.path, exc)
                or access_error(self.path, exc, writing=writing)
            )
            if error is None:
                raise
            raise error from exc

    @contextmanager
    def transaction(self, wait: bool = True) -> Iterator[Transaction]:
        """One atomic write: everything done through the yielded object commits together or not at all.

        It waits for another process's write to end at most `dbfile.BUSY_TIMEOUT_S` (60 s), then raises
        `LibraryBusyError`, one sentence, nothing of it kept: SQLite's "database is locked" escaped every CLI writer
        as a traceback (audit 63). `wait=False`: do not wait (for a write that may be left for later): the same
        error at once, an sqlite3.OperationalError as before."""
        with self._lock, self.guard(writing=True):
            conn = self.conn()  # (a connection that cannot be opened is the reading sentence: its own guard)
            wait_s = float(dbfile.BUSY_TIMEOUT_S) if wait else 0.0
            self._begin(conn, wait_s)
            try:
                yield Transaction(conn)
                try:
                    conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    busy = busy_error(self.path, exc, float(dbfile.BUSY_TIMEOUT_S), self._wrote)
                    if busy is None:
                        raise
                    raise busy from exc
                self._wrote = True
            except BaseException:
                # A COMMIT the disk refused (or another connection kept out) leaves the transaction open; an I/O
                # error may have ended it.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def _begin(self, conn: sqlite3.Connection, wait_s: float) -> None:
        """BEGIN IMMEDIATE (take the write lock), waiting at most `wait_s` for another connection that holds it.

        A first try waits `WAIT_NOTICE_S`; if the lock is still held, one notice says that this write waits, then a
        second try waits the rest (a writer sat silent for up to 60 s). A BEGIN refused as busy starts no
        transaction, so trying again is safe. The connection's own busy timeout is restored after."""
        (previous,) = conn.execute("PRAGMA busy_timeout").fetchone()
        first = min(WAIT_NOTICE_S, wait_s)
        try:
            for attempt, timeout in enumerate((first, wait_s - first)):
                conn.execute(f"PRAGMA busy_timeout = {round(timeout * 1000)}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    busy = busy_error(self.path, exc, wait_s, self._wrote)
                    if busy is None:
                        raise
                    if attempt == 1 or wait_s <= first:
                        raise busy from exc
                tell(f"waiting for another process that is writing the library "
                     f"{display_path(str(self.path.parent))} (SQLite's write lock on its database); giving up after "
                     f"{wait_s:g} s")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(previous)}")

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Count one read in progress (what `reads` wraps), so that `close` waits for it. A read starting while
        `close` runs waits for it to end, then opens a new connection: one started between two reads of another
        thread's search was handed the connection being closed ("bad parameter or other API misuse"). A read
        inside a read goes on (its thread holds a count `close` is waiting for)."""
        with self._idle:
            if not getattr(self._mine, "count", 0):
                self._idle.wait_for(lambda: not self._closing)
            self._readers += 1
        self._mine.count = getattr(self._mine, "count", 0) + 1
        try:
            yield
        finally:
            self._mine.count -= 1
            with self._idle:
                self._readers -= 1
                self._idle.notify_all()

    # -- one snapshot -----------------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside one read transaction: every read made in this thread until the block
        ends (through the connection yielded or this store's read methods) sees the database as one moment left
        it. What one answer reads in several statements needs it: each statement alone reads one snapshot, and a
        `tag` run in another process may switch the vocabulary between two of them.

        In WAL mode a read transaction's snapshot is fixed by its first read and held until it ends; writers in
        other processes go on meanwhile (readers never block the writer, and the writer never blocks them). Inside
        a transaction of this thread already (a write, or another snapshot), it is that one's view. A user who
        cannot write the library keeps the connection the snapshot began on until it ends (`conn`): it is reopened
        when its owner changes the file, and a reopen inside the block closed the snapshot's connection under it
        (the next read saw the new state, and the block's end raised "Cannot operate on a closed database").
        No write may start inside a snapshot of the same thread: SQLite refuses a transaction within one."""
        with self.reading(), self.guard():
            conn = self.conn()
            if conn.in_transaction:
                yield conn
                return
            conn.execute("BEGIN")  # deferred: the snapshot is taken by the first read
            try:
                yield conn
            finally:
                with contextlib.suppress(sqlite3.Error):  # closed by `close` meanwhile: ended with it
                    if conn.in_transaction:
                        try:
                            conn.execute("COMMIT")
                        except sqlite3.Error:  # never left open: this thread's next reads would stay in it
                            conn.execute("ROLLBACK")

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Close every thread's connection, once the reads running in other threads have ended (at most `wait_s`).

        A connection closed under a statement another thread was stepping crashed the process inside SQLite (a
        server's search still running in gradio's worker thread when the library closed: a segfault, seen in the
        tests). Transactions hold `_lock`, which this takes first; reads starting meanwhile wait (`reading`)."""
        mine = getattr(self._mine, "count", 0)
        with self._lock:  # no transaction runs while closing (they take `_lock` first too, then may read)
            with self._idle:
                self._closing = True
            try:
                with self._idle:
                    self._idle.wait_for(lambda: self._readers <= mine, timeout=wait_s)
                with self._conns:
                    for _thread, conn in self._all.values():
                        # ProgrammingError: closed from another thread already
                        with contextlib.suppress(sqlite3.ProgrammingError):
                            conn.close()
                    self._all.clear()
                self._local = threading.local()  # (every thread's number goes with it: `_ended` finds none)
            finally:
                with self._idle:
                    self._closing = False
                    self._idle.notify_all()


class _ThreadEnd:
    """Held in one thread's local data of one store: dropped when the thread ends, which closes its connection."""


def _ended(store: weakref.ref[StoreConnection], number: int) -> None:
    """The finaliser of a thread's `_ThreadEnd` (`StoreConnection._own`): run as the thread ends, or as `close`
    drops every thread's local data (then nothing is left to close)."""
    alive = store()
    if alive is not None:
        alive._release(number)


def _alive(thread: threading.Thread | None) -> bool:
    """The main thread counts as alive for good: after `threading._shutdown` (the CLI's fast exit calls it) it says
    it is not, and another thread's backstop closed its connection under it (review 62)."""
    return thread is not None and (thread.is_alive() or thread is threading.main_thread())
