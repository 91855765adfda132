"""What is typed in a C locale (``LC_ALL=C LANG=C PYTHONUTF8=0``) means what it means in a UTF-8 locale (audit 65
portability, finding 2, related items).

Python decodes such a command line as ASCII, so UTF-8 typed there (``--labels 猫,狗``, a Chinese query, a Chinese
folder name) arrives as escaped bytes. Labels and queries were refused as "not valid UTF-8" from a terminal "not
UTF-8" (the bytes were UTF-8; the locale was the problem), `search --in 照片` missed the rows a UTF-8 locale had
stored under that folder, and a missing Chinese file was named as ``\\udce4\\udcb8\\udc8d...``. Each command's output
there is now exactly its output in a UTF-8 locale, with stdout's ``\\uXXXX`` escapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.cli.main import main
from tests.cli.test_s65_c_locale_stdout import _c_locale  # one way to run a command in a C locale


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A Chinese-named folder of two Chinese-named photos, indexed in this (UTF-8) process."""
    root = tmp_path_factory.mktemp("c_locale_args")
    folder = root / "照片"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("金鱼.png", "猫.png"):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    assert main(["index", "add", str(folder), "--library", str(root / "lib"), "--model", "test-vit-tiny", "-q"]) == 0
    return folder


COMMANDS = {
    "classify --labels": ["classify", "{photos}", "--labels", "猫,狗", "--model", "test-vit-tiny", "-q"],
    "similarity --text": ["similarity", "{photos}", "--text", "一只猫", "--text", "金鱼", "--model", "test-vit-tiny",
                          "-q"],
    "search QUERY": ["search", "金鱼 - 猫", "--library", "{lib}", "-q"],
    "search IMAGE": ["search", "{photos}/金鱼.png", "--library", "{lib}", "-q"],
    "search --in": ["search", "fish", "--in", "{photos}", "--library", "{lib}", "-q"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_c_locale_arguments_mean_what_they_mean_in_utf8(photos, capsys, command) -> None:
    args = [a.format(lib=photos.parent / "lib", photos=photos) for a in COMMANDS[command]]
    capsys.readouterr()
    assert main(args) == 0
    in_utf8 = capsys.readouterr().out
    done = _c_locale(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout == in_utf8.encode("ascii", "backslashreplace") and in_utf8.count("\n") >= 2


def test_tag_in_a_c_locale_stores_the_labels_typed(photos, capsys) -> None:
    library = str(photos.parent / "lib")
    done = _c_locale("tag", "--labels", "猫,狗", "--library", library, "-q")
    assert done.returncode == 0, done.stderr
    capsys.readouterr()
    assert main(["tag", "--list", "--library", library]) == 0
    listed = capsys.readouterr().out
    assert "猫" in listed and "狗" in listed


def test_a_missing_chinese_file_is_named_as_its_text(photos, capsys) -> None:
    missing = str(photos / "不在.png")
    capsys.readouterr()
    assert main(["classify", missing, "--labels", "cat", "--model", "test-vit-tiny", "-q"]) == 2
    in_utf8 = capsys.readouterr().err
    assert in_utf8 == f"error: no such file or folder: {missing}\n"
    done = _c_locale("classify", missing, "--labels", "cat", "--model", "test-vit-tiny", "-q")
    assert (done.returncode, done.stderr) == (2, in_utf8.encode("ascii", "backslashreplace"))  # not \udce4\udcb8...
