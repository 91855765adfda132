"""Class lists the adapters need: ImageNet's 1000 wnids, OpenAI's ImageNet names, CIFAR orders.

The canonical wnid list ships with this package because ImageNet labels are positions in the
SORTED list of the 1000 ILSVRC2012 synsets, whatever subset of classes a folder holds; a folder
with three classes must still label a tench 0, not "first folder found".

OpenAI's hand-edited ImageNet class names are package data of `clipforge.zeroshot`; the data
layer must not import that package (layering), so the file is looked up by path in
`IMAGENET_CLASSNAME_FILES`, a list callers may repoint.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

__all__ = [
    "CIFAR10_CLASSES", "CIFAR100_CLASSES", "IMAGENET_CLASSNAME_FILES", "clean_cub_name", "imagenet_classnames",
    "imagenet_wnids", "is_wnid", "wnid_to_label",
]

_PACKAGE = Path(__file__).resolve().parent
IMAGENET_CLASSNAME_FILES: list[Path] = [
    _PACKAGE.parent / "zeroshot" / "data" / "openai_imagenet_classes.json",
    _PACKAGE.parent / "zeroshot" / "openai_imagenet_classes.json",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# CIFAR-100 fine label names as in the dataset's `meta` file (label = position; alphabetical).
CIFAR100_CLASSES: tuple[str, ...] = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
worm""".split())  # noqa: SIM905 (a literal of 100 quoted words is harder to check)

_WNID = re.compile(r"n\d{8}")


def is_wnid(text: str) -> bool:
    return bool(_WNID.fullmatch(text))


@lru_cache(maxsize=1)
def _wnids() -> tuple[str, ...]:
    with open(_PACKAGE / "imagenet_wnids.json", encoding="utf-8") as f:
        wnids = tuple(json.load(f)["wnids"])
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids), "imagenet_wnids.json is corrupt"
    return wnids


def imagenet_wnids() -> list[str]:
    """The 1000 ILSVRC2012 wnids, sorted; index = ImageNet label."""
    return list(_wnids())


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(_wnids())}


def wnid_to_label(wnid: str) -> int | None:
    return _wnid_index().get(wnid)


def imagenet_classnames() -> list[str]:
    """OpenAI's 1000 ImageNet class names when available, else the wnids (same order)."""
    for path in IMAGENET_CLASSNAME_FILES:
        path = Path(path)
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                names = json.load(f)
            if isinstance(names, dict):
                names = names.get("classes", names.get("classnames"))
            if isinstance(names, list) and len(names) == 1000:
                return [str(n) for n in names]
    return imagenet_wnids()


def clean_cub_name(raw: str) -> str:
    """`001.Black_footed_Albatross` -> `Black footed Albatross` (CUB's classes.txt style)."""
    name = re.sub(r"^\d+\.", "", raw.strip())
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()
