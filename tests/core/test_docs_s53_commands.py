"""README.md and docs/*.md stay true to the CLI: every `clipforge` command line they show parses, and every
`--flag` they name is one some command (or another tool the docs show) takes.

`tests/chinese/test_zh_doc.py` did this for docs/zh-CN.md alone; the English pages drifted unchecked (a flag
renamed under a doc is only found by a user pasting it). Parsing is argparse's own, with abbreviations off: the
docs must spell each flag in full, so `--top 3` for `--top-k 3` fails here although argparse would accept it.
Nothing is run and no data or weights are needed: a command that names /data/imagenet or ViT-L/14 still parses.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipforge.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.S)
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_SHELL_STOP = {"|", ">", "2>", ">>", "&", "&&", "||", ";"}
_CLIPFORGE = {"clipforge", ".venv/bin/clipforge"}
_PYTHONS = {"python", "python3", ".venv/bin/python"}
_PLACEHOLDERS = {"N": "1"}  # `[--limit N]`: a metavar standing for a number
# Flags of the other programs the docs show beside clipforge (pip, torchrun, pytest, schemathesis, clip_benchmark, docker).
_OTHER_TOOLS = {
    "--no-deps",
    "--index-url",  # pip's: the CPU build of torch
    "--notest",  # convmv's: rename GBK file names
    "--shm-size",  # docker run's: a bigger /dev/shm for decoding workers
    "--nproc",
    "--nproc-per-node",
    "--nnodes",
    "--node-rank",
    "--master",
    "--rdzv-backend",
    "--rdzv-endpoint",
    "--rdzv-id",
    "--rdzv-conf",
    "--checks",
    "--output",  # clip_benchmark build's
}
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")


def _argv_of(words: list[str]) -> list[str] | None:
    """The clipforge arguments of one shell command's words, or None when it is another program."""
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]
    if words[:1] == ["torchrun"] or words[:1] and words[0] in _PYTHONS:
        module = words.index("-m") + 1 if "-m" in words else len(words)
        words = words[module:] if words[module : module + 1] == ["clipforge"] else []
    if not words or words[0] not in _CLIPFORGE:
        return None
    stop = next((i for i, w in enumerate(words) if w in _SHELL_STOP), len(words))
    # `[--set lr=1e-5 --set lock_image=true]`: an optional group is checked as if given
    argv = [w.removeprefix("[").removesuffix("]") for w in words[1:stop]]
    return [_PLACEHOLDERS.get(w, w) for w in argv if w]


def doc_commands(text: str) -> Iterator[list[str]]:
    """Every clipforge command of a page's shell blocks as argv: `VAR=value` prefixes, `torchrun ... -m` and
    `python -m` dropped, backslash continuations joined, cut at a pipe or redirect."""
    for block in _SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # an output line with an unbalanced quote, not a command
                continue
            argv = _argv_of(words)
            if argv is not None:
                yield argv


def _strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` and every subcommand's parser with abbreviations off: a doc must spell each flag in full."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _strict(sub)
    return parser


def _cli_flags(parser: argparse.ArgumentParser) -> set[str]:
    flags = set()
    for action in parser._actions:
        flags.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _cli_flags(sub)
    return flags


def _benchmark_flags() -> set[str]:
    """The flags the benchmark scripts declare (the docs show `python -m benchmarks.run --quick` and the like)."""
    found = set()
    for script in (ROOT / "benchmarks").glob("*.py"):
        found.update(
            re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)\"", script.read_text(encoding="utf-8"))
        )
    return found


def unparsed_commands(text: str, parser: argparse.ArgumentParser) -> list[str]:
    """The commands of `text` that `parser` refuses, each with argparse's own reason."""
    failures = []
    for argv in doc_commands(text):
        if argv == ["--version"]:
            continue  # argparse's version action exits 0; tests/core/test_api_and_cli.py covers it
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                parser.parse_args(argv)
        except SystemExit:
            reason = said.getvalue().strip().splitlines()[-1:] or ["(no message)"]
            failures.append(f"`clipforge {shlex.join(argv)}`: {reason[0]}")
    return failures


def unknown_flags(text: str, known: set[str]) -> list[str]:
    """`--flags` named anywhere on a page (prose, tables, code) that no clipforge command or shown tool takes."""
    return sorted({flag for flag in _FLAG.findall(text) if flag not in known})


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return _strict(build_parser())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_clipforge_command_in_the_docs_parses(doc: Path, parser: argparse.ArgumentParser) -> None:
    failures = unparsed_commands(doc.read_text(encoding="utf-8"), parser)
    assert not failures, f"{doc.relative_to(ROOT)}: commands the CLI refuses:\n" + "\n".join(failures)


def test_the_docs_hold_the_commands_the_extraction_should_find() -> None:
    """The extraction finds what is there (not nothing): the README's main command, the test-free ones."""
    counts = {doc.name: len(list(doc_commands(doc.read_text(encoding="utf-8")))) for doc in DOCS}
    assert counts["README.md"] >= 40 and counts["training.md"] >= 10 and counts["zh-CN.md"] >= 30, counts
    readme = list(doc_commands((ROOT / "README.md").read_text(encoding="utf-8")))
    assert [
        "eval",
        "zeroshot",
        "--dataset",
        "cifar10",
        "--root",
        "../shared/data/cifar10_jpeg/test_jpeg.zip",
    ] in readme
    assert [
        "train",
        "--recipe",
        "pretrain",
        "--root",
        "/data/shards/{00000..01023}.tar",
    ] in readme  # via torchrun


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_flag_the_docs_name_exists(doc: Path, parser: argparse.ArgumentParser) -> None:
    known = _cli_flags(parser) | _benchmark_flags() | _OTHER_TOOLS
    unknown = unknown_flags(doc.read_text(encoding="utf-8"), known)
    assert not unknown, f"{doc.relative_to(ROOT)} names flags no clipforge command takes: {unknown}"


def test_a_misspelt_or_abbreviated_flag_in_a_copy_of_a_doc_fails(parser: argparse.ArgumentParser) -> None:
    """The positive control: the checks above refuse a doc whose flag is misspelt, abbreviated or gone."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert unparsed_commands(readme, parser) == []
    line = 'clipforge search "sunset" --paths --null | xargs -0 feh'
    assert line in readme
    misspelt = unparsed_commands(readme.replace(line, line.replace("--null", "--nul1")), parser)
    assert misspelt == [
        "`clipforge search sunset --paths --nul1`: clipforge: error: unrecognized arguments: --nul1"
    ]
    abbreviated = unparsed_commands(readme.replace(line, line.replace("--paths", "--path")), parser)
    assert abbreviated == [
        "`clipforge search sunset --path --null`: clipforge: error: unrecognized arguments: --path"
    ]
    known = _cli_flags(parser) | _benchmark_flags() | _OTHER_TOOLS
    assert unknown_flags(readme.replace("`--exact-decode`", "`--exact-decodes`"), known) == [
        "--exact-decodes"
    ]
