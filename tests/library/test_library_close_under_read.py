"""Closing a library while another thread reads it: the close waits for the read.

A gradio worker thread still running a search when the server's library closed (a test's fixture ending, a
server shutting down) stepped a statement on a connection closed under it: a segfault inside SQLite, seen in
the server tests; here, the same race ends the read with "Cannot operate on a closed database"."""

from __future__ import annotations

import threading
import time

from clipforge.library.store import Store
from clipforge.library.store_connection import reads


def test_close_waits_for_a_read_running_in_another_thread(tmp_path) -> None:
    store = Store(tmp_path / "library.sqlite3")
    entered, release = threading.Event(), threading.Event()
    got: list[object] = []

    @reads
    def slow_read(self: Store) -> list[tuple[int]]:
        cursor = self.conn().execute("SELECT 1 UNION ALL SELECT 2")
        entered.set()
        release.wait(10)
        return cursor.fetchall()

    def read() -> None:
        try:
            got.append(slow_read(store))
        except Exception as exc:  # noqa: BLE001 - what the race gave, for the assertion
            got.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert entered.wait(10)
    closer = threading.Thread(target=store.close)
    closer.start()
    time.sleep(0.3)
    assert closer.is_alive()  # waiting for the read
    release.set()
    reader.join(10)
    closer.join(10)
    assert got == [[(1,), (2,)]]
    assert store.meta_count("removals") == 0  # closed, then opened again on use, as before


def test_a_read_that_closes_its_own_store_does_not_wait_for_itself(tmp_path) -> None:
    store = Store(tmp_path / "library.sqlite3")

    @reads
    def read_then_close(self: Store) -> int:
        started = time.perf_counter()
        self.close(wait_s=30)
        return int(time.perf_counter() - started)

    assert read_then_close(store) == 0
