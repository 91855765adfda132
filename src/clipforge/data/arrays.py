"""Datasets shipped as arrays rather than image files: MNIST (idx), STL-10 (binary), FER2013 (CSV of
pixels), PatchCamelyon (HDF5). Each becomes an `ArrayDataset` (uint8 [N, H, W, 3] in memory;
grayscale replicated to RGB, as torchvision's `.convert("RGB")` does before CLIP's preprocessing);
PatchCamelyon is read patch by patch from its HDF5 file instead (7 GB for the training split).
"""

from __future__ import annotations

import csv
import gzip
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from clipforge.image.loading import MAX_IMAGE_FILE_BYTES
from clipforge.regular_file import file_size_text

from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset
from .inmemory import ArrayDataset
from .native import find_base, read_lines, split_choice

__all__ = ["FER2013", "MNIST", "PCam", "STL10", "read_idx"]

MNIST_LAYOUT = "  ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]   (or ROOT/raw/, ROOT/)"
STL_LAYOUT = "  ROOT/stl10_binary/{train,test}_{X,y}.bin, ROOT/stl10_binary/class_names.txt"
FER_LAYOUT = "  ROOT/fer2013/fer2013.csv (emotion,pixels,Usage: Training | PublicTest | PrivateTest)\n" \
             "  or ROOT/fer2013/{train,test}.csv (emotion,pixels), or icml_face_data.csv"
PCAM_LAYOUT = "  ROOT/pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 (needs h5py)"

_CHUNK = 1 << 20  # what an IDX file's data is read by: a header's size is never allocated before the bytes come

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _gray_to_rgb(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(images[..., None], 3, axis=-1))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: magic 0x0000 | dtype 0x08 | ndim, big-endian dims, data), gzipped or not.

    Read no further than its header says it holds (audit 62): a `.gz` is inflated a chunk at a time and refused as
    soon as more comes out, and a header that claims more than `MAX_IMAGE_FILE_BYTES` is refused before any data is
    read (a small gzip inflated whole could fill the memory). A file that is not gzip names itself.
    """
    gz = path.suffix == ".gz"
    with gzip.open(path, "rb") if gz else open(path, "rb") as f:
        try:
            return _read_idx(f, path)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            if not gz:
                raise
            raise DatasetFormatError(f"{path}: cannot be read as gzip ({exc}); expected a gzipped IDX file "
                                     "(MNIST's format)") from None


def _read_idx(f: BinaryIO, path: Path) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08":
        raise DatasetFormatError(f"{path}: not an unsigned-byte IDX file (magic {head.hex()})")
    ndim = head[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DatasetFormatError(f"{path}: IDX header cut short ({ndim} dimensions, {len(raw_dims)} bytes of them)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    size = math.prod(dims)
    if size > MAX_IMAGE_FILE_BYTES:
        raise DatasetFormatError(f"{path}: header says {dims}, {file_size_text(size)} of data, more than the "
                                 f"{file_size_text(MAX_IMAGE_FILE_BYTES)} read at most")
    said = f"{path}: header says {dims}, {size:,} bytes of data"
    body = bytearray()
    while len(body) <= size:  # a chunk at a time, one byte past the end: what the header says, or refused
        chunk = f.read(min(_CHUNK, size + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    if len(body) > size:
        raise DatasetFormatError(f"{said}, but the file holds more")
    if len(body) < size:
        raise DatasetFormatError(f"{said}, but the file holds {len(body):,}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


class MNIST(ArrayDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "t10k"}, "mnist")
        root = Path(root)
        marker = f"{split}-labels-idx1-ubyte"
        base = next((b for b in (root / "MNIST" / "raw", root / "raw", root / "mnist" / "raw", root)
                     if (b / marker).is_file() or (b / f"{marker}.gz").is_file()), None)
        if base is None:
            raise DatasetLayoutError(f"missing file {root / 'MNIST' / 'raw' / marker}\nexpected layout:\n{MNIST_LAYOUT}")

        def pick(stem: str) -> Path:
            for name in (stem, stem + ".gz"):
                if (base / name).is_file():
                    return base / name
            raise DatasetLayoutError(f"missing file {base / stem}\nexpected layout:\n{MNIST_LAYOUT}")

        images = read_idx(pick(f"{split}-images-idx3-ubyte"))
        labels = read_idx(pick(f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetFormatError(f"{base}: {images.shape} images do not match {labels.shape} labels")
        super().__init__(_gray_to_rgb(images), labels.astype(int).tolist(), [str(i) for i in range(10)],
                         name="mnist", split="test" if split == "t10k" else "train", root=base, transform=transform,
                         sources=[f"{split}-images[{i}]" for i in range(len(labels))], layout="mnist-idx")


class STL10(ArrayDataset):
    """Images are stored column-major per channel (3 x 96 x 96, transposed); labels 1..10."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test"}, "stl10")
        base = find_base(root, ["stl10_binary"], f"{split}_y.bin", STL_LAYOUT)
        raw = np.fromfile(base / f"{split}_X.bin", dtype=np.uint8) if (base / f"{split}_X.bin").is_file() else None
        if raw is None:
            raise DatasetLayoutError(f"missing file {base / f'{split}_X.bin'}\nexpected layout:\n{STL_LAYOUT}")
        if raw.size % (3 * 96 * 96):
            raise DatasetFormatError(f"{base / f'{split}_X.bin'}: {raw.size} bytes is not a whole number of 3x96x96 images")
        images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)  # (N, C, W, H) on disk -> (N, H, W, C)
        labels = np.fromfile(base / f"{split}_y.bin", dtype=np.uint8).astype(int) - 1
        if len(labels) != len(images):
            raise DatasetFormatError(f"{base}: {len(images)} images but {len(labels)} labels")
        names = read_lines(base / "class_names.txt", STL_LAYOUT) if (base / "class_names.txt").is_file() else \
            ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
        super().__init__(np.ascontiguousarray(images), labels.tolist(), names, name="stl10", split=split, root=base,
                         transform=transform, sources=[f"{split}_X.bin[{i}]" for i in range(len(labels))],
                         layout="stl10-binary")


class FER2013(ArrayDataset):
    """48x48 grayscale faces; labels 0..6 = angry, disgust, fear, happy, sad, surprise, neutral.
    With the original fer2013.csv: train = Training, val = PublicTest, test = PrivateTest."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "val": "val", "test": "test"}, "fer2013")
        root = Path(root)
        base = next((b for b in (root / "fer2013", root) if any((b / n).is_file() for n in
                     ("fer2013.csv", "icml_face_data.csv", f"{split}.csv"))), None)
        if base is None:
            raise DatasetLayoutError(f"missing file {root / 'fer2013' / 'fer2013.csv'}\nexpected layout:\n{FER_LAYOUT}")
        usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}[split]
        path = next(base / n for n in ("fer2013.csv", "icml_face_data.csv", f"{split}.csv") if (base / n).is_file())
        pixels, labels = [], []
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, skipinitialspace=True)
            fields = {k.strip().lower(): k for k in reader.fieldnames or ()}
            if "pixels" not in fields or "emotion" not in fields:
                raise DatasetFormatError(f"{path}: needs 'emotion' and 'pixels' columns (has {reader.fieldnames})")
            for lineno, row in enumerate(reader, 2):
                if "usage" in fields and row[fields["usage"]].strip() != usage:
                    continue
                values = row[fields["pixels"]].split()
                if len(values) != 48 * 48:
                    raise DatasetFormatError(f"{path} line {lineno}: {len(values)} pixel values, expected 2304")
                pixels.append(np.asarray(values, dtype=np.uint8).reshape(48, 48))
                labels.append(int(row[fields["emotion"]]))
        if not pixels:
            raise DatasetFormatError(f"{path}: no rows for split {split!r} (Usage {usage})")
        super().__init__(_gray_to_rgb(np.stack(pixels)), labels, list(FER_CLASSES), name="fer2013", split=split,
                         root=base, transform=transform, sources=[f"{path.name}[{i}]" for i in range(len(labels))],
                         layout="fer2013-csv")


class PCam(LabelledDataset):
    """96x96 RGB patches; label 1 = contains metastatic tissue. Images are read from the .h5 file one
    at a time (the training split is 7 GB of pixels): one file handle per process, reopened after a
    fork, like the zip reader."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        key = split_choice(split, {"train": "train", "val": "valid", "valid": "valid", "test": "test"}, "pcam")
        stem = f"camelyonpatch_level_2_split_{key}"
        base = find_base(root, ["pcam", "patchcamelyon"], f"{stem}_y.h5", PCAM_LAYOUT)
        h5py = _h5py()
        self.images_path = base / f"{stem}_x.h5"
        if not self.images_path.is_file():
            raise DatasetLayoutError(f"missing file {self.images_path}\nexpected layout:\n{PCAM_LAYOUT}")
        with h5py.File(base / f"{stem}_y.h5", "r") as fy, h5py.File(self.images_path, "r") as fx:
            labels = np.asarray(fy["y"]).reshape(-1).astype(int)
            if fx["x"].shape[0] != len(labels) or tuple(fx["x"].shape[1:]) != (96, 96, 3):
                raise DatasetFormatError(f"{self.images_path}: x {fx['x'].shape} does not match {len(labels)} labels "
                                         "of 96x96x3 patches")
        self._handle: tuple[int, object] | None = None
        super().__init__([(f"{stem}_x.h5[{i}]", int(y)) for i, y in enumerate(labels)],
                         ["lymph node", "lymph node containing metastatic tumor tissue"], name="pcam", split=split,
                         root=base, transform=transform, layout="pcam-h5")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}  # h5py handles do not cross process boundaries

    def load_image(self, index: int) -> Image.Image:
        import os

        if self._handle is None or self._handle[0] != os.getpid():
            self._handle = (os.getpid(), _h5py().File(self.images_path, "r"))
        return Image.fromarray(np.asarray(self._handle[1]["x"][index], dtype=np.uint8), mode="RGB")


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise DatasetLayoutError("PatchCamelyon's .h5 files need h5py: pip install h5py") from exc
    return h5py
