"""Tiny on-disk datasets in their real layouts, written by the evaluation tests that need them (one builder each,
so two tests of one layout cannot drift apart)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def flickr8k_folder(root: Path, test_list: list[str] | None = None) -> Path:
    """Kaggle's Flickr8k layout: captions.txt (2 captions each) + Images/ of 3 one-colour photos; `test_list`: the
    original release's Flickr_8k.testImages.txt (None: no split list, so a suite cell is `flickr8k_all`)."""
    (root / "Images").mkdir(parents=True)
    rows = ["image,caption"]
    for i, colour in enumerate(((200, 0, 0), (0, 200, 0), (0, 0, 200))):
        Image.new("RGB", (8, 8), colour).save(root / "Images" / f"{i}.jpg")
        rows += [f"{i}.jpg,a picture number {i} of a colour", f"{i}.jpg,colour {i} fills the frame"]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    if test_list is not None:
        (root / "Flickr_8k.testImages.txt").write_text("\n".join(test_list) + "\n")
    return root


def voc2007_folder(root: Path, present: dict[int, list[str]]) -> Path:
    """A VOC 2007 test set under `root`: image i (16x16 noise) marked with the classes `present[i]` names (a chair
    is marked difficult, 0); every other class absent (-1)."""
    from clipforge.data.imagenet_variants import VOC_CLASSES

    base = root / "VOCdevkit" / "VOC2007"
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    for i in present:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{i:06d}.jpg")
    for cls in VOC_CLASSES:
        lines = [f"{i:06d} {(0 if cls == 'chair' else 1) if cls in names else -1:2d}\n" for i, names in present.items()]
        (base / "ImageSets" / "Main" / f"{cls}_test.txt").write_text("".join(lines))
    return root
