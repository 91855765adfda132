"""`classify` and `similarity` show hostile file names as `search` and `index list` do, and name what they skip
(audit 63, findings 4-7).

- 4: `classify` printed names raw: a newline split a result in two lines, an ESC sequence reached the terminal, a
  name that is not UTF-8 was written as its raw bytes; now `one_line(display_path(...))`, results and "skipped" lines.
- 5: the "folder(s) that could not be read" warning printed folder names raw (and a not-UTF-8 byte as ``\\udcff``).
- 6: a folder walk dropped FIFOs, sockets and device files without a word (`errors` was empty) and called a folder
  holding only such entries one that "holds no image files".
- 7: `--json` wrote a name that is not UTF-8 as a lone surrogate (``"\\udcff"``, U+FFFD to most readers: a name that
  opens nothing), not as the documented ``b64:`` form of `search --json`, `index list --json` and `embed`.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.cli.main import main

TINY = ["--model", "test-vit-tiny", "--device", "cpu", "-q"]
CLASSIFY = ["--labels", "cat,dog", "-k", "1", *TINY]
SIMILARITY = ["--text", "a cat", "--text", "a dog", *TINY]


def _photo(path: str | Path, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as handle:  # `path` may be a name that is not UTF-8 (surrogate escapes)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(handle, format="JPEG")
    return os.fspath(path)


def _b64(path: str) -> str:
    return "b64:" + base64.b64encode(os.fsencode(path)).decode("ascii")


def _hostile_names(folder: Path) -> dict[str, str]:
    folder.mkdir()
    names = {"bad": os.fsdecode(b"bad\xffname.jpg"), "esc": "esc\x1b[31mred.jpg", "new": "new\nline.jpg"}
    paths = {key: _photo(folder / name, seed) for seed, (key, name) in enumerate(names.items())}
    paths["broken"] = str(folder / "broken\nfile.jpg")
    Path(paths["broken"]).write_bytes(b"not a photo at all")
    return paths


def test_classify_prints_each_name_on_one_line_escaped(tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    _hostile_names(folder)
    assert main(["classify", str(folder), *CLASSIFY]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line for line in lines if not line.startswith("  ")] == [
        f"{folder}/bad\\xffname.jpg", f"{folder}/esc\\x1b[31mred.jpg", f"{folder}/new\\nline.jpg"]
    assert len(lines) == 6 and "\x1b" not in captured.out and "\udcff" not in captured.out
    assert captured.err == f"skipped {folder}/broken\\nfile.jpg: not an image (unrecognised or unsupported format)\n"
    # named outright, as the audit gave it: the same spelling
    assert main(["classify", str(folder / "broken\nfile.jpg"), *CLASSIFY]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        f"skipped {folder}/broken\\nfile.jpg: not an image (unrecognised or unsupported format)")


def test_the_unreadable_folders_warning_escapes_their_names(tmp_path, monkeypatch, capsys) -> None:
    """Mode-000 folders, simulated by their listing failing as EACCES does (the suite may run as root)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.jpg")
    locked = [str(folder / "no\nperm\x1b[2J"), os.fsdecode(os.fsencode(folder) + b"/x\xffy")]
    for name in locked:
        os.mkdir(name)
        _photo(os.path.join(name, "hidden.jpg"))
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) in locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["classify", str(folder), *CLASSIFY]) == 0
    err = capsys.readouterr().err
    assert err == ("warning: skipped 2 folder(s) that could not be read, with whatever photos they hold: "
                   f"{folder}/no\\nperm\\x1b[2J (permission denied); {folder}/x\\xffy (permission denied)\n")


def _special_files(folder: Path, monkeypatch) -> list[tuple[str, str]]:
    """A FIFO, a socket and a link to /dev/zero, each named like a photo, with the reasons `index add` records."""
    folder.mkdir()
    os.mkfifo(folder / "fifo.jpg")
    monkeypatch.chdir(folder)  # a socket's path is limited to ~108 bytes: bound by its short relative name
    server = socket.socket(socket.AF_UNIX)
    server.bind("sock.jpg")
    server.close()
    os.symlink("/dev/zero", folder / "zero.jpg")
    return [(f"{folder}/fifo.jpg", "not a regular file (a FIFO)"),
            (f"{folder}/sock.jpg", "not a regular file (a socket)"),
            (f"{folder}/zero.jpg", "not a regular file (a character device)")]


@pytest.mark.parametrize("command", ["classify", "similarity"])
def test_a_folder_walk_names_the_special_files_it_skips(command, tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "cl"
    special = _special_files(folder, monkeypatch)
    ok = _photo(folder / "ok.jpg")
    flags = CLASSIFY if command == "classify" else SIMILARITY
    skipped = "".join(f"skipped {path}: {reason}\n" for path, reason in special)
    assert main([command, str(folder), *flags]) == 0
    assert capsys.readouterr().err == skipped
    assert main([command, str(folder), *flags, "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["errors"] == [{"image": path, "error": reason} for path, reason in special]
    assert ([r["image"] for r in out["results"]] if command == "classify" else out["images"]) == [ok]
    assert captured.err == skipped
    # only such entries: the folder is said to hold them, not to hold no image files
    os.remove(ok)
    assert main([command, str(folder), *flags]) == 2
    assert capsys.readouterr().err == (
        f"error: folder {folder} holds no image file that can be read: fifo.jpg is not a regular file (a FIFO), "
        "sock.jpg is not a regular file (a socket), zero.jpg is not a regular file (a character device)\n")


def test_json_writes_a_name_that_is_not_utf8_as_b64(tmp_path, capsys) -> None:
    good = _photo(os.fsdecode(os.fsencode(tmp_path) + b"/bad\xffname.jpg"))
    broken = os.fsdecode(os.fsencode(tmp_path) + b"/gone\xfe.jpg")
    Path(broken).write_bytes(b"")
    assert main(["classify", good, broken, *CLASSIFY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["results"]] == [_b64(good)]
    assert out["errors"] == [{"image": _b64(broken), "error": "file is empty (0 bytes)"}]
    assert main(["similarity", good, broken, *SIMILARITY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == [_b64(good)]
    assert out["errors"] == [{"image": _b64(broken), "error": "file is empty (0 bytes)"}]
    # a UTF-8 name is itself
    plain = _photo(tmp_path / "plain.jpg")
    assert main(["classify", plain, *CLASSIFY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["image"] == plain


@pytest.mark.parametrize("name, shown", [
    ("写真\u30001.jpg", "写真\u30001.jpg"),  # an ideographic space, typed by a Japanese IME: shown (review 63)
    ("\U0001F468\u200d\U0001F469\u200d\U0001F467.jpg", "\U0001F468\u200d\U0001F469\u200d\U0001F467.jpg"),  # joiners
    ("nbsp\xa0x.jpg", "nbsp\xa0x.jpg"),
    ("new\nline.jpg", "new\\nline.jpg"),
    ("esc\x1b[31mred.jpg", "esc\\x1b[31mred.jpg"),
    ("photo\u202egnp.exe", "photo\\u202egnp.exe"),  # a bidi override: shows exe.jpg
    ("a\u2028b.jpg", "a\\u2028b.jpg"),  # a line separator
])
def test_one_line_escapes_what_a_terminal_acts_on_and_shows_the_rest(name: str, shown: str) -> None:
    from clipforge.cli.common import one_line

    assert one_line(name) == shown
