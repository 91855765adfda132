"""Remote-sensing, traffic, synthetic and rendered-text sets of the CLIP paper in their official
layouts: EuroSAT, RESISC45, GTSRB, Country211, Rendered SST2, CLEVR counts, KITTI distance.

EuroSAT and RESISC45 have no official split: a seeded per-class split with the CLIP paper's sizes
(Table 9) is used (RESISC45 takes torchgeo's split files when present). KITTI's distance task is
VTAB's: the closest Car/Van/Truck's depth (z) below 8 m, 8-20 m, beyond 20 m, or no vehicle; its
test set here is the last 711 of the 7,481 labelled images (9.5% of a partial copy) (the paper's size; TFDS splits
by drive sequence, which needs a mapping the archives do not carry).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset
from .native import find_base, image_files, read_lines, seeded_split, split_choice

__all__ = ["CLEVRCounts", "Country211", "EuroSAT", "GTSRB", "KITTIDistance", "RESISC45", "RenderedSST2"]

EUROSAT_LAYOUT = "  ROOT/eurosat/2750/<Class>/<Class>_N.jpg (or ROOT/2750/, ROOT/EuroSAT/2750/)"
RESISC_LAYOUT = "  ROOT/NWPU-RESISC45/<class>/<class>_NNN.jpg; optional torchgeo resisc45-{train,val,test}.txt"
GTSRB_LAYOUT = "  ROOT/gtsrb/GTSRB/Training/000NN/*.ppm (train)\n" \
               "  ROOT/gtsrb/GTSRB/Final_Test/Images/*.ppm + ROOT/gtsrb/GT-final_test.csv (test; ';'-separated)"
COUNTRY_LAYOUT = "  ROOT/country211/{train,valid,test}/<ISO code>/*.jpg"
SST2_LAYOUT = "  ROOT/rendered-sst2/{train,valid,test}/{negative,positive}/*.png"
CLEVR_LAYOUT = "  ROOT/CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json, ROOT/CLEVR_v1.0/images/{train,val}/*.png"
KITTI_LAYOUT = "  ROOT/kitti/training/image_2/NNNNNN.png, ROOT/kitti/training/label_2/NNNNNN.txt"


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _folder_samples(base: Path, classes: list[str]) -> list[tuple[str, int]]:
    return [(str(base / c / n), i) for i, c in enumerate(classes) if (base / c).is_dir() for n in image_files(base / c)]


class EuroSAT(LabelledDataset):
    SIZES = {"test": 500, "train": 1000}  # per class; the paper's 5,000 test / 10,000 train

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test"}, "eurosat")
        root = Path(root)
        base = next((b for b in (root / "2750", root / "eurosat" / "2750", root / "EuroSAT" / "2750", root)
                     if b.is_dir() and (b / "AnnualCrop").is_dir()), None)
        if base is None:
            raise DatasetLayoutError(f"missing folder {root / '2750' / 'AnnualCrop'}\nexpected layout:\n{EUROSAT_LAYOUT}")
        classes = _class_dirs(base)
        every = _folder_samples(base, classes)
        chosen = seeded_split([lab for _, lab in every], self.SIZES, split)
        super().__init__([every[i] for i in chosen], classes, name="eurosat", split=split, root=base,
                         transform=transform, layout="eurosat-2750")


class RESISC45(LabelledDataset):
    SIZES = {"train": 70, "val": 70, "test": None}  # per class of 700: the paper's 3,150 train / 25,200 test

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "val": "val", "test": "test"}, "resisc45")
        root = Path(root)
        base = next((b for b in (root / "NWPU-RESISC45", root) if b.is_dir() and (b / "airplane").is_dir()), None)
        if base is None:
            raise DatasetLayoutError(f"missing folder {root / 'NWPU-RESISC45' / 'airplane'}\n"
                                     f"expected layout:\n{RESISC_LAYOUT}")
        classes = _class_dirs(base)
        every = _folder_samples(base, classes)
        listed = next((d / f"resisc45-{split}.txt" for d in (base, base.parent) if (d / f"resisc45-{split}.txt").is_file()),
                      None)
        if listed is not None:
            names = set(read_lines(listed, RESISC_LAYOUT))
            samples = [s for s in every if os.path.basename(s[0]) in names]
        else:
            samples = [every[i] for i in seeded_split([lab for _, lab in every], self.SIZES, split)]
        super().__init__(samples, [c.replace("_", " ") for c in classes], name="resisc45", split=split, root=base,
                         transform=transform, layout="nwpu-resisc45")


class GTSRB(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test"}, "gtsrb")
        base = find_base(root, ["gtsrb"], "GTSRB", GTSRB_LAYOUT)
        classes = [str(i) for i in range(43)]
        samples, missing = [], []
        if split == "train":
            train = base / "GTSRB" / "Training"
            if not train.is_dir():
                raise DatasetLayoutError(f"missing folder {train}\nexpected layout:\n{GTSRB_LAYOUT}")
            for folder in _class_dirs(train):
                if not folder.isdigit() or int(folder) >= 43:
                    raise DatasetFormatError(f"{train / folder}: expected class folders 00000..00042")
                samples += [(str(train / folder / n), int(folder)) for n in image_files(train / folder, {".ppm"})]
        else:
            images = base / "GTSRB" / "Final_Test" / "Images"
            gt = next((p for p in (base / "GT-final_test.csv", images / "GT-final_test.csv") if p.is_file()), None)
            if gt is None:
                raise DatasetLayoutError(f"missing file {base / 'GT-final_test.csv'}\nexpected layout:\n{GTSRB_LAYOUT}")
            with open(gt, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f, delimiter=";", skipinitialspace=True):
                    if "Filename" not in row or "ClassId" not in row:
                        raise DatasetFormatError(f"{gt}: needs Filename and ClassId columns")
                    path = images / row["Filename"]
                    (samples if path.is_file() else missing).append((str(path), int(row["ClassId"])))
        super().__init__(samples, classes, name="gtsrb", split=split, root=base, transform=transform,
                         missing=[p for p, _ in missing], layout="gtsrb")


class Country211(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "val": "valid", "valid": "valid", "test": "test"}, "country211")
        base = find_base(root, ["country211"], split, COUNTRY_LAYOUT)
        classes = sorted(set().union(*(_class_dirs(base / s) for s in ("train", "valid", "test") if (base / s).is_dir())))
        super().__init__(_folder_samples(base / split, classes), classes, name="country211", split=split, root=base,
                         transform=transform, layout="country211")


class RenderedSST2(LabelledDataset):
    CLASSES = ["negative", "positive"]

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "val": "valid", "valid": "valid", "test": "test"},
                             "rendered_sst2")
        base = find_base(root, ["rendered-sst2"], split, SST2_LAYOUT)
        super().__init__(_folder_samples(base / split, self.CLASSES), self.CLASSES, name="rendered_sst2",
                         split=split, root=base, transform=transform, layout="rendered-sst2")


class CLEVRCounts(LabelledDataset):
    """Label = number of objects - 3 (scenes hold 3..10); CLEVR's test split has no scenes, so the
    evaluation split is val."""

    CLASSES = [str(n) for n in range(3, 11)]

    def __init__(self, root: str | Path, split: str = "val", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "val": "val", "test": "val"}, "clevr_counts")
        base = find_base(root, ["CLEVR_v1.0", "clevr/CLEVR_v1.0"], "scenes", CLEVR_LAYOUT)
        path = base / "scenes" / f"CLEVR_{split}_scenes.json"
        if not path.is_file():
            raise DatasetLayoutError(f"missing file {path}\nexpected layout:\n{CLEVR_LAYOUT}")
        with open(path, encoding="utf-8") as f:
            scenes = json.load(f).get("scenes", [])
        samples, missing = [], []
        for scene in sorted(scenes, key=lambda s: s["image_filename"]):
            count = len(scene.get("objects", []))
            if not 3 <= count <= 10:
                raise DatasetFormatError(f"{path}: {scene['image_filename']} has {count} objects (CLEVR has 3..10)")
            image = base / "images" / split / scene["image_filename"]
            (samples if image.is_file() else missing).append((str(image), count - 3))
        super().__init__(samples, self.CLASSES, name="clevr_counts", split=split, root=base, transform=transform,
                         missing=[p for p, _ in missing], layout="clevr-v1.0")


KITTI_VEHICLES = ("Car", "Van", "Truck")
KITTI_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)  # VTAB's closest_vehicle_distance bins (metres of depth)


def kitti_distance_label(label_file: Path) -> int:
    """VTAB's label: the largest bin whose threshold lies below the closest vehicle's depth (1000 if none)."""
    depths = [1000.0]
    for lineno, line in enumerate(read_lines(label_file, KITTI_LAYOUT), 1):
        fields = line.split()
        if len(fields) < 15:
            raise DatasetFormatError(f"{label_file} line {lineno}: {len(fields)} fields, KITTI labels have 15")
        if fields[0] in KITTI_VEHICLES:
            depths.append(float(fields[13]))
    closest = min(depths)
    return max(i for i, t in enumerate(KITTI_THRESHOLDS) if t - closest < 0)


class KITTIDistance(LabelledDataset):
    CLASSES = ["car on my left or right side", "car nearby", "car in the distance", "no car"]
    TEST_FRACTION = 711 / 7481  # the paper's 711 test images of the 7,481 with labels

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test"}, "kitti_distance")
        base = find_base(root, ["kitti", "KITTI", "Kitti/raw", "raw"], "training/label_2", KITTI_LAYOUT)
        images, labels = base / "training" / "image_2", base / "training" / "label_2"
        ids = sorted(n[:-4] for n in os.listdir(labels) if n.endswith(".txt"))
        n_test = max(1, round(len(ids) * self.TEST_FRACTION))
        ids = ids[-n_test:] if split == "test" else ids[:-n_test]
        samples, missing = [], []
        for image_id in ids:
            path = images / f"{image_id}.png"
            (samples if path.is_file() else missing).append((str(path), kitti_distance_label(labels / f"{image_id}.txt")))
        super().__init__(samples, self.CLASSES, name="kitti_distance", split=split, root=base, transform=transform,
                         missing=[p for p, _ in missing], layout="kitti-object")
