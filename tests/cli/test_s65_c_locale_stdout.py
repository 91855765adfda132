"""In a C locale (``LC_ALL=C LANG=C PYTHONUTF8=0``) results holding a character ASCII lacks are escaped, never lost
(audit 65 portability, finding 2).

Python gives such a stdout the ``surrogateescape`` error handler, not ``strict``, and `escape_unshowable_characters`
reconfigured only a strict one: `search`, `index list` and `classify` printed nothing and exited 2 with Python's bare
codec message, and `index stats` failed after its table. Each command's output there is now exactly its output in a
UTF-8 locale with ``\\uXXXX`` escapes, followed by the one notice; a byte Python could not decode (a surrogate escape)
is still written back as that byte, as the stream did.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.cli import stdout_text
from clipforge.cli.main import main

NOTICE = ("notice: stdout's encoding (ascii) cannot show some characters of this output: they are written as \\uXXXX "
          "escapes; set PYTHONIOENCODING=utf-8 (or PYTHONUTF8=1) to see them\n")


def _c_locale(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    return subprocess.run([sys.executable, "-m", "clipforge", *args], capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two Chinese-named photos and a Chinese-named file that is no image, indexed in this (UTF-8) process."""
    root = tmp_path_factory.mktemp("c_locale")
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("金鱼.png", "鱼 照片.png"):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    (folder / "坏的.png").write_bytes(b"notanimage")
    assert main(["index", "add", str(folder), "--library", str(root / "lib"), "--model", "test-vit-tiny", "-q"]) == 0
    return folder


COMMANDS = {
    "search": ["search", "fish", "--library", "{lib}"],
    "index list": ["index", "list", "--library", "{lib}"],
    "index stats": ["index", "stats", "--library", "{lib}"],
    "classify": ["classify", "{photos}", "--labels", "cat,dog", "--model", "test-vit-tiny"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_c_locale_output_is_the_utf8_output_escaped(photos, capsys, command) -> None:
    args = [a.format(lib=photos.parent / "lib", photos=photos) for a in COMMANDS[command]]
    capsys.readouterr()
    main(args)
    in_utf8 = capsys.readouterr().out
    assert "鱼" in in_utf8 or "坏" in in_utf8  # the output holds a name ASCII cannot show
    done = _c_locale(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout == in_utf8.encode("ascii", "backslashreplace")
    assert done.stderr.decode("ascii").endswith(NOTICE)


def test_a_surrogateescape_stream_writes_undecodable_bytes_back_and_escapes_the_rest() -> None:
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="surrogateescape")
    stdout_text.escape_unshowable_characters(ascii_out)
    ascii_out.write("caf\udce9 ")
    ascii_out.flush()
    assert stdout_text.escaped_notice() is None  # a byte written back is no escape: nothing to say
    ascii_out.write("\u91d1\udcff!\n")
    ascii_out.flush()
    assert ascii_out.buffer.getvalue() == b"caf\xe9 \\u91d1\xff!\n"
    assert stdout_text.escaped_notice() is not None


def test_index_list_json_is_json_in_a_c_locale_past_the_basic_plane(tmp_path) -> None:
    """`index list --json` printed `json.dumps(ensure_ascii=False)` itself, not the CLI's one `json_text`: in a C locale
    the escaping of stdout wrote a character past U+FFFF (an emoji in a name) as ``\\U0001f41f``, which JSON has no
    such escape for, so a script's `json.loads` failed on that line. Every --json goes through `json_text` now
    (`eval --json` printed the same way)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(folder / "鱼🐟.png")
    library = str(tmp_path / "lib")
    assert main(["index", "add", str(folder), "--library", library, "--model", "test-vit-tiny", "-q"]) == 0
    done = _c_locale("index", "list", "--library", library, "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.decode("ascii").splitlines()]
    assert [row["path"] for row in rows] == [str(folder / "鱼🐟.png")]
