"""CIFAR-10/100: pickle batches in the real format (read safely), class folders, zips, the real zip."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.data import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    BadImage,
    CIFARPickle,
    DatasetFormatError,
    DatasetLayoutError,
    ZipImageFolder,
    open_dataset,
)


def _rows(n: int, offset: int) -> np.ndarray:
    """n CIFAR rows (N x 3072 uint8: 1024 R, then 1024 G, then 1024 B, row-major 32x32)."""
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path: Path, content: dict, protocol: int = 2) -> None:
    # bytes keys, as the original Python 2 pickles read with encoding="bytes" produce
    with open(path, "wb") as f:
        pickle.dump({k.encode(): v for k, v in content.items()}, f, protocol=protocol)


@pytest.fixture()
def cifar10_pickles(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _dump(folder / "batches.meta", {"label_names": [n.encode() for n in CIFAR10_CLASSES], "num_vis": 3072})
    arrays = {}
    for i in range(1, 6):
        arrays[f"data_batch_{i}"] = (_rows(2, i), [i % 10, (i + 3) % 10])
    arrays["test_batch"] = (_rows(3, 99), [9, 0, 4])
    for name, (data, labels) in arrays.items():
        _dump(folder / name, {"batch_label": name.encode(), "labels": labels, "data": data,
                              "filenames": [b"x.png"] * len(labels)})
    return tmp_path, arrays


def test_cifar10_pickle_batches(cifar10_pickles):
    root, arrays = cifar10_pickles
    test = open_dataset("cifar10", root, "test")
    assert isinstance(test, CIFARPickle) and test.layout == "pickle"
    assert test.classnames == list(CIFAR10_CLASSES) and test.targets == [9, 0, 4]
    row = arrays["test_batch"][0][1]
    expected = row.reshape(3, 32, 32).transpose(1, 2, 0)  # channel planes -> HWC
    assert np.array_equal(np.asarray(test.load_image(1)), expected)
    train = CIFARPickle(root / "cifar-10-batches-py", "train")
    assert len(train) == 10 and train.targets[:4] == [1, 4, 2, 5]
    assert train.source_name(9) == "data_batch_5[1]"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pickle_protocols_all_load(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _dump(folder / "batches.meta", {"label_names": list(CIFAR10_CLASSES)}, protocol)
    _dump(folder / "test_batch", {"data": _rows(2, 1), "labels": [3, 7]}, protocol)
    ds = CIFARPickle(tmp_path, "test")
    assert ds.targets == [3, 7] and np.asarray(ds.load_image(0)).shape == (32, 32, 3)


def test_cifar100_pickle_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump(folder / "meta", {"fine_label_names": [n.encode() for n in CIFAR100_CLASSES],
                            "coarse_label_names": [b"c"] * 20})
    _dump(folder / "test", {"data": _rows(3, 5), "fine_labels": [99, 1, 50], "coarse_labels": [0, 1, 2]})
    ds = open_dataset("cifar100", tmp_path, "test")
    assert ds.targets == [99, 1, 50] and len(ds.classnames) == 100
    assert ds.classnames[1] == "aquarium fish" and ds.folder_names[1] == "aquarium_fish"


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_with_foreign_global_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": _Evil()}, f, protocol=2)
    with pytest.raises(DatasetFormatError, match=r"refusing to load global posix\.getcwd"):
        CIFARPickle(tmp_path, "test")


def test_missing_batch_named(cifar10_pickles):
    root, _ = cifar10_pickles
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetLayoutError, match=r"missing file .*data_batch_3"):
        open_dataset("cifar10", root, "train")


def _jpeg_bytes(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, "JPEG")
    return buf.getvalue()


def test_folders_follow_classes_json_order(tmp_path, make_image):
    order = ["truck", "airplane", "cat"]  # non-standard order must be respected
    (tmp_path / "classes.json").write_text(json.dumps({"classes": order}))
    make_image(tmp_path / "test" / "cat" / "0000.png")
    make_image(tmp_path / "test" / "truck" / "0000.png")
    make_image(tmp_path / "test" / "truck" / "0001.png")
    ds = open_dataset("cifar10", tmp_path, "test")
    assert ds.classnames == order and ds.targets == [0, 0, 2] and ds.layout == "folder"


def test_zip_members_read_directly(tmp_path):
    path = tmp_path / "test_jpeg.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("test/", b"")
        z.writestr("test/bird/0000.jpg", _jpeg_bytes((0, 0, 255)))
        z.writestr("test/airplane/0000.jpg", _jpeg_bytes((255, 0, 0)))
        z.writestr("test/airplane/0001.jpg", b"\xff\xd8 this is not a jpeg")
        z.writestr("train/airplane/0000.jpg", _jpeg_bytes((0, 255, 0)))
    ds = open_dataset("cifar10", tmp_path, "test")  # finds ROOT/test_jpeg.zip, standard class order
    assert isinstance(ds, ZipImageFolder) and len(ds) == 3
    assert ds.samples == [("test/airplane/0000.jpg", 0), ("test/airplane/0001.jpg", 0), ("test/bird/0000.jpg", 2)]
    image, label = ds[2]
    assert label == 2 and image.getpixel((16, 16))[2] > 200
    bad = ds[1]
    assert isinstance(bad, BadImage) and bad.source == f"{path}::test/airplane/0001.jpg"
    assert "not an image" in bad.reason or "corrupt" in bad.reason or "truncated" in bad.reason
    assert len(open_dataset("cifar10", path, "train")) == 1  # the zip itself as root


def test_unknown_layout_lists_all(tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        open_dataset("cifar100", tmp_path, "test")
    assert "cifar-100-python" in str(err.value) and "test_jpeg.zip" in str(err.value)


@pytest.mark.data
def test_real_cifar10_test_zip(shared):
    root = shared("cifar10_jpeg")
    ds = open_dataset("cifar10", root / "test_jpeg.zip", "test")
    assert len(ds) == 10_000 and ds.class_counts() == [1000] * 10
    assert ds.classnames == json.loads((root / "classes.json").read_text())["classes"]
    image, label = ds[9_999]
    assert label == 9 and image.size == (32, 32) and ds.samples[9_999][0] == "test/truck/0999.jpg"
