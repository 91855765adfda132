"""Fixtures of the weights tests."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture()
def marker_pickler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], tuple[type, Path]]]:
    """`make(module)` -> (a class whose pickle calls ``<module>.touch(marker)``, the marker): a global outside
    torch's allow-list whose only effect, were a reader ever to run it, is a file the test checks never appears."""
    made: list[str] = []

    def make(name: str) -> tuple[type, Path]:
        folder = tmp_path / f"module-{name}"
        folder.mkdir()
        (folder / f"{name}.py").write_text("def touch(path):\n    open(path, 'w').close()\n    return {}\n")
        monkeypatch.syspath_prepend(str(folder))
        module = importlib.import_module(name)
        made.append(name)
        marker = tmp_path / f"ran-{name}"

        class Evil:
            def __reduce__(self) -> tuple:
                return (module.touch, (str(marker),))

        return Evil, marker

    yield make
    for name in made:
        sys.modules.pop(name, None)
