"""A library's file names mean the same files in every locale (audit 65 portability, finding 1).

A library indexed in a UTF-8 locale stores a name that is valid UTF-8 as text. In a locale whose codec is not UTF-8
(``LC_ALL=C LANG=C PYTHONUTF8=0``: Python's file-system encoding is then ASCII) that text was handed to the OS as a
`str`, which Python encodes with the locale's codec: the call failed, `os.path.exists` answered False, and
`index prune` forgot every photo with a Chinese name while the files were on disk; `search` called them "no longer on
disk". A stored name now becomes its file's bytes by UTF-8 (`dbfile.from_db`, `text_path`), and a file's bytes
become the stored text by UTF-8 (`to_db`, `path_text`), whatever the locale; a name the OS cannot be given is an
error, never a file that is gone (`dbfile.file_exists`).

Each locale is a real process: the C-locale commands run in a subprocess, the UTF-8 ones in this one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from clipforge.cli.main import main
from clipforge.library.store import Store

C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
NAMES = ["金鱼.png", "鱼 照片.png"]


def _c_locale(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **C_LOCALE}
    env.pop("PYTHONIOENCODING", None)
    return subprocess.run([sys.executable, *args], capture_output=True, env=env, timeout=120)


def _indexed_in_utf8(tmp_path: Path) -> tuple[Path, list[str]]:
    """A library of two Chinese-named photos, indexed in this (UTF-8) process; the photos' paths."""
    assert sys.getfilesystemencoding() == "utf-8"
    folder = tmp_path / "photos"  # a folder that is there: a name the OS is not given is "missing" (search)
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    library = tmp_path / "lib"
    assert main(["index", "add", str(folder), "--library", str(library), "--model", "test-vit-tiny", "--quiet"]) == 0
    return library, sorted(str(folder / name) for name in NAMES)


def _stored(library: Path) -> list[tuple[str, str]]:
    store = Store(library / "library.sqlite3", create=False)
    try:
        return sorted((record.path, record.status) for record in store.list_images())
    finally:
        store.close()


def test_prune_in_a_c_locale_forgets_nothing_that_is_on_disk(tmp_path) -> None:
    library, paths = _indexed_in_utf8(tmp_path)
    done = _c_locale("-m", "clipforge", "index", "prune", "--library", str(library))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"pruned 0 images whose files are gone\n", b"")
    assert _stored(library) == [(path, "ok") for path in paths]


def test_search_in_a_c_locale_finds_the_photos_and_calls_none_missing(tmp_path) -> None:
    library, paths = _indexed_in_utf8(tmp_path)
    done = _c_locale("-m", "clipforge", "search", "fish", "--library", str(library), "--paths")
    assert (done.returncode, done.stderr) == (0, b"")
    assert sorted(done.stdout.splitlines()) == [os.fsencode(path) for path in paths]  # raw bytes that open


def test_search_json_names_a_file_by_the_same_text_in_every_locale(tmp_path, capsys) -> None:
    library, paths = _indexed_in_utf8(tmp_path)
    capsys.readouterr()
    assert main(["search", "fish", "--library", str(library), "--json", "--quiet"]) == 0
    in_utf8 = json.loads(capsys.readouterr().out)["results"]
    done = _c_locale("-m", "clipforge", "search", "fish", "--library", str(library), "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    in_c = json.loads(done.stdout.decode("ascii"))["results"]
    assert sorted(result["path"] for result in in_c) == sorted(result["path"] for result in in_utf8) == paths
    assert not any(result["missing"] for result in in_c)


def test_a_library_indexed_in_a_c_locale_stores_the_text_a_utf8_locale_stores(tmp_path, capsys) -> None:
    _, paths = _indexed_in_utf8(tmp_path)
    library = tmp_path / "lib_c"
    done = _c_locale("-m", "clipforge", "index", "add", os.path.dirname(paths[0]), "--library", str(library),
                     "--model", "test-vit-tiny", "--quiet")
    assert done.returncode == 0, done.stderr
    assert _stored(library) == [(path, "ok") for path in paths]
    with sqlite3.connect(library / "library.sqlite3") as db:  # text, not bytes: the form a UTF-8 locale looks up
        assert db.execute("SELECT DISTINCT typeof(path) FROM images").fetchall() == [("text",)]
    done = _c_locale("-m", "clipforge", "search", "fish", "--library", str(library), "--json", "--quiet")
    assert sorted(result["path"] for result in json.loads(done.stdout.decode("ascii"))["results"]) == paths


def test_index_add_in_a_c_locale_knows_the_photos_indexed_in_utf8(tmp_path) -> None:
    library, paths = _indexed_in_utf8(tmp_path)
    folder = os.path.dirname(paths[0])
    done = _c_locale("-m", "clipforge", "index", "add", folder, "--library", str(library), "--quiet")
    assert done.returncode == 0, done.stderr
    assert b"added 0 files, updated 0, relinked 0, skipped 2 unchanged" in done.stderr + done.stdout
    assert _stored(library) == [(path, "ok") for path in paths]  # no second record in another form


def test_names_are_stored_alike_in_every_locale(tmp_path) -> None:
    """What the C locale stores for a Chinese name is the text a UTF-8 locale stores, and it reads back as the
    name that opens the file there; a name that is not UTF-8 stays its bytes in both."""
    code = ("import os, sys; from clipforge.library.dbfile import from_db, path_text, text_path, to_db; "
            "name = os.fsdecode(sys.argv[1].encode('ascii', 'surrogateescape')); "
            "print(ascii([to_db(name), path_text(name), from_db(to_db(name)) == name, text_path(path_text(name)) == name,"
            " from_db('\\u91d1\\u9c7c.png') == name, text_path('\\u91d1\\u9c7c.png') == name]))")
    done = _c_locale("-c", code, "金鱼.png")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("ascii") == ascii(["金鱼.png", "金鱼.png", True, True, True, True]) + "\n"
    latin = _c_locale("-c", code.replace("from_db('\\u91d1\\u9c7c.png') == name, text_path('\\u91d1\\u9c7c.png') == name", "0, 0"),
                      os.fsdecode(b"caf\xe9.png"))
    assert latin.stdout.decode("ascii") == ascii([b"caf\xe9.png", "b64:Y2Fm6S5wbmc=", True, True, 0, 0]) + "\n"


def test_a_name_the_os_cannot_be_given_is_an_error_not_a_missing_file(tmp_path) -> None:
    code = ("from clipforge.library.dbfile import file_exists\n"
            "try:\n    file_exists(" + ascii(str(tmp_path / "猫.jpg")) + ")\n"
            "except ValueError as exc:\n    print(ascii(str(exc)))\n")
    done = _c_locale("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("ascii") == ascii(
        f"cannot look for {tmp_path}/猫.jpg on disk: its name holds characters this process's file-system encoding "
        "(ascii) cannot write (a locale that is not UTF-8, such as LC_ALL=C with PYTHONUTF8=0); run it in a UTF-8 "
        "locale (LC_ALL=C.UTF-8) or with PYTHONUTF8=1") + "\n"
