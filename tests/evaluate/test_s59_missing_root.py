"""audit59 newcomer finding 7: a `--root` that does not exist was answered ``no such file or folder`` alone,
naming neither the dataset nor what the path should hold (an existing empty folder got the full layout). Now one
line names the path, the dataset and its layout, before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.evaluate.linear_probe_eval import evaluate_linear_probe
from clipforge.evaluate.zeroshot_eval import evaluate_zeroshot

pytestmark = pytest.mark.usefixtures("no_model")  # tests/evaluate/conftest.py: refused before the model loads


def test_zeroshot_names_the_dataset_and_its_layout_for_cifar10(tmp_path: Path) -> None:
    root = tmp_path / "shared" / "data" / "cifar10_jpeg" / "test_jpeg.zip"
    with pytest.raises(FileNotFoundError) as caught:
        evaluate_zeroshot("test-vit-tiny", "cifar10", root, "test", out_dir=tmp_path / "out")
    assert str(caught.value) == (
        f"--root {root}: no such file or folder; --dataset cifar10 reads the CIFAR-10 download "
        "cifar-10-python.tar.gz (or the cifar-10-batches-py/ it unpacks to), a <split>_jpeg.zip of <split>/<class>/ "
        "images, or class folders <split>/<class>/")
    assert "\n" not in str(caught.value)


def test_zeroshot_names_the_imagenet_layouts(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    with pytest.raises(FileNotFoundError) as caught:
        evaluate_zeroshot("test-vit-tiny", "imagenet", str(root), "val", out_dir=tmp_path / "out")
    assert str(caught.value) == (
        f"--root {root}: no such file or folder; --dataset imagenet reads the ImageNet validation set: "
        "val/<wnid>/*.JPEG class folders, the devkit ILSVRC2012_devkit_t12/ with ILSVRC2012_img_val/, Kaggle's "
        "LOC_val_solution.csv with ILSVRC/Data/CLS-LOC/val/, or flat <wnid>_*.JPEG files")


def test_linear_probe_names_the_folder_layout(tmp_path: Path) -> None:
    root = tmp_path / "我的照片"
    with pytest.raises(FileNotFoundError) as caught:
        evaluate_linear_probe("test-vit-tiny", "folder", root, out_dir=tmp_path / "out")
    assert str(caught.value) == (f"--root {root}: no such file or folder; --dataset folder reads a folder of class "
                                 "folders (<class>/*.jpg, or <split>/<class>/*.jpg), or a zip of them")


def test_every_dataset_name_has_a_layout_line() -> None:
    from clipforge.cli.eval import DATASETS
    from clipforge.data import available_datasets
    from clipforge.evaluate.roots import ROOT_LAYOUTS, missing_root_message

    assert sorted(ROOT_LAYOUTS) == sorted(DATASETS) == available_datasets()
    assert all("\n" not in line and len(line) < 260 for line in ROOT_LAYOUTS.values())
    assert missing_root_message("cub", "/x").startswith("--root /x: no such file or folder; --dataset cub reads "
                                                         "CUB_200_2011/ as CUB_200_2011.tgz unpacks (")


def test_an_existing_root_still_gets_the_adapters_full_layout(tmp_path: Path, monkeypatch) -> None:
    """The one-liner is for a path that is not there; an empty folder keeps the adapter's detailed message."""
    from clipforge.data.base import DatasetLayoutError
    from clipforge.evaluate.common import open_eval_dataset

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="expected layout:\n"):
        open_eval_dataset("cifar10", tmp_path / "empty", "test", None)
    with pytest.raises(FileNotFoundError, match=r"no such file or folder; --dataset cifar10 reads"):
        open_eval_dataset("cifar10", tmp_path / "gone", "test", None)


def test_the_suite_root_says_it_holds_one_folder_per_dataset(tmp_path: Path) -> None:
    from clipforge.evaluate.suite import run_suite

    (tmp_path / "file.zip").write_bytes(b"PK")
    for root, what in ((tmp_path / "data", "no such file or folder"), (tmp_path / "file.zip", "not a folder")):
        with pytest.raises(FileNotFoundError) as caught:
            run_suite(["test-vit-tiny"], ["cifar10"], root, tmp_path / "out", progress=False)
        assert str(caught.value) == (f"--root {root}: {what}; eval suite reads one folder per dataset, named as the "
                                     "suite looks for them (cifar10/, imagenet/, flickr8k/, ...)")
