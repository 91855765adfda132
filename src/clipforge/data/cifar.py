"""CIFAR-10 / CIFAR-100 from the python pickle batches (unpacked, or inside the `.tar.gz` download),
JPEG/PNG class folders, or a zip of them.

The pickle batches are read with a numpy-only Unpickler (see `_pickle`); the 32x32 images stay
in one uint8 array in memory (150 MB for CIFAR-10 train), shared copy-on-write by forked
DataLoader workers. CIFAR-100 uses the 100 fine labels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._pickle import load_restricted_pickle
from .archives import is_tar_archive, read_tar_batches
from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset
from .classnames import CIFAR10_CLASSES, CIFAR100_CLASSES
from .folder import ImageFolder, ZipImageFolder, display_name
from .inmemory import ArrayDataset

__all__ = ["CIFAR_LAYOUT", "CIFARPickle", "open_cifar", "read_class_order"]

CIFAR_LAYOUT = """\
  pickle:  ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
           ROOT/cifar-100-python/{train, test, meta}            (or ROOT = that folder)
           ROOT = the download itself: cifar-10-python.tar.gz, cifar-100-python.tar.gz (read as it is)
  folders: ROOT/<split>/<class>/NNNN.jpg|png                    (or ROOT/<class>/...)
  zip:     ROOT/<split>_jpeg.zip or ROOT/<split>.zip holding <split>/<class>/NNNN.jpg (or ROOT = the zip)
  class order: ROOT/classes.json ({"classes": [...]} or a list), else the standard CIFAR order"""

_PICKLE = {
    "cifar10": {"dir": "cifar-10-batches-py", "meta": "batches.meta", "names": "label_names", "labels": "labels",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"dir": "cifar-100-python", "meta": "meta", "names": "fine_label_names", "labels": "fine_labels",
                 "train": ["train"], "test": ["test"]},
}
_STANDARD = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _batch(path: Path | str, data: bytes | None = None) -> dict[str, Any]:
    content = load_restricted_pickle(path, data)
    if not isinstance(content, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return {_text(k): v for k, v in content.items()}


def _pickle_dir(root: Path, variant: str) -> Path | None:
    spec = _PICKLE[variant]
    for folder in (root / spec["dir"], root):
        if (folder / spec["meta"]).is_file():
            return folder
    return None


class CIFARPickle(ArrayDataset):
    """CIFAR from the original python batches; samples are named `<batch file>[<row>]`."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None,
                 variant: str = "cifar10") -> None:
        if split not in ("train", "test"):
            raise ValueError(f"CIFAR split must be train or test, got {split!r}")
        spec = _PICKLE[variant]
        root = Path(root)
        if is_tar_archive(root):  # the download itself, cifar-10-python.tar.gz: read without unpacking
            folder, files = root, read_tar_batches(root, spec["dir"], [spec["meta"], *spec[split]])
            batches = {name: _batch(f"{root}:{spec['dir']}/{name}", data) for name, data in files.items()}
        else:
            found = _pickle_dir(root, variant)
            if found is None:
                raise DatasetLayoutError(f"missing file {root / spec['dir'] / spec['meta']}\n"
                                         f"expected layout:\n{CIFAR_LAYOUT}")
            folder, batches = found, {}
            for name in [spec["meta"], *spec[split]]:
                if not (folder / name).is_file():
                    raise DatasetLayoutError(f"missing file {folder / name}\nexpected layout:\n{CIFAR_LAYOUT}")
                batches[name] = _batch(folder / name)
        meta_path = folder / spec["meta"]
        meta = batches[spec["meta"]]
        if spec["names"] not in meta:
            raise DatasetFormatError(f"{meta_path}: no {spec['names']!r} entry (has {sorted(meta)})")
        self.folder_names = [_text(n) for n in meta[spec["names"]]]
        arrays, labels, sources = [], [], []
        for fname in spec[split]:
            path = folder / fname
            batch = batches[fname]
            if "data" not in batch or spec["labels"] not in batch:
                raise DatasetFormatError(f"{path}: needs 'data' and {spec['labels']!r} entries (has {sorted(batch)})")
            data = np.asarray(batch["data"], dtype=np.uint8)
            batch_labels = [int(x) for x in batch[spec["labels"]]]
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(batch_labels):
                raise DatasetFormatError(f"{path}: data shape {data.shape} and {len(batch_labels)} labels do not "
                                         "match CIFAR's N x 3072 layout")
            arrays.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # channel planes -> HWC
            labels += batch_labels
            sources += [f"{fname}[{i}]" for i in range(len(batch_labels))]
        super().__init__(np.ascontiguousarray(np.concatenate(arrays)), labels,
                         [display_name(n) for n in self.folder_names], name=variant, split=split, root=folder,
                         transform=transform, sources=sources, layout="pickle")


_CLASSES = 'a list of class names or {"classes": [...]}'


def read_class_order(*folders: Path) -> list[str] | None:
    """Class order from the first classes.json found in `folders` (a list or {"classes": [...]}).

    A file that is not UTF-8 JSON, an empty list and a class named twice are each one line naming the file (audit
    62): an empty list was reported as "no cifar10 data under ...", a duplicate as class folders missing from it.
    """
    from clipforge.text.labels import TextFileError, parse_json_file, read_text_file

    for folder in folders:
        path = folder / "classes.json"
        if path.is_file():
            try:
                data = parse_json_file(read_text_file(path, "class order file", _CLASSES), path, _CLASSES)
            except TextFileError as exc:
                raise DatasetFormatError(str(exc)) from None
            names = data.get("classes") if isinstance(data, dict) else data
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DatasetFormatError(f"{path}: expected {_CLASSES}")
            if not names:
                raise DatasetFormatError(f"{path}: the class list is empty; expected {_CLASSES}")
            first: dict[str, int] = {}
            for number, name in enumerate(names, 1):
                if name in first:
                    raise DatasetFormatError(f"{path}: {name!r} is listed twice (entries {first[name]} and {number}); "
                                             "each class is listed once")
                first[name] = number
            return names
    return None


def _key(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def _class_order(variant: str, *folders: Path) -> list[str]:
    """The class order for `variant`: a classes.json beside the data, else the standard one.

    A classes.json may reorder the variant's classes or list some of them, but not more classes nor
    others: CIFAR-100 pointed at a CIFAR-10 folder found CIFAR-10's classes.json and ran with 10
    classes and the CIFAR-100 prompts, reported as a CIFAR-100 score.
    """
    order = read_class_order(*folders)
    standard = _STANDARD[variant]
    if order is None:
        return list(standard)
    known = {_key(n) for n in standard}
    foreign = [n for n in order if _key(n) not in known]
    if len(order) > len(standard) or foreign:
        where = next(f / "classes.json" for f in folders if (f / "classes.json").is_file())
        label, other = ("CIFAR-100", "CIFAR-10") if variant == "cifar100" else ("CIFAR-10", "CIFAR-100")
        shown = ", ".join((foreign or order)[:4]) + (", ..." if len(foreign or order) > 4 else "")
        raise DatasetFormatError(f"{label} needs {len(standard)} classes, but {where} lists {len(order)}"
                                 + (f" that are not {label}'s ({shown})" if foreign else "")
                                 + f": is this {other}? (use --dataset {other.lower().replace('-', '')})")
    return order


def open_cifar(root: str | Path, split: str = "test", transform: Callable | None = None,
               variant: str = "cifar10") -> LabelledDataset:
    """Open CIFAR-10/100 from whichever layout `root` holds (see CIFAR_LAYOUT).

    A zip or folder must hold the asked split (`train_jpeg.zip` is not the test set) and the
    variant's number of classes (a CIFAR-10 folder is not CIFAR-100): both used to be accepted
    and reported under the asked names.
    """
    if variant not in _PICKLE:
        raise ValueError(f"variant must be cifar10 or cifar100, got {variant!r}")
    root = Path(root)
    if root.is_file() and root.suffix == ".zip":
        order = _class_order(variant, root.parent)
        return ZipImageFolder(root, split, transform, class_order=order, name=variant)
    if is_tar_archive(root):
        return CIFARPickle(root, split, transform, variant)
    if root.is_file():
        raise DatasetLayoutError(f"{root} is a file but neither a zip of class folders nor CIFAR's tar.gz download"
                                 f"\nexpected layout:\n{CIFAR_LAYOUT}")
    if not root.is_dir():
        raise DatasetLayoutError(f"missing folder {root}\nexpected layout:\n{CIFAR_LAYOUT}")
    if _pickle_dir(root, variant) is not None:
        return CIFARPickle(root, split, transform, variant)
    order = _class_order(variant, root)
    for zip_name in (f"{split}_jpeg.zip", f"{split}.zip"):
        if (root / zip_name).is_file():
            return ZipImageFolder(root / zip_name, split, transform, class_order=order, name=variant)
    for base in (root / split, root):
        if base.is_dir() and any((base / c).is_dir() for c in order):
            dataset = ImageFolder(root, split, transform, class_order=order, name=variant)
            dataset.split = split
            return dataset
    raise DatasetLayoutError(
        f"no {variant} data under {root}: missing {root / _PICKLE[variant]['dir'] / _PICKLE[variant]['meta']}, "
        f"{root / f'{split}_jpeg.zip'} and class folders {root / split}/<class>/\nexpected layout:\n{CIFAR_LAYOUT}"
    )
