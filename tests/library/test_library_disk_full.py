"""A full disk, a file-size limit or a crash mid-checkpoint is not a damaged library (issue 21, item 3).

A checkpoint copies the write-ahead log into the database file page by page, page 1 (whose
header records the new size) first. Stopped half-way - ENOSPC, `ulimit -f` (EFBIG), kill -9 -
it leaves a file shorter than its header says beside a WAL that still holds every committed
page. SQLite reads that pair whole; the library must too (and finish the checkpoint), while a
short file whose WAL does not complete it stays refused as damaged.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.dbfile import DamagedLibraryError, LibraryWriteError, _truncation


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


_CHECKPOINT = ("import sqlite3, sys\n"
               "conn = sqlite3.connect(sys.argv[1])\n"
               "try:\n    conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')\n"
               "except sqlite3.Error as exc:\n    print(exc)\n")


def _interrupted_checkpoint(tmp_path: Path, tiny_encoder, images_factory, count: int = 12) -> tuple[Path, list[Path]]:
    """A library whose database file was cut short by a checkpoint the kernel stopped (RLIMIT_FSIZE),
    exactly as ENOSPC or a crash in the middle of one leaves it."""
    photos = images_factory(tmp_path / "photos", count)
    live = Library(tmp_path / "live", tiny_encoder)
    live.add(tmp_path / "photos", workers=0, progress=False)
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("library.sqlite3", "library.sqlite3-wal"):  # what a crash leaves: nothing checkpointed yet
        shutil.copy2(tmp_path / "live" / name, lib / name)
    live.close()
    db = lib / "library.sqlite3"
    limit = 32768  # the -shm index (32 KiB) fits, and the first pages of the file, but not all of them
    subprocess.run([sys.executable, "-c", _CHECKPOINT, str(db)], check=True, capture_output=True,
                   preexec_fn=_limit_file_size(limit))
    assert (lib / "library.sqlite3-wal").stat().st_size > 0
    assert (_truncation(db) or "").startswith("truncated"), "the checkpoint must have been stopped half-way"
    return lib, photos


def test_interrupted_checkpoint_is_finished_not_refused(tmp_path, tiny_encoder, images_factory, capsys):
    lib, photos = _interrupted_checkpoint(tmp_path, tiny_encoder, images_factory)
    db = lib / "library.sqlite3"
    assert main(["index", "stats", "--library", str(lib)]) == 0
    out, err = capsys.readouterr()
    assert "12 indexed, 0 failed" in out
    assert err.count("\n") == 1 and err.startswith(f"warning: library database {db} was left half-written")
    assert "nothing was lost" in err and "Traceback" not in err
    assert _truncation(db) is None  # the checkpoint was finished
    assert main(["search", "--image", str(photos[3]), "--library", str(lib), "--top-k", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.split()[1:3] == ["1.0000", str(photos[3])] and err == ""  # recovered once, silent after
    with Library(lib) as library:
        assert library.store.integrity_ok() and len(library.list_images()) == 12


def test_short_file_whose_wal_does_not_complete_it_is_still_damaged(tmp_path, tiny_encoder, images_factory,
                                                                     capsys):
    lib, _ = _interrupted_checkpoint(tmp_path, tiny_encoder, images_factory)
    db, wal = lib / "library.sqlite3", lib / "library.sqlite3-wal"
    wal.write_bytes(bytes(range(256)) * (wal.stat().st_size // 256))  # a WAL SQLite cannot use
    before = db.read_bytes()
    with pytest.raises(DamagedLibraryError, match="is damaged"), Library(lib):
        pass
    assert main(["index", "stats", "--library", str(lib)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"error: library database {db} is damaged")
    assert db.read_bytes() == before


@contextlib.contextmanager
def _small_disk(folder: Path, size: str):
    """A tmpfs of `size` at `folder` (root only; the test is skipped elsewhere)."""
    folder.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here ({exc}); the RLIMIT_FSIZE tests cover the same states")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_disk_during_add_is_one_line_then_every_command_works(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 64)
    with _small_disk(tmp_path / "disk", "200k") as disk:
        lib = disk / "lib"
        args = ["index", "add", str(tmp_path / "photos"), "--library", str(lib), "--model", "test-vit-tiny",
                "--workers", "0", "-q", "--batch-size", "8"]
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: could not write library database {lib / 'library.sqlite3'}: the disk is full")
        assert main(["index", "stats", "--library", str(lib), "--json"]) == 0  # readable, not "damaged"
        out, err = capsys.readouterr()
        kept = int(out.split('"ok": ')[1].split(",")[0])
        assert 0 < kept < 64 and "Traceback" not in err
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)  # space freed
        assert main(args) == 0
        out, _ = capsys.readouterr()
        assert out.startswith(f"added {64 - kept} ")
        with Library(lib) as library:
            assert library.store.integrity_ok() and len(library.list_images()) == 64
            assert _truncation(library.paths.db) is None


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """RLIMIT_FSIZE (`ulimit -f`) for this process; Python ignores SIGXFSZ, so writes fail with EFBIG."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_file_size_limit_stops_add_with_one_line(tmp_path, images_factory, capsys):
    images_factory(tmp_path / "photos", 64)
    lib = tmp_path / "lib"
    with _file_size_limit(200 * 1024):
        code = main(["index", "add", str(tmp_path / "photos"), "--library", str(lib), "--model", "test-vit-tiny",
                     "--workers", "0", "-q", "--batch-size", "8"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: could not write library database {lib / 'library.sqlite3'}: ")
    assert "ulimit -f" in err
    with Library(lib) as library:  # what was committed before is there and whole
        assert library.store.integrity_ok() and 0 < len(library.list_images()) < 64


def test_write_error_is_an_os_error_with_one_sentence(tmp_path):
    from clipforge.library.dbfile import write_error

    full = sqlite3.OperationalError("database or disk is full")
    error = write_error(tmp_path / "library.sqlite3", full)
    assert isinstance(error, LibraryWriteError) and isinstance(error, OSError)
    assert str(error).startswith(f"could not write library database {tmp_path / 'library.sqlite3'}: the disk is full")
    assert write_error(tmp_path / "x", sqlite3.OperationalError("database is locked")) is None


def test_stale_temporary_file_is_not_a_lost_library(tmp_path, tiny_encoder, images_factory):
    """A write the disk stopped leaves `.NAME.PID-XXXX.tmp` beside the target: that is no finished index, so an
    empty database beside it is a new library, and the next save removes it."""
    images_factory(tmp_path / "photos", 2)
    lib = tmp_path / "lib"
    (lib / "index").mkdir(parents=True)
    (lib / "library.sqlite3").write_bytes(b"")
    stale = lib / "index" / ".0123456789abcdef01234567.faiss.999999999-0123abcd.tmp.faiss"
    stale.write_bytes(b"half an index")
    with Library(lib, tiny_encoder) as library:
        assert library.add(tmp_path / "photos", workers=0, progress=False).added == 2
    assert not stale.exists() and len(list((lib / "index").glob("*.faiss"))) == 1
