"""A root or zip must hold the split and the CIFAR variant asked for: both were accepted silently.

`train_jpeg.zip` (which holds `train/<class>/...`, as the real archive does) asked for `test` was read
whole, 50,000 training images reported as the test split; `--dataset cifar100` on a CIFAR-10 root ran
with CIFAR-10's 10 classes and the CIFAR-100 prompts. Each is now refused in one line naming the file.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from clipforge.data import CIFAR10_CLASSES, DatasetFormatError, DatasetLayoutError, ImageFolder, open_dataset


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 20, 20)).save(buf, "JPEG")
    return buf.getvalue()


def _split_zip(path: Path, prefix: str) -> Path:
    """A zip laid out like the real CIFAR archives: `<prefix><class>/NNNN.jpg` plus folder entries."""
    with zipfile.ZipFile(path, "w") as z:
        if prefix:
            z.writestr(prefix, b"")
        for name in ("airplane", "cat"):
            for i in range(2):
                z.writestr(f"{prefix}{name}/{i:04d}.jpg", _jpeg())
    return path


def test_single_split_zip_refuses_another_split(tmp_path):
    path = _split_zip(tmp_path / "train_jpeg.zip", "train/")
    for split in ("test", "val"):
        with pytest.raises(DatasetLayoutError, match=rf"train_jpeg.zip holds no {split}/ folder .*train/"):
            open_dataset("cifar10", path, split)
    ds = open_dataset("cifar10", path, "train")  # the matching split still works
    assert len(ds) == 4 and ds.split == "train" and ds.samples[0][0] == "train/airplane/0000.jpg"


def test_zip_split_under_a_wrapper_and_flat_zip(tmp_path):
    wrapped = tmp_path / "w.zip"
    with zipfile.ZipFile(wrapped, "w") as z:
        for split in ("train", "test"):
            z.writestr(f"cifar/{split}/cat/0.jpg", _jpeg())
            z.writestr(f"cifar/{split}/cat/1.jpg", _jpeg())
    ds = open_dataset("cifar10", wrapped, "test")
    assert [s for s, _ in ds.samples] == ["cifar/test/cat/0.jpg", "cifar/test/cat/1.jpg"]  # not train's too
    flat = _split_zip(tmp_path / "flat.zip", "")  # <class>/<image>: no split folders to contradict
    assert len(open_dataset("cifar10", flat, "test")) == 4


def test_folder_root_that_is_another_split_is_refused(tmp_path, make_image):
    make_image(tmp_path / "train" / "cat" / "0.jpg")
    make_image(tmp_path / "val" / "cat" / "0.jpg")
    with pytest.raises(DatasetLayoutError, match=r"holds no test/ folder \(its split folders: train/, val/\)"):
        ImageFolder(tmp_path, "test")  # read as classes, that was 2 classes named "train" and "val"
    with pytest.raises(DatasetLayoutError, match=r"is a train/ split folder, but split 'test'"):
        ImageFolder(tmp_path / "train", "test")
    with pytest.raises(DatasetLayoutError, match=r"is a train/ split folder"):
        open_dataset("cifar10", tmp_path / "train", "test")
    assert len(ImageFolder(tmp_path / "train", "train", min_classes=1)) == 1


@pytest.mark.parametrize("as_zip", [False, True])
def test_cifar100_on_a_cifar10_root_is_refused(tmp_path, as_zip):
    (tmp_path / "classes.json").write_text(json.dumps({"classes": list(CIFAR10_CLASSES)}))
    zip_path = _split_zip(tmp_path / "test_jpeg.zip", "test/")
    root = zip_path if as_zip else tmp_path
    with pytest.raises(DatasetFormatError, match=r"CIFAR-100 needs 100 classes, but .*classes.json lists 10 .*"
                                                 r"airplane.*--dataset cifar10"):
        open_dataset("cifar100", root, "test")
    assert len(open_dataset("cifar10", root, "test")) == 4


def test_cifar10_classes_json_with_too_many_classes(tmp_path):
    (tmp_path / "classes.json").write_text(json.dumps(list(CIFAR10_CLASSES) + ["spaceship"]))
    _split_zip(tmp_path / "test_jpeg.zip", "test/")
    with pytest.raises(DatasetFormatError, match=r"CIFAR-10 needs 10 classes, but .* lists 11 .*spaceship"):
        open_dataset("cifar10", tmp_path, "test")


@pytest.mark.data
def test_real_cifar10_zips_refuse_the_wrong_split_and_variant(shared):
    root = shared("cifar10_jpeg")
    with pytest.raises(DatasetLayoutError, match=r"train_jpeg.zip holds no test/ folder"):
        open_dataset("cifar10", root / "train_jpeg.zip", "test")
    with pytest.raises(DatasetLayoutError, match=r"test_jpeg.zip holds no val/ folder"):
        open_dataset("cifar10", root / "test_jpeg.zip", "val")
    with pytest.raises(DatasetFormatError, match=r"CIFAR-100 needs 100 classes"):
        open_dataset("cifar100", root, "test")
    assert open_dataset("cifar10", root / "train_jpeg.zip", "train").split == "train"
