"""`eval linear-probe --fewshot-k K` on training data where some class has fewer than K images.

The k-shot sample takes all of such a class's images, and the result was labelled "K-shot" with no word: a
"50-shot" score fit on 12 images of some classes. Now a warning line names how many classes had fewer than K
images and the fewest, and each k's report entry records the real per-class counts (`train_per_class`) and how
many classes fell short (`classes_below_k`), so the label says what was fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipforge.cli.main import main

_BASE = ["--model", "test-vit-tiny", "--device", "cpu", "--workers", "0", "--quiet", "--batch-size", "8"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def short_class_root(tmp_path, colour_classes) -> Path:
    """train/: red and green 3 images each, blue 1; test/: 2 of each."""
    root = tmp_path / "colours"
    colour_classes(root / "train", per_class=3, seed=1)
    colour_classes(root / "test", per_class=2, seed=2)
    for extra in ("1.png", "2.png"):
        (root / "train" / "blue" / extra).unlink()
    return root


def test_a_k_above_a_class_size_is_told_and_recorded(short_class_root, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["eval", "linear-probe", *_BASE, "--dataset", "folder", "--root", str(short_class_root),
                 "--out", str(out), "--no-full", "--fewshot-k", "1,2", "--seeds", "1"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 2-shot: 1 of 3 classes have fewer than 2 training images (the fewest: 1, in blue): "
                        "they were fit on all they have, so the result is not 2-shot for them; each class's count "
                        "is in the report (metrics.fewshot.2.train_per_class)"]
    [report_path] = out.glob("*.json")
    fewshot = json.loads(report_path.read_text())["metrics"]["fewshot"]
    assert fewshot["2"]["train_per_class"] == {"blue": 1, "green": 2, "red": 2}
    assert fewshot["2"]["classes_below_k"] == 1
    assert fewshot["1"]["train_per_class"] == {"blue": 1, "green": 1, "red": 1}  # every class had 1: no warning
    assert fewshot["1"]["classes_below_k"] == 0
    assert "fewer than 2 training images (the fewest: 1, in blue)" in (out / report_path.name).with_suffix(
        ".log").read_text()
