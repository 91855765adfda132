"""MNIST (idx, gzipped or not), STL-10 (column-major binary), FER2013 (CSV), PatchCamelyon (HDF5):
fixtures written in each format, checked for pixel layout, label mapping and splits."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from clipforge.data import open_dataset
from clipforge.data.base import DatasetFormatError


def _idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    raw = tmp_path / "MNIST" / "raw"
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1, 0, 5] = 200  # row 0, column 5
    _idx(raw / "t10k-images-idx3-ubyte", images, gz)
    _idx(raw / "t10k-labels-idx1-ubyte", np.array([7, 2, 1]), gz)
    ds = open_dataset("mnist", tmp_path, "test")
    assert ds.targets == [7, 2, 1] and ds.classnames == [str(i) for i in range(10)]
    assert ds.images.shape == (3, 28, 28, 3) and ds.images[1, 0, 5].tolist() == [200, 200, 200]
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        open_dataset("mnist", tmp_path, "train")


def test_mnist_rejects_a_bad_magic(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05")
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 1, 1, 1) + b"\x01")
    with pytest.raises(DatasetFormatError, match="IDX"):
        open_dataset("mnist", tmp_path, "test")


def test_stl10_binary_is_column_major(tmp_path):
    base = tmp_path / "stl10_binary"
    base.mkdir()
    hwc = np.zeros((2, 96, 96, 3), dtype=np.uint8)
    hwc[0, 10, 20] = (255, 0, 0)  # image 0: a red pixel at row 10, column 20
    hwc[1, 50, 3] = (0, 0, 255)
    on_disk = hwc.transpose(0, 3, 2, 1)  # STL-10 stores (N, C, W, H)
    (base / "test_X.bin").write_bytes(on_disk.tobytes())
    (base / "test_y.bin").write_bytes(bytes([1, 10]))
    (base / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                     "monkey", "ship", "truck"]) + "\n")
    ds = open_dataset("stl10", tmp_path, "test")
    assert ds.targets == [0, 9] and ds.classnames[9] == "truck"
    assert ds.images[0, 10, 20].tolist() == [255, 0, 0] and ds.images[1, 50, 3].tolist() == [0, 0, 255]


def test_fer2013_usage_column_splits(tmp_path):
    base = tmp_path / "fer2013"
    base.mkdir()
    px = " ".join(["7"] * 2304)
    rows = ["emotion,pixels,Usage", f"3,{px},Training", f"6,{px},PublicTest", f"4,{px},PrivateTest",
            f"0,{px},PrivateTest"]
    (base / "fer2013.csv").write_text("\n".join(rows) + "\n")
    ds = open_dataset("fer2013", tmp_path, "test")
    assert ds.targets == [4, 0] and ds.classnames[4] == "sad" and ds.classnames[6] == "neutral"
    assert open_dataset("fer", base, "train").targets == [3] and open_dataset("fer2013", base, "val").targets == [6]
    assert ds.images.shape == (2, 48, 48, 3) and int(ds.images[0, 0, 0, 0]) == 7


def test_pcam_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    base = tmp_path / "pcam"
    base.mkdir()
    x = np.zeros((3, 96, 96, 3), dtype=np.uint8)
    x[2, 0, 0] = (9, 8, 7)
    with h5py.File(base / "camelyonpatch_level_2_split_test_x.h5", "w") as f:
        f["x"] = x
    with h5py.File(base / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f["y"] = np.array([1, 0, 1], dtype=np.uint8).reshape(3, 1, 1, 1)
    ds = open_dataset("pcam", tmp_path, "test")
    assert ds.targets == [1, 0, 1] and np.asarray(ds.load_image(2))[0, 0].tolist() == [9, 8, 7]
    import pickle

    assert pickle.loads(pickle.dumps(ds))[2][1] == 1  # crosses to a DataLoader worker
    assert ds.classnames[1] == "lymph node containing metastatic tumor tissue"
