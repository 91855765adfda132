"""audit60 pyapi finding 2: `evaluate_zeroshot(model, dataset, root)` without a split crashed.

The CLI's default ("val for imagenet, test otherwise") lived in `cli/eval.py` alone; the Python functions passed
None down ("unsupported operand type(s) for /: 'PosixPath' and 'NoneType'" for CIFAR, "CUB split must be one of
[...], got None"). It is `clipforge.evaluate.common.default_split` now, used by the CLI and every evaluate_* entry
with a split parameter.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

import clipforge
from clipforge.evaluate import evaluate_linear_probe, evaluate_zeroshot


def _present(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    return path


def test_default_split_is_the_catalogue_evaluation_split():
    from clipforge.evaluate.common import default_split

    assert default_split("imagenet") == "val" and default_split("ImageNet") == "val"
    assert default_split("cifar10") == "test" and default_split("cub") == "test"
    assert default_split("clevr_counts") == "val"  # the adapters map "test" to these anyway
    assert default_split("folder") == "test"  # not in the catalogue
    assert default_split("imagenet", "train") == "train"  # an explicit split wins
    assert default_split(object()) is None  # a dataset object is its own split


def test_cli_and_python_share_the_default():
    from clipforge.cli.eval import _split

    assert _split(argparse.Namespace(dataset="imagenet", split=None)) == "val"
    assert _split(argparse.Namespace(dataset="cifar10", split=None)) == "test"
    assert _split(argparse.Namespace(dataset="cifar10", split="train")) == "train"
    assert inspect.signature(evaluate_zeroshot).parameters["split"].default is None
    assert inspect.signature(evaluate_linear_probe).parameters["test_split"].default is None


@pytest.mark.parametrize(("dataset", "folder", "split"), [("cifar10", "cifar10_jpeg", "test"),
                                                          ("cub", "cub200_2011_mini", "test")])
def test_evaluate_zeroshot_without_a_split_runs_the_default_one(dataset, folder, split, tmp_path, shared_data):
    root = _present(shared_data / folder)
    model, _ = clipforge.load("clipforge-tiny", device="cpu")
    report = evaluate_zeroshot(model, dataset, root, limit=8, out_dir=tmp_path, progress=False, templates="simple")
    assert report["dataset"]["split"] == split and report["metrics"]["num_samples"] == 8


def test_a_split_the_dataset_lacks_is_one_line(tmp_path, shared_data):
    root = _present(shared_data / "cub200_2011_mini")
    model, _ = clipforge.load("clipforge-tiny", device="cpu")
    with pytest.raises(ValueError) as info:
        evaluate_zeroshot(model, "cub", root, "val", limit=8, out_dir=tmp_path, progress=False, templates="simple")
    assert str(info.value) == "CUB split must be one of ['all', 'test', 'train'], got 'val'"
