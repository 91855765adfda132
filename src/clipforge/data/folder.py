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

__all__ = ["FOLDER_LAYOUT", "ImageFolder", "ZipImageFolder", "display_name"]

FOLDER_LAYOUT = """\
  ROOT/<class>/*.jpg|png|...        (or ROOT/<split>/<class>/*; classes = sorted folder names)
  or a zip file holding [<split>/]<class>/<image> members"""


def display_name(folder: str) -> str:
    return " ".join(folder.replace("_", " ").split())


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_index(found: Sequence[str], class_order: Sequence[str] | None, where: str) -> list[str]:
    if class_order is None:
        return sorted(found)
    unknown = sorted(set(found) - set(class_order))
    if unknown:
        raise DatasetFormatError(f"{where}: class folders {unknown[:5]} are not in the given class list")
    return list(class_order)


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
        self.folder_names = _class_index(found, class_order, str(base))
        samples = []
        for label, folder in enumerate(self.folder_names):
            if (base / folder).is_dir():
                files = sorted(n for n in os.listdir(base / folder) if _is_image(n))
                samples += [(str(base / folder / n), label) for n in files]
        names = list(classnames) if classnames is not None else [display_name(f) for f in self.folder_names]
        super().__init__(samples, names, name=name, split=split or base.name, root=base,
                         transform=transform, layout="folder")


class ZipImageFolder(LabelledDataset):
    """Class folders inside a zip, read member by member (nothing is extracted).

    With `split`, only members under a top-level `<split>/` folder are used when the zip has one.
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
        if split and any(m.split("/", 1)[0] == split for m in members):
            members = [m for m in members if m.split("/", 1)[0] == split]
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
