"""A stdout that is not UTF-8 (PYTHONIOENCODING=cp1252, a C locale without UTF-8 mode, Windows writing to a file):
results holding a character it lacks are escaped, never lost (stop 63's i18n audit, finding 1: `classify`, `search`,
`index list`, `tag --list` printed nothing, --json included, and exited 2 with Python's bare codec message)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from PIL import Image

from clipforge.cli import stdout_text
from clipforge.cli.common import json_text


def _classify(tmp_path, encoding: str, *extra: str) -> subprocess.CompletedProcess:
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "a.png")
    env = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONUTF8": "0"}
    return subprocess.run([sys.executable, "-m", "clipforge", "classify", str(tmp_path / "a.png"), "--labels",
                           "猫,café", "--model", "clipforge-tiny", *extra], capture_output=True, env=env, timeout=120)


def test_plain_results_on_a_cp1252_stdout_are_escaped_and_said(tmp_path) -> None:
    done = _classify(tmp_path, "cp1252")
    out, err = done.stdout.decode("cp1252"), done.stderr.decode("cp1252")
    assert done.returncode == 0, err
    assert "  \\u732b\n" in out and "  café\n" in out  # what cp1252 has is written as is
    assert err.endswith("notice: stdout's encoding (cp1252) cannot show some characters of this output: they are "
                        "written as \\uXXXX escapes; set PYTHONIOENCODING=utf-8 (or PYTHONUTF8=1) to see them\n"), err


def test_json_on_an_ascii_stdout_is_the_same_values(tmp_path) -> None:
    done = _classify(tmp_path, "ascii", "--json", "--quiet")
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    assert json.loads(done.stdout.decode("ascii"))["results"][0]["labels"] == ["猫", "café"]


def test_json_text_escapes_only_where_stdout_cannot_show_it(monkeypatch) -> None:
    data = {"label": "猫", "path": "bad\udcffname.jpg"}
    assert json_text(data, indent=None) == '{"label": "猫", "path": "bad\\udcffname.jpg"}'  # UTF-8: as it is
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", ascii_out)
    assert json_text(data, indent=None) == '{"label": "\\u732b", "path": "bad\\udcffname.jpg"}'
    assert json_text({"label": "cat"}, indent=None) == '{"label": "cat"}'


def test_a_utf8_stdout_is_left_alone_and_no_notice_without_an_escape(monkeypatch) -> None:
    utf8 = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stdout_text.escape_unshowable_characters(utf8)
    assert utf8.errors == "strict" and stdout_text.escaped_notice() is None
    latin = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    monkeypatch.setattr(sys, "stdout", latin)
    stdout_text.escape_unshowable_characters()
    print("café", file=latin)
    assert stdout_text.escaped_notice() is None  # latin-1 shows é: nothing escaped, nothing said
    print("猫", file=latin)
    latin.flush()
    assert latin.buffer.getvalue() == "café\n\\u732b\n".encode("latin-1")
    assert stdout_text.escaped_notice().startswith("notice: stdout's encoding (latin-1) cannot show")
