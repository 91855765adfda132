"""Natural-image classification sets of the CLIP paper in their official archives' layouts:
Food-101, SUN397, DTD, Oxford-IIIT Pets, Caltech-101, Flowers-102, FGVC-Aircraft, Birdsnap.

Class order is each dataset's own (what torchvision and CLIP_benchmark use): Food-101 sorted
class keys, SUN397 `ClassName.txt`, DTD sorted texture folders, Pets the class ids of
`annotations/list.txt`, Caltech-101 sorted category folders (BACKGROUND_Google included, as the
CLIP paper's 102 classes are), Flowers-102 the label ids of `imagelabels.mat`, Aircraft
`variants.txt`, Birdsnap `species.txt` ids. Prompt names are matched to these in the evaluate layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._mat import load_mat_key
from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset
from .native import find_base, image_files, read_lines, seeded_split, split_choice

__all__ = ["DTD", "Birdsnap", "Caltech101", "FGVCAircraft", "Flowers102", "Food101", "OxfordPets", "SUN397"]

FOOD_LAYOUT = "  ROOT/food-101/meta/{train,test}.json ({class: [\"class/id\", ...]}) or meta/{train,test}.txt\n" \
              "  ROOT/food-101/images/<class>/<id>.jpg"
SUN_LAYOUT = "  ROOT/SUN397/ClassName.txt (/a/abbey ...), ROOT/SUN397/a/abbey/sun_*.jpg\n" \
             "  optional official partitions: ROOT/{,SUN397/,Partitions/}{Training,Testing}_01.txt"
DTD_LAYOUT = "  ROOT/dtd/images/<texture>/<texture>_NNNN.jpg, ROOT/dtd/labels/{train,val,test}{1..10}.txt"
PETS_LAYOUT = "  ROOT/oxford-iiit-pet/images/<Breed_name>_<n>.jpg\n" \
              "  ROOT/oxford-iiit-pet/annotations/{trainval,test,list}.txt (\"<image id> <class id> <species> <breed>\")"
CALTECH_LAYOUT = "  ROOT/caltech101/101_ObjectCategories/<category>/image_NNNN.jpg (102 folders incl. BACKGROUND_Google)"
FLOWERS_LAYOUT = "  ROOT/flowers-102/jpg/image_NNNNN.jpg, ROOT/flowers-102/imagelabels.mat (labels 1..102),\n" \
                 "  ROOT/flowers-102/setid.mat (trnid, valid, tstid)"
AIRCRAFT_LAYOUT = "  ROOT/fgvc-aircraft-2013b/data/variants.txt, data/images_variant_{train,val,trainval,test}.txt\n" \
                  "  (\"<image id> <variant>\"), data/images/<image id>.jpg"
BIRDSNAP_LAYOUT = "  ROOT/birdsnap/species.txt (tab-separated id, common, scientific, dir; with header)\n" \
                  "  ROOT/birdsnap/test_images.txt (header 'path', then <dir>/<file>.jpg), ROOT/birdsnap/images.txt\n" \
                  "  ROOT/birdsnap/download/images/<dir>/<file>.jpg (what get_birdsnap.py fetches)"


class Food101(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test", "val": "test"}, "food101")
        base = find_base(root, ["food-101"], "meta", FOOD_LAYOUT)
        meta = base / "meta"
        if (meta / f"{split}.json").is_file():
            with open(meta / f"{split}.json", encoding="utf-8") as f:
                table = json.load(f)
            if not isinstance(table, dict):
                raise DatasetFormatError(f"{meta / f'{split}.json'}: expected {{class: [ids]}}")
        else:
            table = {}
            for line in read_lines(meta / f"{split}.txt", FOOD_LAYOUT):
                table.setdefault(line.split("/", 1)[0], []).append(line)
        classes = read_lines(meta / "classes.txt", FOOD_LAYOUT) if (meta / "classes.txt").is_file() else sorted(table)
        index = {c: i for i, c in enumerate(classes)}
        samples, missing = [], []
        for cls in sorted(table):
            if cls not in index:
                raise DatasetFormatError(f"{meta}: class {cls!r} of the {split} list is not in classes.txt")
            for rel in table[cls]:
                path = base / "images" / f"{rel}.jpg"
                (samples if path.is_file() else missing).append((str(path), index[cls]))
        super().__init__(samples, classes, name="food101", split=split, root=base, transform=transform,
                         missing=[p for p, _ in missing], layout="food-101")


def _sun_partition(base: Path, split: str) -> Path | None:
    name = {"train": "Training_01.txt", "test": "Testing_01.txt"}[split]
    for folder in (base, base / "Partitions", base.parent, base.parent / "Partitions"):
        if (folder / name).is_file():
            return folder / name
    return None


class SUN397(LabelledDataset):
    """Labels from ClassName.txt; with the official partition files, their split 01; without them,
    every image is in "test" (the whole set), as torchvision reads it."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test", "val": "test"}, "sun397")
        base = find_base(root, ["SUN397"], "ClassName.txt", SUN_LAYOUT)
        raw = read_lines(base / "ClassName.txt", SUN_LAYOUT)
        keys = [c.lstrip("/")[2:] if c.lstrip("/")[1:2] == "/" else c.lstrip("/") for c in raw]  # /a/abbey -> abbey
        index = {k: i for i, k in enumerate(keys)}
        partition = _sun_partition(base, split)
        samples, missing = [], []
        if partition is not None:
            for line in read_lines(partition, SUN_LAYOUT):
                rel = line.lstrip("/")
                key = "/".join(rel.split("/")[1:-1])
                if key not in index:
                    raise DatasetFormatError(f"{partition}: {line!r} names no class of ClassName.txt")
                path = base / rel
                (samples if path.is_file() else missing).append((str(path), index[key]))
        elif split == "train":
            raise DatasetLayoutError(f"missing Training_01.txt beside {base} (SUN397's official partitions)\n"
                                     f"expected layout:\n{SUN_LAYOUT}")
        else:
            for key, label in index.items():
                folder = base / key[0] / key
                if folder.is_dir():
                    samples += [(str(folder / n), label) for n in image_files(folder) if n.startswith("sun_")]
        super().__init__(samples, [k.replace("/", " ").replace("_", " ") for k in keys], name="sun397", split=split,
                         root=base, transform=transform, missing=[p for p, _ in missing], layout="sun397")
        self.folder_names = keys


class DTD(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None,
                 partition: int = 1) -> None:
        split = split_choice(split, {"train": "train", "val": "val", "test": "test"}, "dtd")
        if not 1 <= int(partition) <= 10:
            raise ValueError(f"DTD partition must be 1..10, got {partition}")
        base = find_base(root, ["dtd", "dtd/dtd"], "labels", DTD_LAYOUT)
        lines = read_lines(base / "labels" / f"{split}{partition}.txt", DTD_LAYOUT)
        if (base / "images").is_dir():
            classes = sorted(e.name for e in os.scandir(base / "images") if e.is_dir())
        else:
            classes = sorted({line.split("/", 1)[0] for line in lines})
        index = {c: i for i, c in enumerate(classes)}
        samples, missing = [], []
        for line in lines:
            cls = line.split("/", 1)[0]
            if cls not in index:
                raise DatasetFormatError(f"{base / 'labels'}: {line!r} names no texture folder")
            path = base / "images" / line
            (samples if path.is_file() else missing).append((str(path), index[cls]))
        super().__init__(samples, classes, name="dtd", split=split, root=base, transform=transform,
                         missing=[p for p, _ in missing], layout="dtd")


def _pet_name(image_id: str) -> str:
    return " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))


class OxfordPets(LabelledDataset):
    """Label = class id - 1 of the annotation files; names from the image ids (as torchvision)."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "trainval", "trainval": "trainval", "test": "test"}, "pets")
        base = find_base(root, ["oxford-iiit-pet"], "annotations", PETS_LAYOUT)
        ann = base / "annotations"

        def rows(name: str) -> list[tuple[str, int]]:
            out = []
            for line in read_lines(ann / name, PETS_LAYOUT):
                if line.startswith("#"):
                    continue
                parts = line.split()
                if len(parts) < 2 or not parts[1].isdigit():
                    raise DatasetFormatError(f"{ann / name}: {line!r} is not '<image id> <class id> ...'")
                out.append((parts[0], int(parts[1]) - 1))
            return out

        chosen = rows(f"{split}.txt")
        catalogue = rows("list.txt") if (ann / "list.txt").is_file() else chosen + rows(
            "trainval.txt" if split == "test" else "test.txt")
        names: dict[int, str] = {}
        for image_id, label in catalogue:
            names.setdefault(label, _pet_name(image_id))
        if sorted(names) != list(range(len(names))):
            raise DatasetFormatError(f"{ann}: class ids are not 1..{len(names)} without gaps")
        samples, missing = [], []
        for image_id, label in chosen:
            path = base / "images" / f"{image_id}.jpg"
            (samples if path.is_file() else missing).append((str(path), label))
        super().__init__(samples, [names[i] for i in range(len(names))], name="pets", split=split, root=base,
                         transform=transform, missing=[p for p, _ in missing], layout="oxford-iiit-pet")


class Caltech101(LabelledDataset):
    """No official split: per class, a seeded 30 images train and the rest test (the CLIP paper's
    3,060 / 6,085; Table 9)."""

    SIZES = {"train": 30, "test": None}

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test"}, "caltech101")
        base = find_base(root, ["caltech101", "caltech-101"], "101_ObjectCategories", CALTECH_LAYOUT)
        cats = base / "101_ObjectCategories"
        classes = sorted(e.name for e in os.scandir(cats) if e.is_dir() and not e.name.startswith("."))
        every = [(str(cats / c / n), i) for i, c in enumerate(classes) for n in image_files(cats / c)]
        chosen = seeded_split([lab for _, lab in every], self.SIZES, split)
        super().__init__([every[i] for i in chosen], classes, name="caltech101", split=split, root=base,
                         transform=transform, layout="caltech101")


class Flowers102(LabelledDataset):
    """Labels 1..102 of imagelabels.mat (minus one); splits from setid.mat. The archive has no class
    names, so the own names are the label numbers; prompts use the published names in this order."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        key = split_choice(split, {"train": "trnid", "val": "valid", "test": "tstid"}, "flowers102")
        base = find_base(root, ["flowers-102", "flowers102"], "imagelabels.mat", FLOWERS_LAYOUT)
        labels = np.asarray(load_mat_key(base / "imagelabels.mat", "labels")).reshape(-1).astype(int)
        if not (base / "setid.mat").is_file():
            raise DatasetLayoutError(f"missing file {base / 'setid.mat'}\nexpected layout:\n{FLOWERS_LAYOUT}")
        ids = np.asarray(load_mat_key(base / "setid.mat", key)).reshape(-1).astype(int)
        n_classes = int(labels.max()) if len(labels) else 0
        samples, missing = [], []
        for image_id in ids.tolist():
            if not 1 <= image_id <= len(labels):
                raise DatasetFormatError(f"{base / 'setid.mat'}: image id {image_id} outside 1..{len(labels)}")
            path = base / "jpg" / f"image_{image_id:05d}.jpg"
            (samples if path.is_file() else missing).append((str(path), int(labels[image_id - 1]) - 1))
        super().__init__(samples, [str(i + 1) for i in range(max(n_classes, 102))], name="flowers102",
                         split=split, root=base, transform=transform, missing=[p for p, _ in missing],
                         layout="flowers-102")


class FGVCAircraft(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {s: s for s in ("train", "val", "trainval", "test")}, "fgvc_aircraft")
        base = find_base(root, ["fgvc-aircraft-2013b"], "data/variants.txt", AIRCRAFT_LAYOUT)
        data = base / "data"
        classes = read_lines(data / "variants.txt", AIRCRAFT_LAYOUT)
        index = {c: i for i, c in enumerate(classes)}
        samples, missing = [], []
        for line in read_lines(data / f"images_variant_{split}.txt", AIRCRAFT_LAYOUT):
            image_id, _, variant = line.partition(" ")
            if variant not in index:
                raise DatasetFormatError(f"{data}/images_variant_{split}.txt: variant {variant!r} not in variants.txt")
            path = data / "images" / f"{image_id}.jpg"
            (samples if path.is_file() else missing).append((str(path), index[variant]))
        super().__init__(samples, classes, name="fgvc_aircraft", split=split, root=base, transform=transform,
                         missing=[p for p, _ in missing], layout="fgvc-aircraft-2013b")


class Birdsnap(LabelledDataset):
    """Test = test_images.txt (the official 2,443 images); train = the rest of images.txt."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {"train": "train", "test": "test"}, "birdsnap")
        base = find_base(root, ["birdsnap"], "species.txt", BIRDSNAP_LAYOUT)
        species = [line.split("\t") for line in read_lines(base / "species.txt", BIRDSNAP_LAYOUT)]
        if species and not species[0][0].isdigit():
            species = species[1:]  # header row
        if any(len(row) < 4 or not row[0].isdigit() for row in species):
            raise DatasetFormatError(f"{base / 'species.txt'}: expected tab-separated id, common, scientific, dir")
        species.sort(key=lambda row: int(row[0]))
        classes = [row[1] for row in species]
        by_dir = {row[3]: i for i, row in enumerate(species)}

        def paths(name: str) -> list[str]:
            lines = read_lines(base / name, BIRDSNAP_LAYOUT)
            header = lines[0].split("\t") if lines else []
            col = header.index("path") if "path" in header else 0
            return [line.split("\t")[col] for line in lines[1:]]

        test = paths("test_images.txt")
        rels = test if split == "test" else [p for p in paths("images.txt") if p not in set(test)]
        images = base / "download" / "images" if (base / "download" / "images").is_dir() else base / "images"
        samples, missing = [], []
        for rel in rels:
            folder = rel.split("/", 1)[0]
            if folder not in by_dir:
                raise DatasetFormatError(f"{base}: image {rel!r} is in no species folder of species.txt")
            path = images / rel
            (samples if path.is_file() else missing).append((str(path), by_dir[folder]))
        super().__init__(samples, classes, name="birdsnap", split=split, root=base, transform=transform,
                         missing=[p for p, _ in missing], layout="birdsnap")
