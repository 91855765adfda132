"""ImageNet's distribution-shift test sets as the CLIP paper evaluates them, and Pascal VOC 2007.

- ImageNet-V2 (matched frequency): folders `0..999` named by ImageNet label; all 1000 classes.
- ImageNet-Sketch: `sketch/<wnid>/`; all 1000 classes.
- ImageNet-A / ImageNet-R: `<wnid>/` folders of 200 classes. The paper scores them with the
  1000-way classifier restricted to those 200 classes; since each class embedding is
  independent, that is exactly a 200-way classifier of the same prompts, which is what these
  adapters give (labels 0..199 in sorted-wnid order; `imagenet_indices` maps back).
- ObjectNet: the 113 classes that map to ImageNet (`mappings/objectnet_to_imagenet_1k.json`),
  prompted with ObjectNet's own class names as CLIP_benchmark does; each image's 1-pixel red
  border is cropped (2 px a side) before preprocessing.
- VOC 2007 classification: multi-label; `multilabels` [N, 20] holds 1 / 0 (difficult) / -1
  from `ImageSets/Main/<class>_<split>.txt`, scored with mAP only (the devkit's 11-point one, the CLIP
  paper's, and CLIP_benchmark's `voc2007_multilabel` one). `label` is the first class present, only
  so the single-label plumbing (loaders, Parquet's ``label``) can carry the images: no accuracy is
  computed from it (`eval zeroshot` reports none, `eval linear-probe` refuses the dataset).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DatasetFormatError, DatasetLayoutError, LabelledDataset
from .classnames import imagenet_classnames, imagenet_wnids, is_wnid, wnid_to_label
from .native import find_base, image_files, read_lines, split_choice

__all__ = ["VOC_CLASSES", "ImageNetSubset", "ImageNetV2", "ObjectNet", "VOC2007"]

V2_LAYOUT = "  ROOT/imagenetv2-matched-frequency-format-val/<0..999>/<hash>.jpeg"
SUBSET_LAYOUT = "  ROOT/<dataset folder>/<wnid>/*.jpg|JPEG|png  (imagenet-a, imagenet-r: 200 wnids; sketch: 1000)"
OBJECTNET_LAYOUT = "  ROOT/objectnet-1.0/images/<folder>/*.png\n" \
                   "  ROOT/objectnet-1.0/mappings/{folder_to_objectnet_label,objectnet_to_imagenet_1k}.json"
VOC_LAYOUT = "  ROOT/VOCdevkit/VOC2007/JPEGImages/NNNNNN.jpg\n" \
             "  ROOT/VOCdevkit/VOC2007/ImageSets/Main/<class>_{train,val,trainval,test}.txt (\"NNNNNN  1|0|-1\")"

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


class ImageNetV2(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        root = Path(root)
        base = next((b for b in (root / "imagenetv2-matched-frequency-format-val", root) if (b / "0").is_dir()), None)
        if base is None:
            raise DatasetLayoutError(f"missing folder {root / 'imagenetv2-matched-frequency-format-val' / '0'}\n"
                                     f"expected layout:\n{V2_LAYOUT}")
        samples = []
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if entry.is_dir() and entry.name.isdigit():
                label = int(entry.name)
                if label >= 1000:
                    raise DatasetFormatError(f"{entry.path}: ImageNet-V2 class folders are 0..999")
                samples += [(os.path.join(entry.path, n), label) for n in image_files(Path(entry.path))]
        super().__init__(samples, imagenet_wnids(), name="imagenetv2", split="test", root=base, transform=transform,
                         layout="imagenetv2")
        self.prompt_classnames = imagenet_classnames()


class ImageNetSubset(LabelledDataset):
    """wnid folders; `all_classes` keeps the 1000-way label space (Sketch), else the classes present."""

    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None, *,
                 name: str = "imagenet_a", folders: tuple[str, ...] = ("imagenet-a",), all_classes: bool = False) -> None:
        root = Path(root)
        base = next((b for b in [root / f for f in folders] + [root]
                     if b.is_dir() and any(is_wnid(e.name) and e.is_dir() for e in os.scandir(b))), None)
        if base is None:
            raise DatasetLayoutError(f"missing folder {root / folders[0]}/<wnid>/\nexpected layout:\n{SUBSET_LAYOUT}")
        present = sorted(e.name for e in os.scandir(base) if e.is_dir() and is_wnid(e.name))
        unknown = [w for w in present if wnid_to_label(w) is None]
        if unknown:
            raise DatasetFormatError(f"{base}: {unknown[:3]} are not ILSVRC2012 wnids")
        wnids = imagenet_wnids() if all_classes else present
        index = {w: i for i, w in enumerate(wnids)}
        samples = [(str(base / w / n), index[w]) for w in present for n in image_files(base / w)]
        super().__init__(samples, wnids, name=name, split="test", root=base, transform=transform, layout="wnid-folders")
        self.imagenet_indices = [int(wnid_to_label(w)) for w in wnids]
        names = imagenet_classnames()
        self.prompt_classnames = [names[i] for i in self.imagenet_indices]


def imagenet_a(root, split="test", transform=None):
    return ImageNetSubset(root, split, transform, name="imagenet_a", folders=("imagenet-a",))


def imagenet_r(root, split="test", transform=None):
    return ImageNetSubset(root, split, transform, name="imagenet_r", folders=("imagenet-r",))


def imagenet_sketch(root, split="test", transform=None):
    return ImageNetSubset(root, split, transform, name="imagenet_sketch", folders=("sketch", "imagenet-sketch"),
                          all_classes=True)


class ObjectNet(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        base = find_base(root, ["objectnet-1.0", "objectnet"], "mappings", OBJECTNET_LAYOUT)
        maps = base / "mappings"
        try:
            with open(maps / "folder_to_objectnet_label.json", encoding="utf-8") as f:
                folder_label = json.load(f)
            with open(maps / "objectnet_to_imagenet_1k.json", encoding="utf-8") as f:
                to_imagenet = json.load(f)
        except FileNotFoundError as exc:
            raise DatasetLayoutError(f"missing file {exc.filename}\nexpected layout:\n{OBJECTNET_LAYOUT}") from exc
        classes = sorted(set(folder_label.values()) & set(to_imagenet))
        index = {c: i for i, c in enumerate(classes)}
        images = base / "images"
        samples = []
        for folder in sorted(folder_label):
            label = folder_label[folder]
            if label in index and (images / folder).is_dir():
                samples += [(str(images / folder / n), index[label]) for n in image_files(images / folder)]
        super().__init__(samples, classes, name="objectnet", split="test", root=base, transform=transform,
                         layout="objectnet-1.0")

    def load_image(self, index: int) -> Image.Image:
        image = super().load_image(index)
        w, h = image.size
        return image.crop((2, 2, w - 2, h - 2)) if w > 4 and h > 4 else image  # the red 1-px frame


class VOC2007(LabelledDataset):
    def __init__(self, root: str | Path, split: str = "test", transform: Callable | None = None) -> None:
        split = split_choice(split, {s: s for s in ("train", "val", "trainval", "test")}, "voc2007")
        base = find_base(root, ["VOCdevkit/VOC2007", "VOC2007"], "ImageSets/Main", VOC_LAYOUT)
        main = base / "ImageSets" / "Main"
        marks: dict[str, list[int]] = {}
        for c, cls in enumerate(VOC_CLASSES):
            for line in read_lines(main / f"{cls}_{split}.txt", VOC_LAYOUT):
                parts = line.split()
                if len(parts) != 2 or parts[1] not in ("1", "0", "-1"):
                    raise DatasetFormatError(f"{main / f'{cls}_{split}.txt'}: {line!r} is not '<id> 1|0|-1'")
                marks.setdefault(parts[0], [-1] * len(VOC_CLASSES))[c] = int(parts[1])
        ids = sorted(marks)
        matrix = np.array([marks[i] for i in ids], dtype=np.int8)
        samples, keep = [], []
        for row, image_id in enumerate(ids):
            path = base / "JPEGImages" / f"{image_id}.jpg"
            if path.is_file():
                present = np.flatnonzero(matrix[row] == 1)
                label = int(present[0]) if len(present) else int(np.flatnonzero(matrix[row] == 0)[0]) \
                    if (matrix[row] == 0).any() else 0
                samples.append((str(path), label))
                keep.append(row)
        super().__init__(samples, list(VOC_CLASSES), name="voc2007", split=split, root=base, transform=transform,
                         missing=[str(base / "JPEGImages" / f"{ids[r]}.jpg") for r in range(len(ids)) if r not in
                                  set(keep)], layout="vocdevkit")
        self.multilabels = matrix[keep]
