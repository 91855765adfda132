"""Fixtures of the weights tests, and the one way they read the line `classify --model` prints for a bad model."""

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


@pytest.fixture()
def image(tmp_path: Path) -> str:
    """A small photo for `classify --model` to be asked about (files that need one per module define their own)."""
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (220, 20, 20)).save(path)
    return str(path)


def classify_error(image: str, model: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The one line `clipforge classify --model MODEL` prints (status 2, no traceback)."""
    from clipforge.cli.main import main

    assert main(["classify", image, "--labels", "a,b", "--model", model, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.removesuffix("\n")
