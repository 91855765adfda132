"""The dataset catalogue: what the suite knows about each dataset, as data (`catalog.json`).

For each dataset: the folder names it may have under a suite `--root` (the archive's own name
first), its test and train splits, the CLIP paper's metric (top-1; mean per-class accuracy for
FGVC-Aircraft, Pets, Caltech-101 and Flowers-102; 11-point mAP for VOC 2007), OpenAI's prompt set,
the prompt class names where the published list's order differs from the labels, where to get
it, and (where the publisher serves it stably) the archives `--download` fetches with their md5.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["DatasetInfo", "UnknownDatasetError", "dataset_info", "expand_datasets", "find_dataset_root", "list_catalog", "presets"]

_FILE = Path(__file__).resolve().parent / "catalog.json"


class UnknownDatasetError(KeyError, ValueError):
    """A dataset name nobody knows: a KeyError for lookups, a ValueError (one line, exit 2) for the CLI."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown dataset"


@dataclass(frozen=True)
class DatasetInfo:
    key: str
    title: str
    task: str  # "zeroshot" (classification) or "retrieval"
    folders: tuple[str, ...]
    metric: str
    test_split: str = "test"
    train_split: str | None = None
    prompts: str | None = None
    prompt_names: tuple[str, ...] | None = None
    get: str = ""
    unsupported: str | None = None
    download: tuple[dict[str, Any], ...] = field(default=())


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@cache
def _catalog() -> dict[str, Any]:
    with open(_FILE, encoding="utf-8") as f:
        return json.load(f)


@cache
def _aliases() -> dict[str, str]:
    out = {_norm(k): k for k in _catalog()["datasets"]}
    out.update({"imagenet1k": "imagenet", "ilsvrc2012": "imagenet", "imagenetv2matchedfrequency": "imagenetv2",
                "sketch": "imagenet_sketch", "cub200": "cub", "cub2002011": "cub", "stanfordcars": "cars",
                "aircraft": "fgvc_aircraft", "fgvcaircraft": "fgvc_aircraft", "pascalvoc2007": "voc2007",
                "voc": "voc2007", "oxfordpets": "pets", "oxfordiiitpet": "pets", "flowers": "flowers102",
                "oxfordflowers102": "flowers102", "describabletextures": "dtd", "kitti": "kitti_distance",
                "patchcamelyon": "pcam", "clevr": "clevr_counts", "clevrcountall": "clevr_counts",
                "sst2": "rendered_sst2", "renderedsst2": "rendered_sst2", "coco": "mscoco",
                "fer": "fer2013", "facialemotionrecognition2013": "fer2013", "nwpuresisc45": "resisc45"})
    return out


def canonical(name: str) -> str | None:
    return _aliases().get(_norm(name))


def dataset_info(name: str) -> DatasetInfo:
    """The catalogue entry of `name` (aliases accepted); KeyError naming the known datasets."""
    key = canonical(name)
    if key is None:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(list_catalog())}; presets: "
                       f"{', '.join(presets())}")
    raw = _catalog()["datasets"][key]
    names = raw.get("prompt_names", {}).get("names")
    return DatasetInfo(key=key, title=raw["title"], task=raw["task"], folders=tuple(raw["folders"]),
                       metric=raw["metric"], test_split=raw.get("test_split", "test"),
                       train_split=raw.get("train_split"), prompts=raw.get("prompts"),
                       prompt_names=tuple(names) if names else None, get=raw.get("get", ""),
                       unsupported=raw.get("unsupported"), download=tuple(raw.get("download", ())))


def list_catalog() -> list[str]:
    return list(_catalog()["datasets"])


def presets() -> dict[str, list[str]]:
    return {k: list(v) for k, v in _catalog()["presets"].items()}


def expand_datasets(items: list[str] | str) -> list[str]:
    """Dataset names and presets (comma-separated or a list) -> catalogue keys, in order, no repeats.
    `name=PATH` items keep their path (`cifar10=/data/c10`) for `find_dataset_root`."""
    if isinstance(items, str):
        items = [items]
    out: list[str] = []
    for item in (p.strip() for chunk in items for p in chunk.split(",")):
        if not item:
            continue
        name, sep, path = item.partition("=")
        if not sep and name in presets():
            keys = presets()[name]
        else:
            keys = [dataset_info(name).key + (f"={path}" if sep else "")]
        out += [k for k in keys if k not in out]
    return out


def find_dataset_root(info: DatasetInfo, root: str | Path | None, override: str | None = None) -> Path | None:
    """`override` when given, else the first of the dataset's folder names present under `root`."""
    if override:
        return Path(override).expanduser()
    if root is None:
        return None
    root = Path(root).expanduser()
    for folder in info.folders:
        if (root / folder).exists():
            return root / folder
    return None
