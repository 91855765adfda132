"""`clipforge similarity` prints one row per image, whatever the file names hold.

A file named ``a\\nb.png`` printed its tail as a row of its own (and a name whose bytes are not UTF-8 could not be
printed at all); the table now escapes names and texts as `clipforge search` prints paths (`cli.common.one_line`).
"""

from __future__ import annotations

import os
import sys

import pytest
from PIL import Image

from clipforge.cli.main import main


@pytest.mark.skipif(sys.platform == "win32", reason="a newline in a file name is POSIX only")
def test_a_file_name_with_a_newline_is_one_escaped_row(tmp_path, capsys):
    odd, plain = tmp_path / "a\nb.png", tmp_path / "plain.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(odd)
    Image.new("RGB", (32, 24), (30, 30, 200)).save(plain)
    undecodable = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.png")  # Latin-1 bytes, not UTF-8
    Image.new("RGB", (32, 24), (30, 200, 30)).save(undecodable)
    texts = ["a red\nsquare", "a blue square"]
    argv = ["similarity", str(odd), str(plain), undecodable, "--text", *texts, "--model", "test-vit-tiny"]
    assert main([*argv, "--device", "cpu", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4, lines  # the header and one row per image
    assert lines[0].split() == ["a", "red\\nsquare", "a", "blue", "square"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["a\\nb.png", "caf\\xe9.png", "plain.png"]
    assert len({len(line) for line in lines}) == 1  # the columns still line up
