"""A library whose tags live under a `tag_rows:` key is schema version 2 (audit 60 upgrader, finding 1).

Since the Dec 6 release `clipforge tag` writes a model space's tags under `<fingerprint>#<n>` and names them by the
meta key `tag_rows:<fingerprint>`, but `PRAGMA user_version` stayed 1: a Dec 4/5 release opened such a library
without a word, found no tags (it reads them under the fingerprint) and wrote tags HEAD then ignored. Now the
transaction that first writes such a key sets version 2, which those releases refuse in one line; a new library is
still created at 1 (shareable until it is tagged), and a writable version-1 library holding the key (written by the
Dec 6 release) is raised to 2 when opened. The older release is played by `schema.SCHEMA_VERSION = 1`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipforge.library import schema
from clipforge.library.store import Store
from clipforge.library.transaction import TAG_ROWS_KEY, VOCABULARY_KEY

LABELS = ["cat", "dog"]


def _version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _meta_keys(db: Path, prefix: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT key FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))]
    finally:
        conn.close()


def _untagged(db: Path, encoder, photos: int = 4) -> None:
    """A library of `photos` photos (random unit vectors under `encoder`'s fingerprint), never tagged."""
    rng = np.random.default_rng(0)
    store = Store(db)
    try:
        with store.transaction() as tx:
            tx.ensure_model(encoder.fingerprint, "test-vit-tiny", int(encoder.embed_dim))
            for number in range(photos):
                sha = hashlib.sha256(str(number).encode()).hexdigest()
                tx.upsert_image(f"/photos/p{number}.jpg", sha, 1, 1, 8, 8, "ok", None)
                vector = rng.standard_normal(int(encoder.embed_dim)).astype(np.float32)
                tx.insert_embedding(sha, encoder.fingerprint, vector / np.linalg.norm(vector))
    finally:
        store.close()


def _as_dec6_left_it(db: Path) -> None:
    """What the Dec 6 release left after `tag`: the same rows and keys, at version 1."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()
    assert _version(db) == 1


def test_a_tagged_library_is_version_2_and_an_untagged_new_one_version_1(tmp_path, tiny_encoder,
                                                                          tagged_vector_store) -> None:
    _untagged(tmp_path / "plain.sqlite3", tiny_encoder)
    assert _version(tmp_path / "plain.sqlite3") == 1  # shareable with every older release
    store = tagged_vector_store(tmp_path / "tagged.sqlite3", 6, LABELS)
    try:
        fingerprint = tiny_encoder.fingerprint
        assert store.tag_rows(fingerprint) == f"{fingerprint}#1"  # the layout older releases cannot read
        assert sum(store.tag_counts(fingerprint).values()) == 6  # each photo counted by its first tag
    finally:
        store.close()
    assert _meta_keys(tmp_path / "tagged.sqlite3", TAG_ROWS_KEY) == [TAG_ROWS_KEY + fingerprint]
    assert _version(tmp_path / "tagged.sqlite3") == 2


def test_the_version_and_the_key_roll_back_together(tmp_path, tiny_encoder) -> None:
    db = tmp_path / "library.sqlite3"
    _untagged(db, tiny_encoder)
    store = Store(db)
    try:
        with pytest.raises(RuntimeError, match="stop"), store.transaction() as tx:
            tx.switch_tags(tiny_encoder.fingerprint, tiny_encoder.fingerprint + "#1", '{"labels": ["cat"]}')
            assert tx.execute("PRAGMA user_version").fetchone()[0] == 2  # set inside the transaction
            raise RuntimeError("stop")
    finally:
        store.close()
    assert _version(db) == 1 and _meta_keys(db, TAG_ROWS_KEY) == []


_SWITCH = """
import os, signal, sys
from clipforge.library.store import Store
store = Store(sys.argv[1])
with store.transaction() as tx:
    tx.switch_tags(sys.argv[2], sys.argv[2] + "#1", '{"labels": ["cat"]}')
    if sys.argv[3] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
store.close()
"""


@pytest.mark.parametrize("end", ["kill", "commit"])
def test_a_kill_before_the_commit_leaves_version_1_without_the_key(tmp_path, tiny_encoder, end) -> None:
    db = tmp_path / "library.sqlite3"
    _untagged(db, tiny_encoder)
    done = subprocess.run([sys.executable, "-c", _SWITCH, str(db), tiny_encoder.fingerprint, end],
                          capture_output=True, text=True, timeout=60)
    if end == "kill":
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert _version(db) == 1 and _meta_keys(db, TAG_ROWS_KEY) == []
    else:
        assert done.returncode == 0, done.stderr
        assert _version(db) == 2 and _meta_keys(db, TAG_ROWS_KEY) == [TAG_ROWS_KEY + tiny_encoder.fingerprint]


def test_a_version_1_library_holding_a_tag_rows_key_is_raised_to_2_when_opened(tmp_path, tiny_encoder,
                                                                               tagged_vector_store) -> None:
    db = tmp_path / "library.sqlite3"
    tagged_vector_store(db, 5, LABELS).close()
    _as_dec6_left_it(db)
    store = Store(db)
    try:
        assert _version(db) == 2  # committed at open
        assert sum(store.tag_counts(tiny_encoder.fingerprint).values()) == 5  # the same tags read
    finally:
        store.close()


def test_a_version_1_library_without_the_key_stays_1_when_opened(tmp_path, tiny_encoder) -> None:
    db = tmp_path / "library.sqlite3"
    _untagged(db, tiny_encoder)
    conn = sqlite3.connect(db, isolation_level=None)  # tags in the old layout (under the fingerprint), a vocabulary
    conn.execute("INSERT INTO tags VALUES (1, ?, 'cat', 0.9, 0)", (tiny_encoder.fingerprint,))
    conn.execute("INSERT INTO meta VALUES (?, '{}')", (VOCABULARY_KEY + tiny_encoder.fingerprint,))
    conn.close()
    Store(db).close()
    assert _version(db) == 1


_READ = """
import sys
from clipforge.library.store import Store
store = Store(sys.argv[1], create=False)
print(store.conn().execute("PRAGMA user_version").fetchone()[0], store.read_only,
      sum(store.tag_counts(sys.argv[2]).values()))
store.close()
"""


def test_a_read_only_version_1_library_with_the_key_is_read_as_it_is(tmp_path, tiny_encoder, tagged_vector_store,
                                                                      without_root_override) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    db = lib / "library.sqlite3"
    tagged_vector_store(db, 5, LABELS).close()
    _as_dec6_left_it(db)
    modes = {p: p.stat().st_mode for p in [lib, *lib.iterdir()]}
    for path, mode in modes.items():
        path.chmod(mode & ~0o222)
    try:
        done = subprocess.run([*without_root_override, sys.executable, "-c", _READ, str(db),
                               tiny_encoder.fingerprint], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True", "5"]  # no error, the tags read, the file left at version 1
    assert _version(db) == 1


def test_an_older_release_refuses_a_version_2_library_in_one_line(tmp_path, tiny_encoder, tagged_vector_store,
                                                                   monkeypatch) -> None:
    tagged_vector_store(tmp_path / "tagged.sqlite3", 3, LABELS).close()
    _untagged(tmp_path / "plain.sqlite3", tiny_encoder)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 1)  # a release from before the tag_rows layout
    with pytest.raises(schema.SchemaError) as refused:
        Store(tmp_path / "tagged.sqlite3")
    assert str(refused.value) == (f"{tmp_path / 'tagged.sqlite3'}: library schema version 2 is newer than this "
                                  "clipforge understands (1); upgrade clipforge")
    Store(tmp_path / "plain.sqlite3").close()  # an untagged library is still shared
    assert _version(tmp_path / "plain.sqlite3") == 1


def test_version_3_is_refused_and_version_2_opens_as_it_is(tmp_path, tiny_encoder, tagged_vector_store) -> None:
    db = tmp_path / "library.sqlite3"
    tagged_vector_store(db, 3, LABELS).close()
    conn = sqlite3.connect(db)
    tables = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    Store(db).close()  # version 2: no DDL run
    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == tables
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with pytest.raises(schema.SchemaError) as refused:
        Store(db)
    assert str(refused.value) == (f"{db}: library schema version 3 is newer than this clipforge understands (2); "
                                  "upgrade clipforge")


def test_index_stats_reports_the_files_version_not_the_codes(tmp_path, images_factory, capsys) -> None:
    """`index stats --json` said `schema_version` 2 (this clipforge's newest) of a version-1 library."""
    import json

    from clipforge.cli.main import main

    images_factory(tmp_path / "photos", 3, formats=("png",))
    lib = ["--library", str(tmp_path / "lib")]
    assert main(["index", "add", str(tmp_path / "photos"), *lib, "--model", "test-vit-tiny", "--workers", "0",
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["index", "stats", "--json", *lib]) == 0
    assert json.loads(capsys.readouterr().out)["schema_version"] == 1
    assert main(["tag", "--labels", "red,blue", "--templates", "simple", *lib, "-q"]) == 0
    capsys.readouterr()
    assert main(["index", "stats", "--json", *lib]) == 0
    assert json.loads(capsys.readouterr().out)["schema_version"] == 2


def test_opening_does_not_wait_for_another_writer_to_mark_the_library(tmp_path, tiny_encoder,
                                                                      tagged_vector_store) -> None:
    """The mark at open waited for another process's write (the 60 s busy timeout, then a traceback), so a
    `search` queued behind a `tag` of another process: it is left for the next open."""
    import time

    db = tmp_path / "library.sqlite3"
    tagged_vector_store(db, 5, LABELS).close()
    _as_dec6_left_it(db)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process's write, held
    try:
        start = time.monotonic()
        store = Store(db)
        try:
            assert time.monotonic() - start < 10  # not the busy timeout
            assert sum(store.tag_counts(tiny_encoder.fingerprint).values()) == 5  # read as it is
        finally:
            store.close()
        assert _version(db) == 1
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    Store(db).close()
    assert _version(db) == 2  # the next open marks it
