"""`clipforge index copy` given careless input: each mistake is one line naming the flag or file, exit 2, and
nothing written at the destination (embedded to embedded: no Milvus needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.library import Library


@pytest.fixture()
def lib(tmp_path, tiny_encoder, images_factory) -> Path:
    """A library of three photos and one file that failed."""
    images_factory(tmp_path / "photos", 3)
    (tmp_path / "photos" / "junk.png").write_bytes(b"not an image")
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    return tmp_path / "lib"


def _refused(capfd, argv: list[str], words: str) -> None:
    assert main(["index", "copy", "-q", *argv]) == 2, argv
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err, (argv, err)


def test_bad_destinations_and_sizes_name_their_flag_and_write_nothing(tmp_path, lib, capfd, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("hi")
    new = tmp_path / "new"
    cases = {
        # a batch no SQLite integer holds: was a traceback (OverflowError), after the destination was made
        ("--to-library", str(new), "--batch-size", str(10**20)): "--batch-size must be a whole number from 1 to",
        ("--to-library", "afile"): "--to-library afile: afile is a file",  # was "give --library a folder"
        ("--to-library", "afile/sub"): "--to-library afile/sub: afile is a file",
        ("--to", "milvus-lite:afile"): "--to 'milvus-lite:afile': a milvus-lite path must end in .db",  # was --store
        ("--to-library", "./lib/"): "is both the source and the destination: name another --to-library",
    }
    for argv, words in cases.items():
        _refused(capfd, ["--library", "lib", *argv], words)
    assert not new.exists() and (tmp_path / "afile").read_text() == "hi"


def test_a_damaged_source_is_one_line_naming_its_database(tmp_path, lib, capfd) -> None:
    db = lib / "library.sqlite3"
    with Library(lib) as library:  # everything in the database file, nothing in a -wal beside it
        conn = library.store.conn()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [r[0] for r in conn.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'embeddings'")]
    data = bytearray(db.read_bytes())
    for page in pages:  # the vectors' table and its indexes overwritten (the header and the schema are intact)
        data[(page - 1) * size:page * size] = b"\xff" * size
    db.write_bytes(bytes(data))
    _refused(capfd, ["--library", str(lib), "--to-library", str(tmp_path / "new")], "library.sqlite3 is damaged")
    assert not (tmp_path / "new").exists()
    # `index stats` on the same file: one line as well (it reads the model spaces through the same guarded store)
    assert main(["index", "stats", "--library", str(lib)]) == 2
    err = capfd.readouterr().err
    assert "library.sqlite3 is damaged" in err and "Traceback" not in err, err[-500:]


def test_the_summary_counts_in_english(tmp_path, lib, capsys) -> None:
    assert main(["index", "copy", "-q", "--library", str(lib), "--to-library", str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out.startswith(  # was "1 failed records, 0 tag vocabularys"
        "copied 1 model space (4 files, 1 failed record, 0 tag vocabularies) from library ")


def test_a_label_longer_than_milvus_holds_is_refused_before_a_copy_into_milvus(tmp_path, lib, capfd) -> None:
    """A label of 171 Chinese characters (513 bytes) was copied into milvus-lite, which stores it; a Milvus
    server refuses such rows, and the copied vocabulary would fail every later `index add` there."""
    pytest.importorskip("milvus_lite")
    label = "猫" * 171
    with Library(lib) as library:
        library.classify(f"{label}, dog", progress=False)
    target = tmp_path / "m.db"
    _refused(capfd, ["--library", str(lib), "--to", f"milvus-lite:{target}"],
             "cannot go to milvus-lite:")
    assert not target.exists()
    main(["index", "copy", "-q", "--library", str(lib), "--to", f"milvus-lite:{target}"])
    err = capfd.readouterr().err
    assert "is 513 bytes in UTF-8; a Milvus library stores labels of at most 512 bytes" in err, err
