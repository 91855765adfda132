"""Stanford Cars (196 classes) from the original devkit .mat files or the CSV re-export.

The devkit's `class` field is 1-based (MATLAB). CSV re-exports differ: some keep 1-based ids,
some shift to 0-based. We decide from the data: any id 0 means 0-based; otherwise 1-based
(the devkit convention), checked against the number of class names.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Callable
from pathlib import Path

from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset

__all__ = ["CARS_LAYOUT", "StanfordCars", "detect_cars_layout"]

CARS_LAYOUT = """\
  devkit (.mat):  ROOT/devkit/cars_meta.mat            (class_names, 1x196 cell)
                  ROOT/devkit/cars_train_annos.mat     (annotations: bbox_x1..bbox_y2, class, fname)
                  ROOT/cars_test_annos_withlabels.mat  (or ROOT/devkit/; same fields)
                  ROOT/cars_train/*.jpg  ROOT/cars_test/*.jpg
  CSV:            ROOT/class_names.csv                 (one class name per row, in class-id order)
                  ROOT/cars_train_annos*.csv, ROOT/cars_test_annos*.csv  (header with fname, class)
                  ROOT/cars_train/*.jpg  ROOT/cars_test/*.jpg"""

_SEARCH = (".", "devkit", "stanford_cars", "stanford_cars/devkit")


def _find(root: Path, pattern: str) -> Path | None:
    for sub in _SEARCH:
        hits = sorted(glob.glob(os.path.join(glob.escape(str(root / sub)), pattern)))
        if hits:
            return Path(hits[0])
    return None


def detect_cars_layout(root: str | Path) -> str:
    root = Path(root)
    if _find(root, "cars_meta.mat"):
        return "mat"
    if _find(root, "class_names.csv"):
        return "csv"
    raise DatasetLayoutError(
        f"no Stanford Cars layout under {root}: missing {root / 'devkit' / 'cars_meta.mat'} "
        f"and {root / 'class_names.csv'}\nexpected layout:\n{CARS_LAYOUT}"
    )


def _image_dir(root: Path, split: str) -> Path:
    for sub in (f"cars_{split}/cars_{split}", f"cars_{split}", f"stanford_cars/cars_{split}"):
        if (root / sub).is_dir():
            return root / sub
    raise DatasetLayoutError(f"missing folder {root / f'cars_{split}'} (the {split} images)\n"
                             f"expected layout:\n{CARS_LAYOUT}")


def _mat_rows(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]], Path]:
    from ._mat import as_int, load_mat_key, records, strings

    meta = _find(root, "cars_meta.mat")
    assert meta is not None
    classnames = strings(load_mat_key(meta, "class_names"), meta)
    wanted = "cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat"
    annos = _find(root, wanted)
    if annos is None:
        hint = ""
        if split == "test" and _find(root, "cars_test_annos.mat"):
            hint = " (cars_test_annos.mat has no class labels; the labelled file is cars_test_annos_withlabels.mat)"
        raise DatasetLayoutError(f"missing file {root / 'devkit' / wanted}{hint}\nexpected layout:\n{CARS_LAYOUT}")
    rows = records(load_mat_key(annos, "annotations"), annos, ("class", "fname"))
    return classnames, [(str(r["fname"]).strip(), as_int(r["class"], annos, "class")) for r in rows], annos


def _read_class_names_csv(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]
    if rows and len(rows[0]) >= 1 and rows[0][-1].lower() in ("class_name", "class_names", "name", "classname"):
        rows = rows[1:]
    if not rows:
        raise DatasetFormatError(f"{path}: no class names")
    if all(len(r) >= 2 and r[0].isdigit() for r in rows):  # "id,name" rows
        rows = sorted(rows, key=lambda r: int(r[0]))
        return [r[1] for r in rows]
    return [r[0] if len(r) == 1 else ",".join(r) for r in rows]


def _csv_rows(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]], Path]:
    names_path = _find(root, "class_names.csv")
    assert names_path is not None
    classnames = _read_class_names_csv(names_path)
    annos = _find(root, f"cars_{split}_annos*.csv")
    if annos is None:
        raise DatasetLayoutError(f"missing file {root / f'cars_{split}_annos.csv'}\nexpected layout:\n{CARS_LAYOUT}")
    with open(annos, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [h.strip() for h in reader.fieldnames or []]
        if "fname" not in fields or "class" not in fields:
            raise DatasetFormatError(f"{annos}: needs columns fname and class (with labels), has {fields}")
        reader.fieldnames = fields
        rows = []
        for lineno, row in enumerate(reader, 2):
            try:
                rows.append((row["fname"].strip(), int(float(row["class"]))))
            except (TypeError, ValueError, AttributeError):
                raise DatasetFormatError(f"{annos} line {lineno}: bad fname/class {row!r}") from None
    return classnames, rows, annos


class StanfordCars(LabelledDataset):
    """Stanford Cars train/test; labels are 0..195 in class-name order."""

    def __init__(
        self, root: str | Path, split: str = "test", transform: Callable | None = None, layout: str | None = None
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"Stanford Cars split must be train or test, got {split!r}")
        root = Path(root)
        layout = layout or detect_cars_layout(root)
        classnames, rows, annos = (_mat_rows if layout == "mat" else _csv_rows)(root, split)
        ids = [c for _, c in rows]
        self.class_id_base = 0 if ids and min(ids) == 0 else 1
        if ids and (min(ids) < 0 or max(ids) - self.class_id_base >= len(classnames)):
            raise DatasetFormatError(
                f"{annos}: class ids span {min(ids)}..{max(ids)} but there are {len(classnames)} class names"
            )
        image_dir = _image_dir(root, split)
        present = {p.name for p in image_dir.iterdir()}
        samples, missing = [], []
        for fname, class_id in rows:
            name = Path(fname).name
            if name in present:
                samples.append((str(image_dir / name), class_id - self.class_id_base))
            else:
                missing.append(str(image_dir / name))
        super().__init__(samples, classnames, name="cars", split=split, root=root, transform=transform,
                         missing=missing, layout=layout)
