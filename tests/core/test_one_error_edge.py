"""One error edge (issue 20.9): user errors are one family (`clipforge.errors.UserError`), and only
`clipforge.cli.main` turns exceptions into exit statuses and ``error: ...`` lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import clipforge
from clipforge.errors import UserError

SRC = Path(clipforge.__file__).resolve().parent
EDGE = {"cli/main.py", "__main__.py"}  # the edge itself, and `python -m clipforge` calling it
NOT_A_STATUS = {"data/lifeline.py": ["73: calls os._exit"]}
"""Process ends no one reads a status of: a decoding worker ending itself because its command died (review 63)."""


def _family() -> list[tuple[type, type]]:
    """(error class, the base class callers caught before it joined the family)."""
    from clipforge.data.base import DatasetFormatError, DatasetLayoutError
    from clipforge.image.loading import ImageLoadError
    from clipforge.inference.precision import Bf16UnsupportedError
    from clipforge.library.library import ModelMismatchError
    from clipforge.library.query import QueryError
    from clipforge.library.schema import SchemaError
    from clipforge.models.validate import ConfigError
    from clipforge.regular_file import NotRegularFileError
    from clipforge.server.runner import ServeError
    from clipforge.text.tokenizer import TextTooLongError
    from clipforge.train.config import TrainConfigError
    from clipforge.weights.errors import CheckpointFormatError, DownloadError, UnsafeCheckpointError
    from clipforge.weights.preprocess_cfg import PreprocessConfigError
    from clipforge.zeroshot.prompts import TemplateError

    return [(CheckpointFormatError, ValueError), (DownloadError, RuntimeError), (UnsafeCheckpointError, RuntimeError),
            (ImageLoadError, ValueError), (TextTooLongError, ValueError), (TemplateError, ValueError),
            (ConfigError, ValueError), (PreprocessConfigError, ValueError), (DatasetLayoutError, FileNotFoundError),
            (DatasetFormatError, ValueError), (NotRegularFileError, ValueError), (QueryError, ValueError),
            (ModelMismatchError, ValueError), (SchemaError, RuntimeError), (ServeError, RuntimeError),
            (Bf16UnsupportedError, RuntimeError), (TrainConfigError, ValueError)]


def test_user_facing_errors_are_one_family_and_keep_their_old_bases():
    for cls, base in _family():
        assert issubclass(cls, UserError) and issubclass(cls, base), cls


def _under_main_guard(tree: ast.Module) -> set[int]:
    """Line numbers inside `if __name__ == "__main__":` (a developer script's own verdict)."""
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            lines |= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _command_handlers(tree: ast.Module, command_module: bool) -> list[ast.ExceptHandler]:
    """Except clauses where a returned integer is an exit status: anywhere in a command module
    (cli/), else inside functions named `run` or `main` (what commands are made of)."""
    if command_module:
        return [n for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler)]
    return [n for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in ("run", "main")
            for n in ast.walk(f) if isinstance(n, ast.ExceptHandler)]


def _violations(path: Path, command_module: bool = True) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = _under_main_guard(tree)
    found = []
    for handler in _command_handlers(tree, command_module):
        for inner in ast.walk(handler):
            if isinstance(inner, ast.Return) and isinstance(inner.value, ast.Constant) \
                    and isinstance(inner.value.value, int) and not isinstance(inner.value.value, bool) \
                    and inner.value.value != 0:
                found.append(f"{inner.lineno}: an except clause returns status {inner.value.value}")
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if line in guarded:
            continue
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("sys.exit", "exit", "quit", "os._exit"):
            found.append(f"{line}: calls {ast.unparse(node.func)}")
        if isinstance(node, ast.Raise) and node.exc is not None and "SystemExit" in ast.unparse(node.exc):
            found.append(f"{line}: raises SystemExit")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("error: "):
            found.append(f"{line}: prints its own 'error: ' line")
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                and str(node.values[0].value).startswith("error: "):
            found.append(f"{line}: prints its own 'error: ' line")
    return sorted(set(found))


def test_only_the_cli_edge_turns_exceptions_into_exit_statuses():
    bad = {}
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative in EDGE:
            continue
        found = [f for f in _violations(path, command_module=relative.startswith("cli/"))
                 if f not in NOT_A_STATUS.get(relative, [])]
        if found:
            bad[relative] = found
    assert bad == {}
    assert len(list(SRC.rglob("*.py"))) > 100  # the scan saw the package


def test_the_scan_would_see_a_second_edge(tmp_path):
    """Positive control: the patterns the scan looks for are found in code that has them."""
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\n\ndef run():\n    try:\n        pass\n    except ValueError as e:\n"
                      "        print(f'error: {e}')\n        return 2\n    sys.exit(1)\n", encoding="utf-8")
    assert len(_violations(sample)) == 3


@pytest.mark.parametrize("argv", [["train", "--recipe", "no-such-recipe"], ["wise-ft", "--zeroshot", "clipforge-tiny",
                                                                            "--finetuned", "/nonexistent.pt",
                                                                            "--out", "/tmp/x.safetensors"]])
def test_commands_that_had_their_own_edge_now_speak_like_every_other(argv, capsys):
    from clipforge.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_the_floor_module_imports_only_the_standard_library():
    tree = ast.parse((SRC / "errors.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__"}
