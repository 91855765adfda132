"""Writing to a library this user may only read (audit 58, finding 10).

`index add` on a read-only copy taken while a writer had it open blamed the copy's write-ahead log ("which SQLite
reads only from a folder it can write") although `search` had just read it: the folder is read-only, and that is
what the line says now. `Library.add_bytes` raised a bare `PermissionError` naming an uploads sub-folder; it raises
the library's own write error (`LibraryWriteError`, errno EACCES: what the REST answers 403 read_only_library).
The user here runs without root's permission override (`without_root_override`), as any user meets chmod.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from clipforge.library import Library

PHOTO = Path("/work/shared/data/imagenet_sample/images/n01440764_tench.JPEG")


def _read_only(folder: Path) -> dict[Path, int]:
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for path, mode in modes.items():
        path.chmod(mode & ~0o222)
    return modes


def _clipforge(prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "clipforge", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture()
def copied_while_open(tmp_path, tiny_encoder, images_factory) -> Path:
    """A library copied (with SQLite's -shm file, as `cp -a` does) while a writer held writes in its log."""
    images_factory(tmp_path / "photos", 2, formats=("png",))
    with Library(tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    writer = sqlite3.connect(tmp_path / "lib" / "library.sqlite3", isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO meta VALUES ('written_by_test', '1')")
    shutil.copytree(tmp_path / "lib", tmp_path / "libro")
    writer.close()
    assert (tmp_path / "libro" / "library.sqlite3-wal").stat().st_size > 0
    return tmp_path / "libro"


def test_index_add_into_a_read_only_copy_names_the_folder(copied_while_open, tmp_path, images_factory,
                                                          without_root_override) -> None:
    lib = copied_while_open
    images_factory(tmp_path / "one", 1, seed=5, formats=("png",))
    modes = _read_only(lib)
    try:
        found = _clipforge(without_root_override, "search", "a photo", "--library", str(lib), "-k", "1")
        added = _clipforge(without_root_override, "index", "add", str(tmp_path / "one"), "--library", str(lib),
                           "--workers", "0", "-q")
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert found.returncode == 0 and len(found.stdout.splitlines()) == 1, found.stderr  # it can be read
    assert added.returncode == 2 and "Traceback" not in added.stderr, added.stderr
    line = added.stderr.strip().splitlines()[-1]
    assert line == (f"error: cannot write library database {lib / 'library.sqlite3'} (attempt to write a readonly "
                    f"database); the folder {lib} is read-only for this user: give this user write access to {lib} "
                    "and its files, or copy the library to a folder it can write"), line


def test_add_bytes_into_a_read_only_library_raises_the_librarys_write_error(copied_while_open,
                                                                             without_root_override) -> None:
    lib = copied_while_open
    if not PHOTO.is_file():
        pytest.skip(f"real photo {PHOTO} is absent")
    script = (
        "import errno, sys; from clipforge.library import Library\n"
        "from clipforge.library.dbfile import LibraryWriteError\n"
        "lib = Library(sys.argv[1], create=False)\n"
        "try:\n"
        "    lib.add_bytes(open(sys.argv[2], 'rb').read(), 'x.jpg')\n"
        "except LibraryWriteError as exc:\n"
        "    print(type(exc).__name__, exc.errno == errno.EACCES, isinstance(exc, OSError)); print(exc)\n"
    )
    modes = _read_only(lib)
    try:
        done = subprocess.run([*without_root_override, sys.executable, "-c", script, str(lib), str(PHOTO)],
                              capture_output=True, text=True, timeout=120)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "LibraryWriteError True True",
        f"cannot write library {lib}: the folder {lib} is read-only for this user: give this user write access to "
        f"{lib} and its files, or copy the library to a folder it can write",
    ]
    assert not (lib / "uploads").exists()
