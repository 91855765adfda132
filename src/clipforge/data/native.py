"""Shared helpers of the native-layout adapters (the layouts the official archives unpack to).

Every adapter accepts either the folder its archive unpacks to (`food-101/`) or the folder that
holds it (torchvision's `root`), so `--root /data/food-101` and `--root /data` both work; the
suite passes `<root>/<dataset folder>`. Datasets without an official split get a seeded,
per-class one with the CLIP paper's sizes (`seeded_split`), documented in the catalogue.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .base import IMAGE_EXTENSIONS, DatasetFormatError, DatasetLayoutError

__all__ = ["find_base", "image_files", "read_lines", "seeded_split", "split_choice"]


def find_base(root: str | Path, names: Sequence[str], marker: str, layout: str) -> Path:
    """The dataset folder: `root/<name>` for one of `names`, or `root` itself, whichever holds `marker`."""
    root = Path(root)
    for base in [root / n for n in names] + [root]:
        if (base / marker).exists():
            return base
    raise DatasetLayoutError(f"missing {root / names[0] / marker} (nor {root / marker})\nexpected layout:\n{layout}")


def read_lines(path: Path, layout: str) -> list[str]:
    """Non-empty stripped lines of a text file; a missing file names itself and the layout."""
    if not path.is_file():
        raise DatasetLayoutError(f"missing file {path}\nexpected layout:\n{layout}")
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f if line.strip()]


def image_files(folder: Path, extensions: Iterable[str] | None = None) -> list[str]:
    """Sorted image file names directly in `folder` (hidden files skipped)."""
    allowed = {e.lower() for e in extensions} if extensions is not None else IMAGE_EXTENSIONS
    return sorted(n for n in os.listdir(folder)
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in allowed)


def split_choice(split: str, allowed: dict[str, str], dataset: str) -> str:
    """Map a user's split word (with aliases such as val/valid) to the dataset's own, or fail clearly."""
    key = allowed.get(split)
    if key is None:
        raise ValueError(f"{dataset} has no split {split!r}; splits: {', '.join(sorted(set(allowed)))}")
    return key


def seeded_split(labels: Sequence[int], sizes: dict[str, int | None], split: str, seed: int = 0) -> list[int]:
    """Indices of `split` from a per-class split: each class's samples (in the given order) are
    permuted with `seed` and cut into consecutive parts of `sizes[name]` per class, in the dict's
    order; a size of None takes the rest. Deterministic and disjoint across splits."""
    if split not in sizes:
        raise ValueError(f"no split {split!r}; splits: {', '.join(sizes)}")
    labels = np.asarray(labels)
    chosen: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.default_rng(seed + int(c)).permutation(len(idx))]
        start = 0
        for name, size in sizes.items():
            stop = len(idx) if size is None else min(len(idx), start + size)
            if name == split:
                chosen.extend(int(i) for i in idx[start:stop])
            start = stop
    if not chosen and len(labels):
        raise DatasetFormatError(f"split {split!r} is empty with sizes {sizes}")
    return sorted(chosen)
