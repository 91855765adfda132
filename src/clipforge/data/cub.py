"""CUB-200-2011 birds in the original layout (metadata text files + images/NNN.Name/*.jpg).

The four metadata files are joined on image id. Listed-but-absent images are skipped and
counted in `missing` (subsets such as the 250-image mini copy keep the full classes.txt).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset, require_dir, require_file
from .classnames import clean_cub_name

__all__ = ["CUB", "CUB_LAYOUT", "read_cub_classes"]

CUB_LAYOUT = """\
  ROOT/ (or ROOT/CUB_200_2011/)
    classes.txt             <class_id> <NNN.Class_Name>       (ids 1..200)
    images.txt              <image_id> <NNN.Class_Name/file.jpg>
    image_class_labels.txt  <image_id> <class_id>
    train_test_split.txt    <image_id> <1 = train, 0 = test>
    images/NNN.Class_Name/*.jpg"""

_SPLITS = {"train": {1}, "test": {0}, "all": {0, 1}}


def _resolve_root(root: Path) -> Path:
    if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
        return root / "CUB_200_2011"
    return root


def _pairs(path: Path, numeric: bool = False) -> list[tuple[int, str]]:
    """Rows `<int id> <rest>` of a CUB metadata file (rest an integer too when `numeric`)."""
    rows = []
    with open(require_file(path, CUB_LAYOUT), encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.split(maxsplit=1)
            if len(parts) != 2 or not parts[0].isdigit() or (numeric and not parts[1].strip().isdigit()):
                what = "<id> <integer>" if numeric else "<id> <value>"
                raise DatasetFormatError(f"{path} line {lineno}: expected '{what}', got {text!r}")
            rows.append((int(parts[0]), parts[1].strip()))
    return rows


def read_cub_classes(root: str | Path) -> tuple[list[str], list[str]]:
    """(cleaned names, raw names) in class-id order from classes.txt."""
    path = _resolve_root(Path(root)) / "classes.txt"
    rows = sorted(_pairs(path))
    ids = [i for i, _ in rows]
    if ids != list(range(1, len(ids) + 1)):
        raise DatasetFormatError(f"{path}: class ids should be 1..{len(ids)} without gaps")
    raw = [name for _, name in rows]
    return [clean_cub_name(n) for n in raw], raw


class CUB(LabelledDataset):
    """CUB-200-2011, `split` in train/test/all; labels are class_id - 1."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        if split not in _SPLITS:
            raise ValueError(f"CUB split must be one of {sorted(_SPLITS)}, got {split!r}")
        root = _resolve_root(Path(root))
        require_dir(root, CUB_LAYOUT)
        classnames, self.raw_classnames = read_cub_classes(root)
        images = dict(_pairs(root / "images.txt"))
        labels = dict(_pairs(root / "image_class_labels.txt", numeric=True))
        split_file = root / "train_test_split.txt"
        if not split_file.is_file() and split != "all":  # said before a layout dump, with the way on
            raise DatasetLayoutError(f"missing file {split_file}: CUB's {split} split is read from it; without it "
                                     "only --split all (every image) can be evaluated\nexpected layout:\n" + CUB_LAYOUT)
        is_train = dict(_pairs(split_file, numeric=True)) if split_file.is_file() else dict.fromkeys(images, 0)
        image_dir = require_dir(root / "images", CUB_LAYOUT)
        samples, missing = [], []
        for image_id in sorted(images):
            for table, fname in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
                if image_id not in table:
                    raise DatasetFormatError(f"{root / fname}: no entry for image id {image_id} of images.txt")
            if int(is_train[image_id]) not in _SPLITS[split]:
                continue
            class_id = int(labels[image_id])
            if not 1 <= class_id <= len(classnames):
                raise DatasetFormatError(
                    f"{root / 'image_class_labels.txt'}: image {image_id} has class {class_id}, "
                    f"outside 1..{len(classnames)} of classes.txt"
                )
            path = image_dir / images[image_id]
            if path.is_file():
                samples.append((str(path), class_id - 1))
            else:
                missing.append(str(path))
        super().__init__(samples, classnames, name="cub", split=split, root=root, transform=transform,
                         missing=missing, layout="cub200-2011")
