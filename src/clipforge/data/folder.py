"""Class-per-folder datasets, on disk (`root/<class>/*`) or inside a zip (`[split/]<class>/*`).

Class order is the sorted folder names unless the caller passes an explicit order (CIFAR's
standard label order, a classes.json): labels must mean the same thing as the classifier's
text prompts, and a missing class folder must not shift every later label.
Display names replace underscores with spaces (`golden_retriever` -> `golden retriever`) since
they end up in prompts; `folder_names` keeps the raw names.

Decisions this module owns:
- A class list of fewer than 2 classes is refused: every image then gets the one label, and a
  zero-shot "benchmark" over `imagenet_sample/` (whose `images/` folder was the only "class") scored
  top-1 100%. The refusal says what the folder holds instead (a wrapper folder around the class
  folders, or images not split into class folders).
- A class folder with no images stays in the class list (an extra label is a legitimate zero-shot
  distractor, and labels must not shift), but is warned about by name: it cannot be scored.
- Entries of the root that cannot be examined (a symlink loop, a folder that cannot be read) are
  skipped, kept in `skipped` as (path, reason) and warned about; one bad entry never aborts the run.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from ._decode import ZipReader
from .base import IMAGE_EXTENSIONS, DatasetFormatError, DatasetLayoutError, LabelledDataset

__all__ = ["FOLDER_LAYOUT", "MIN_CLASSES", "SPLIT_NAMES", "ImageFolder", "ZipImageFolder", "display_name"]

FOLDER_LAYOUT = """\
  ROOT/<class>/*.jpg|png|...        (or ROOT/<split>/<class>/*; classes = sorted folder names)
  or a zip file holding [<split>/]<class>/<image> members"""


# Folder names that mean "a split", not "a class" or a wrapper folder: a root or zip whose images sit
# in such folders holds those splits, and asking it for another split is an error, not "use everything".
SPLIT_NAMES = frozenset({"train", "test", "val", "valid", "validation", "dev", "trainval", "eval"})

MIN_CLASSES = 2
"""Fewer classes than this is no classification dataset: every prediction is right (top-1 100%)."""

_EXPECTED = "expected class folders of images (ROOT/CLASS/*.jpg), at least 2"
_SHOWN = 5  # names listed in a warning or error before "..."


def display_name(folder: str) -> str:
    return " ".join(folder.replace("_", " ").split())


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def _entry_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return exc.strerror or type(exc).__name__


def _subfolders(folder: Path, skipped: list[tuple[str, str]] | None = None) -> list[str]:
    """Sorted names of the non-hidden folders in `folder` (links followed). An entry that cannot be
    examined (a symlink loop, no permission) is left out and added to `skipped` as (path, reason)."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError as exc:
                if skipped is not None:
                    skipped.append((str(folder / entry.name), _entry_reason(exc)))
                continue
            if is_dir:
                found.append(entry.name)
    return sorted(found)


def _image_names(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if _is_image(n))


def _count_images(folder: Path) -> int:
    try:
        return len(_image_names(folder))
    except OSError:
        return 0


def _images(count: int) -> str:
    return f"{count:,} image{'' if count == 1 else 's'}"


def _skipped_text(skipped: Sequence[tuple[str, str]], lead: str = "") -> str:
    if not skipped:
        return ""
    n = len(skipped)
    return (f"{lead}skipped {n} entr{'y' if n == 1 else 'ies'} that cannot be opened: "
            + _listing([f"{Path(p).name} ({why})" for p, why in skipped]))


def _what_it_holds(base: Path, found: Sequence[str]) -> str:
    """Why `base` has too few class folders, when its content says so: a single wrapper folder around the
    class folders (`--root` one level too high), or images not split into class folders."""
    if len(found) == 1:
        inner = base / found[0]
        try:
            classes = [f for f in _subfolders(inner) if _count_images(inner / f)]
        except OSError:
            classes = []
        if len(classes) >= MIN_CLASSES:
            return (f"; {found[0]}/ holds {len(classes)} class folders of images "
                    f"({_listing(classes)}): did you mean --root {inner}?")
        count = _count_images(inner)
        if count:
            return (f"; {found[0]}/ holds {_images(count)} directly: the images are not split into class "
                    "folders")
        return ""
    count = _count_images(base)
    if count:
        return f"; it holds {_images(count)} directly: the images are not split into class folders"
    return ""


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
    """`root/<class>/*` images (or `root/<split>/<class>/*` when that folder exists).

    `min_classes`: fewer classes are refused (default 2, see the module notes); 1 for a caller that
    only wants the images of one folder, not a classification.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Callable | None = None,
        class_order: Sequence[str] | None = None,
        name: str = "folder",
        classnames: Sequence[str] | None = None,
        min_classes: int = MIN_CLASSES,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetLayoutError(f"missing folder {root}\nexpected layout:\n{FOLDER_LAYOUT}")
        base = root / split if split and (root / split).is_dir() else root
        self.skipped: list[tuple[str, str]] = []
        found = _subfolders(base, self.skipped)
        if not found:
            raise DatasetLayoutError(f"no class folders in {base}{_what_it_holds(base, found)}"
                                     f"{_skipped_text(self.skipped, '; ')}\nexpected layout:\n{FOLDER_LAYOUT}")
        if split and base == root:
            _check_flat_root(root, split, found)
        self.folder_names = _class_index(found, class_order, str(base))
        if len(self.folder_names) < min_classes:
            raise DatasetLayoutError(f"{base} holds {len(found)} class folder ({found[0]}/), too few to classify: "
                                     f"{_EXPECTED}{_what_it_holds(base, found)}")
        samples = []
        empty = []  # classes that cannot be scored: an empty folder, or no folder for a class of the given order
        present = set(found)
        for label, folder in enumerate(self.folder_names):
            if folder not in present:
                empty.append(f"{folder}/ (no folder)")
                continue
            try:
                files = _image_names(base / folder)
            except OSError as exc:
                self.skipped.append((str(base / folder), _entry_reason(exc)))
                files = []
            if not files:
                empty.append(f"{folder}/")
            samples += [(str(base / folder / n), label) for n in files]
        if self.skipped:
            warnings.warn(f"{base}: {_skipped_text(self.skipped)}", stacklevel=2)
        if empty and len(empty) < len(self.folder_names):
            warnings.warn(f"{base}: {len(empty)} class{'es' if len(empty) > 1 else ''} with no images: "
                          f"{_listing(empty)}; kept in the class list to choose from, but not scored",
                          stacklevel=2)
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
    split folders (`train/` when `test` is asked for) is refused, see `_split_members`. A zip of one
    class folder is refused like a folder of one (`min_classes`, see `ImageFolder`).
    """

    def __init__(
        self,
        zip_path: str | Path,
        split: str | None = None,
        transform: Callable | None = None,
        class_order: Sequence[str] | None = None,
        name: str = "folder",
        classnames: Sequence[str] | None = None,
        min_classes: int = MIN_CLASSES,
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
        if len(self.folder_names) < min_classes:
            only = self.folder_names[0]
            raise DatasetLayoutError(f"{zip_path} holds 1 class folder ({only}/, {_images(len(by_class[only]))}), "
                                     "too few to classify: expected [<split>/]<class>/<image> members, at least 2 "
                                     "classes; the images are not split into class folders")
        samples = [(m, label) for label, f in enumerate(self.folder_names) for m in sorted(by_class.get(f, []))]
        names = list(classnames) if classnames is not None else [display_name(f) for f in self.folder_names]
        super().__init__(samples, names, name=name, split=split or "all", root=zip_path,
                         transform=transform, layout="zip")

    def source_name(self, index: int) -> str:
        return f"{self.root}::{self.samples[index][0]}"

    def load_image(self, index: int) -> Image.Image:
        return self.reader.load_image(self.samples[index][0])
