"""docs/zh-CN.md stays true: its commands parse, its install block is the README's, its GBK error is the real one.

The Chinese quick start pastes commands and their output; like `test_the_readme_query_arithmetic_example_works_as_written`
and the reference-numbers page check, these tests fail when the CLI or a message changes under the doc.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from clipforge.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "zh-CN.md"
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _doc_commands() -> list[list[str]]:
    """Every `clipforge ...` line of the doc's bash blocks as argv, after `VAR=value` prefixes, before a redirect."""
    commands = []
    for block in _blocks(DOC.read_text(encoding="utf-8"), "bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words and _ASSIGNMENT.match(words[0]):
                words = words[1:]
            if words[:1] == ["clipforge"]:
                stop = next((i for i, w in enumerate(words) if w in {"|", ">", "2>", ">>"}), len(words))
                commands.append(words[1:stop])
    return commands


def test_every_clipforge_command_in_the_chinese_doc_parses() -> None:
    commands = _doc_commands()
    assert len(commands) >= 30, len(commands)  # the extraction found the doc's commands, not nothing
    parser = build_parser()
    for argv in commands:
        if argv == ["--version"]:
            continue  # argparse's version action exits; test_version covers it
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"docs/zh-CN.md: `clipforge {shlex.join(argv)}` does not parse (exit {exc.code})")


def test_the_install_block_is_the_readmes() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = next(b for b in _blocks(readme, "bash") if b.startswith("python3 -m venv .venv"))
    assert install in _blocks(DOC.read_text(encoding="utf-8"), "bash")
    assert "中文说明: [docs/zh-CN.md](docs/zh-CN.md)" in readme.splitlines()[:5]


def test_the_gbk_error_and_iconv_line_are_what_clipforge_says(tmp_path, monkeypatch) -> None:
    from clipforge.text.labels import TextFileError
    from clipforge.zeroshot.files import read_labels_file

    monkeypatch.chdir(tmp_path)
    Path("labels-gbk.txt").write_bytes("猫\n狗\n飞机\n".encode("gbk"))
    with pytest.raises(TextFileError) as info:
        read_labels_file("labels-gbk.txt")
    doc = DOC.read_text(encoding="utf-8")
    assert f"error: {info.value}\n" in doc
    assert "iconv -f GB18030 -t UTF-8 labels-gbk.txt > labels-gbk.utf8.txt\n" in doc
