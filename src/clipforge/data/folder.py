"""Class-per-folder datasets, on disk (`root/<class>/*`) or inside a zip (`[split/]<class>/*`).

Class order is the sorted folder names unless the caller passes an explicit order (CIFAR's
standard label order, a classes.json): labels must mean the same thing as the classifier's
text prompts, and a missing class folder must not shift every later label.
Display names replace underscores with spaces (`golden_retriever` -> `golden retriever`) since
they end up in prompts; `folder_names` keeps the raw names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from ._decode import ZipReader
from .base import IMAGE_EXTENSIONS, DatasetFormatError, DatasetLayoutError, LabelledDataset

__all__ = ["FOLDER_LAYOUT", "SPLIT_NAMES", "ImageFolder", "ZipImageFolder", "display_name"]

FOLDER_LAYOUT = """\
  ROOT/<class>/*.jpg|png|...        (or ROOT/<split>/<class>/*; classes = sorted folder names)
  or a zip file holding [<split>/]<class>/<image> members"""


# Folder names that mean "a split", not "a class" or a wrapper folder: a root or zip whose images sit
# in such folders holds those splits, and asking it for another split is an error, not "use everything".
SPLIT_NAMES = frozenset({"train", "test", "val", "valid", "validation", "dev", "trainval", "eval"})


def display_name(folder: str) -> str:
    return " ".join(folder.replace("_", " ").split())


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_index(found: Sequence[str], class_order: Sequence[str] | None, where: str) -> list[str]:
    if class_order is None:
        return sorted(found)
    unknown = sorted(set(found) - set(class_order))
    if unknown:
        raise DatasetFormatError(f"{where}: class folders {unknown[:5]} are not in the given class list "
                                 f"({len(class_order)} classes: {', '.join(list(class_order)[:3])}, ...)")
    return list(class_order)


def _check_flat_root(root: Path, split: str, found: Sequence[str]) -> None:
    """A root without a `<split>/` folder is read as `<class>/` folders, unless it is plainly another
    split (`--root data/train` asked for `test`) or holds split folders (`train/`, `val/` asked for
    `test`): read as classes, those gave a "test" score of training images or of two classes named
    "train" and "val"."""
    splits = sorted(set(found) & SPLIT_NAMES)
    if splits:
        raise DatasetLayoutError(f"{root} holds no {split}/ folder (its split folders: "
                                 f"{', '.join(f + '/' for f in splits)})\nexpected layout:\n{FOLDER_LAYOUT}")
    if root.name in SPLIT_NAMES and root.name != split:
        raise DatasetLayoutError(f"{root} is a {root.name}/ split folder, but split {split!r} was asked for; "
                                 f"point --root at the {split}/ folder or its parent")


class ImageFolder(LabelledDataset):
    """`root/<class>/*` images (or `root/<split>/<class>/*` when that folder exists)."""

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Callable | None = None,
        class_order: Sequence[str] | None = None,
        name: str = "folder",
        classnames: Sequence[str] | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetLayoutError(f"missing folder {root}\nexpected layout:\n{FOLDER_LAYOUT}")
        base = root / split if split and (root / split).is_dir() else root
        found = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        if not found:
            raise DatasetLayoutError(f"no class folders in {base}\nexpected layout:\n{FOLDER_LAYOUT}")
        if split and base == root:
            _check_flat_root(root, split, found)
        self.folder_names = _class_index(found, class_order, str(base))
        samples = []
        for label, folder in enumerate(self.folder_names):
            if (base / folder).is_dir():
                files = sorted(n for n in os.listdir(base / folder) if _is_image(n))
                samples += [(str(base / folder / n), label) for n in files]
        names = list(classnames) if classnames is not None else [display_name(f) for f in self.folder_names]
        super().__init__(samples, names, name=name, split=split or base.name, root=base,
                         transform=transform, layout="folder")


def _split_members(members: list[str], split: str, zip_path: Path) -> list[str]:
    """The image members of `split`: those in a `<split>/<class>/` folder (at the top or under one wrapper).

    A zip with no `<split>/` folder is used whole only when its images are not in split folders at all
    (`<class>/<image>`, or one wrapper folder that is no split name): a single split's archive
    (CIFAR's `train_jpeg.zip` holds `train/<class>/...`) asked for `test` or `val` used to be read whole
    and reported as that split, 50,000 training images scored as "test".
    """
    def above_class(member: str) -> str | None:
        parts = member.split("/")
        return parts[-3] if len(parts) >= 3 else None

    chosen = [m for m in members if above_class(m) == split]
    if chosen:
        return chosen
    found = sorted({f for f in map(above_class, members) if f is not None})
    if len(found) > 1 or set(found) & SPLIT_NAMES:
        raise DatasetLayoutError(f"{zip_path} holds no {split}/ folder (its folders above the class folders: "
                                 f"{', '.join(f + '/' for f in found[:8])}); pick the matching split or the "
                                 "matching zip")
    return members


class ZipImageFolder(LabelledDataset):
    """Class folders inside a zip, read member by member (nothing is extracted).

    With `split`, only members under a `<split>/` folder are used; a zip whose images sit in other
    split folders (`train/` when `test` is asked for) is refused, see `_split_members`.
    """

    def __init__(
        self,
        zip_path: str | Path,
        split: str | None = None,
        transform: Callable | None = None,
        class_order: Sequence[str] | None = None,
        name: str = "folder",
        classnames: Sequence[str] | None = None,
    ) -> None:
        zip_path = Path(zip_path)
        if not zip_path.is_file():
            raise DatasetLayoutError(f"missing file {zip_path}\nexpected layout:\n{FOLDER_LAYOUT}")
        self.reader = ZipReader(zip_path)
        try:
            members = [m for m in self.reader.names() if not m.endswith("/") and _is_image(m)]
        except Exception as exc:
            raise DatasetFormatError(f"cannot read zip {zip_path}: {exc}") from exc
        if split:
            members = _split_members(members, split, zip_path)
        by_class: dict[str, list[str]] = {}
        for member in members:
            parts = member.split("/")
            if len(parts) >= 2:
                by_class.setdefault(parts[-2], []).append(member)
        if not by_class:
            raise DatasetLayoutError(f"no <class>/<image> members in {zip_path}\nexpected layout:\n{FOLDER_LAYOUT}")
        self.folder_names = _class_index(sorted(by_class), class_order, str(zip_path))
        samples = [(m, label) for label, f in enumerate(self.folder_names) for m in sorted(by_class.get(f, []))]
        names = list(classnames) if classnames is not None else [display_name(f) for f in self.folder_names]
        super().__init__(samples, names, name=name, split=split or "all", root=zip_path,
                         transform=transform, layout="zip")

    def source_name(self, index: int) -> str:
        return f"{self.root}::{self.samples[index][0]}"

    def load_image(self, index: int) -> Image.Image:
        return self.reader.load_image(self.samples[index][0])
