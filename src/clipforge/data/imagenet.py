"""ImageNet (ILSVRC2012) validation set in the four layouts people actually have on disk.

Labels are always the position of the wnid in the sorted list of the 1000 ILSVRC2012 synsets
(0..999), the convention of every pretrained classifier and of OpenAI's class-name list. The
devkit's ground-truth file does NOT use that convention: it holds ILSVRC2012_IDs (1..1000, in
meta.mat's order, which groups synsets by WordNet hierarchy), so we map
ILSVRC2012_ID -> wnid (meta.mat) -> sorted-wnid index. Getting this wrong silently gives ~0.1%
accuracy with a perfect model.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .base import IMAGE_EXTENSIONS, DatasetFormatError, DatasetLayoutError, LabelledDataset, require_file
from .classnames import imagenet_classnames, imagenet_wnids, is_wnid, wnid_to_label

__all__ = ["IMAGENET_LAYOUT", "ImageNet", "detect_imagenet_layout", "read_devkit_id_to_wnid"]

IMAGENET_LAYOUT = """\
  one of (ROOT = the path you gave):
  devkit:  ROOT/ILSVRC2012_devkit_t12/data/meta.mat
           ROOT/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt
           ROOT/{ILSVRC2012_img_val,val,.}/ILSVRC2012_val_00000001.JPEG ... (50,000 files)
  folders: ROOT/val/<wnid>/*.JPEG  (or ROOT/<wnid>/*.JPEG), e.g. ROOT/val/n01440764/x.JPEG
  kaggle:  ROOT/LOC_val_solution.csv (columns ImageId,PredictionString starting with the wnid)
           ROOT/ILSVRC/Data/CLS-LOC/val/<ImageId>.JPEG  (or ROOT/val/, ROOT/)
  (ROOT may also be the folder of ILSVRC2012_val_*.JPEG itself, the labels up to four levels above)
  flat:    ROOT/<wnid>_anything.JPEG  (or ROOT/images/...), e.g. n01440764_tench.JPEG"""

_GT = "ILSVRC2012_validation_ground_truth.txt"
_DEVKIT_DIRS = ("ILSVRC2012_devkit_t12/data", "data", ".")
_VAL_IMAGE_DIRS = ("ILSVRC2012_img_val", "val", ".")
_KAGGLE_IMAGE_DIRS = ("ILSVRC/Data/CLS-LOC/val", "val", ".")


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _holds_val_images(folder: Path) -> bool:
    try:
        return any(n.startswith("ILSVRC2012_val_") and _is_image(n) for n in os.listdir(folder))
    except OSError:
        return False


def _label_homes(root: Path) -> list[Path]:
    """Where labels for `root`'s images may live: `root`, and when `root` is itself the folder of
    ILSVRC2012_val_*.JPEG images, its ancestors (Kaggle's csv is four levels above
    ILSVRC/Data/CLS-LOC/val/, the devkit beside ILSVRC2012_img_val/): pointing --root at the images
    was refused with a screenful of layouts."""
    if not _holds_val_images(root):
        return [root]
    return [root, *list(root.resolve().parents)[:4]]


def _find_devkit(root: Path) -> Path | None:
    for home in _label_homes(root):
        for sub in _DEVKIT_DIRS:
            if (home / sub / _GT).is_file():
                return home / sub
    return None


def _kaggle_csv(root: Path) -> Path | None:
    return next((h / "LOC_val_solution.csv" for h in _label_homes(root) if (h / "LOC_val_solution.csv").is_file()),
                None)


def _find_devkit_images(root: Path) -> Path | None:
    for sub in _VAL_IMAGE_DIRS:
        folder = root / sub
        if folder.is_dir() and _holds_val_images(folder):
            return folder
    return None


def _wnid_folder_root(root: Path, split: str) -> Path | None:
    for folder in (root / split, root):
        if folder.is_dir() and any(is_wnid(e.name) and e.is_dir() for e in os.scandir(folder)):
            return folder
    return None


def _flat_dir(root: Path) -> Path | None:
    for folder in (root, root / "images"):
        if folder.is_dir() and any(is_wnid(n[:9]) and _is_image(n) for n in os.listdir(folder)):
            return folder
    return None


def detect_imagenet_layout(root: str | Path, split: str = "val") -> str:
    """'devkit', 'kaggle', 'folders' or 'flat'; raises DatasetLayoutError naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"ImageNet root {root} is not a folder\nexpected layout:\n{IMAGENET_LAYOUT}")
    devkit = _find_devkit(root)
    if devkit is not None and _find_devkit_images(root) is not None:
        return "devkit"
    if _kaggle_csv(root) is not None:
        return "kaggle"
    if _wnid_folder_root(root, split) is not None:
        return "folders"
    if _flat_dir(root) is not None:
        return "flat"
    if devkit is not None:
        raise DatasetLayoutError(
            f"found the devkit ground truth {devkit / _GT} but no validation images "
            f"ILSVRC2012_val_*.JPEG in any of {[str(root / d) for d in _VAL_IMAGE_DIRS]}\n"
            f"expected layout:\n{IMAGENET_LAYOUT}"
        )
    raise DatasetLayoutError(
        f"no ImageNet layout recognised under {root}: missing {root / 'ILSVRC2012_devkit_t12/data' / _GT}, "
        f"{root / 'LOC_val_solution.csv'}, wnid folders and wnid-named images\n"
        f"expected layout:\n{IMAGENET_LAYOUT}"
    )


def read_devkit_id_to_wnid(meta_path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid for the leaf synsets (the 1000 classes) of a devkit meta.mat."""
    from ._mat import as_int, load_mat_key, records

    rows = records(load_mat_key(meta_path, "synsets"), meta_path, ("ILSVRC2012_ID", "WNID"))
    mapping: dict[int, str] = {}
    for row in rows:
        ident = as_int(row["ILSVRC2012_ID"], meta_path, "ILSVRC2012_ID")
        children = as_int(row["num_children"], meta_path, "num_children") if "num_children" in row else 0
        if children == 0 and 1 <= ident <= 1000:
            mapping[ident] = str(row["WNID"]).strip()
    if not mapping:
        raise DatasetFormatError(f"{meta_path}: no leaf synsets with ILSVRC2012_ID in 1..1000")
    unknown = sorted(w for w in mapping.values() if wnid_to_label(w) is None)
    if unknown:
        raise DatasetFormatError(f"{meta_path}: wnids not among the 1000 ILSVRC2012 classes: {unknown[:5]}")
    return mapping


def _label(wnid: str, where: str) -> int:
    label = wnid_to_label(wnid)
    if label is None:
        raise DatasetFormatError(f"{where}: {wnid!r} is not one of the 1000 ILSVRC2012 wnids")
    return label


def _devkit_samples(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    devkit = _find_devkit(root)
    assert devkit is not None
    meta = require_file(devkit / "meta.mat", IMAGENET_LAYOUT)
    id_to_wnid = read_devkit_id_to_wnid(meta)
    images = _find_devkit_images(root)
    if images is None:
        raise DatasetLayoutError(f"no ILSVRC2012_val_*.JPEG images under {root}\nexpected layout:\n{IMAGENET_LAYOUT}")
    present = set(os.listdir(images))
    samples, missing = [], []
    gt = devkit / _GT
    with open(gt, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            try:
                wnid = id_to_wnid[int(text)]
            except (ValueError, KeyError):
                raise DatasetFormatError(
                    f"{gt} line {lineno}: {text!r} is not an ILSVRC2012_ID of a class in {meta}"
                ) from None
            name = f"ILSVRC2012_val_{lineno:08d}.JPEG"
            if name in present:
                samples.append((str(images / name), _label(wnid, str(meta))))
            else:
                missing.append(str(images / name))
    return samples, missing


def _kaggle_samples(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    csv_path = _kaggle_csv(root) or root / "LOC_val_solution.csv"
    folder = next((root / d for d in _KAGGLE_IMAGE_DIRS if (root / d).is_dir()
                   and any(n.startswith("ILSVRC2012_val_") for n in os.listdir(root / d))), None)
    if folder is None:
        raise DatasetLayoutError(
            f"found {csv_path} but no ILSVRC2012_val_*.JPEG images in any of "
            f"{[str(root / d) for d in _KAGGLE_IMAGE_DIRS]}\nexpected layout:\n{IMAGENET_LAYOUT}"
        )
    present = set(os.listdir(folder))
    samples, missing = [], []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DatasetFormatError(f"{csv_path}: header should be ImageId,PredictionString, got {header}")
        rows = sorted((row for row in reader if row), key=lambda r: r[0])
    for row in rows:
        line = f"{csv_path} row ImageId={row[0]}"
        words = row[1].split() if len(row) > 1 else []
        if not words:
            raise DatasetFormatError(f"{line}: empty PredictionString (expected '<wnid> x1 y1 x2 y2 ...')")
        name = row[0].strip() + ".JPEG"
        if name in present:
            samples.append((str(folder / name), _label(words[0], line)))
        else:
            missing.append(str(folder / name))
    return samples, missing


def _folder_samples(root: Path, split: str) -> list[tuple[str, int]]:
    folder = _wnid_folder_root(root, split)
    assert folder is not None
    samples = []
    for wnid in sorted(e.name for e in os.scandir(folder) if e.is_dir()):
        if not is_wnid(wnid):
            continue
        label = _label(wnid, str(folder / wnid))
        samples += [(str(folder / wnid / n), label) for n in sorted(os.listdir(folder / wnid)) if _is_image(n)]
    return samples


def _flat_samples(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    folder = _flat_dir(root)
    assert folder is not None
    samples, unlabelled = [], []
    for name in sorted(os.listdir(folder)):
        if not _is_image(name):
            continue
        label = wnid_to_label(name[:9]) if is_wnid(name[:9]) else None
        if label is None:
            unlabelled.append(str(folder / name))
        else:
            samples.append((str(folder / name), label))
    return samples, unlabelled


class ImageNet(LabelledDataset):
    """ImageNet validation images (or `train` in the folders layout), layout auto-detected.

    `classnames` defaults to OpenAI's 1000 names (see `classnames.imagenet_classnames`);
    `unlabelled` lists flat-layout images whose name does not start with a known wnid.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        transform: Callable | None = None,
        layout: str | None = None,
        classnames: Sequence[str] | None = None,
    ) -> None:
        root = Path(root)
        split = "val" if split in ("val", "validation", "test") else split
        if split != "val" and layout not in (None, "folders"):
            raise ValueError(f"ImageNet split {split!r} exists only in the folders layout (ROOT/{split}/<wnid>/)")
        layout = layout or detect_imagenet_layout(root, split)
        if split != "val" and layout != "folders":
            raise DatasetLayoutError(f"missing folder {root / split}/<wnid>/ for ImageNet split {split!r}")
        missing: list[str] = []
        self.unlabelled: list[str] = []
        if layout == "devkit":
            samples, missing = _devkit_samples(root)
        elif layout == "kaggle":
            samples, missing = _kaggle_samples(root)
        elif layout == "folders":
            samples = _folder_samples(root, split)
        elif layout == "flat":
            samples, self.unlabelled = _flat_samples(root)
        else:
            raise ValueError(f"unknown ImageNet layout {layout!r}; use devkit, kaggle, folders or flat")
        names = list(classnames) if classnames is not None else imagenet_classnames()
        if len(names) != 1000:
            raise ValueError(f"ImageNet needs 1000 class names, got {len(names)}")
        super().__init__(samples, names, name="imagenet", split=split, root=root, transform=transform,
                         missing=missing, layout=layout)
        self.wnids = imagenet_wnids()
