"""The one shape every labelled dataset has, and the errors datasets raise.

Evaluation and training code should not care whether ImageNet came as a devkit, a Kaggle CSV or
a folder: every adapter builds a list of `(source, label)` samples up front (so counts are known
before any pixel is decoded) and shares the decode / transform / bad-image handling here.

A broken image must never kill a multi-hour evaluation, so `__getitem__` returns a `BadImage`
instead of raising; `skip_bad_collate` drops those from the batch and hands them back so the
caller can count and report them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clipforge.errors import UserError
from clipforge.image import IMAGE_EXTENSIONS as _IMAGE_EXTENSIONS

from .bad import DECODE_ERRORS, BadImage, BadSample, error_reason

__all__ = [
    "BadImage", "BadSample", "DatasetFormatError", "DatasetLayoutError", "LabelledDataset", "DECODE_ERRORS",
    "IMAGE_EXTENSIONS", "error_reason", "require_file", "require_dir",
]

# One list for every folder scanner in clipforge (curated, and limited to what Pillow here decodes).
IMAGE_EXTENSIONS: AbstractSet[str] = _IMAGE_EXTENSIONS


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset root lacks a file or folder its layout needs.

    The message always names the missing path and describes the expected layout, because the
    person reading it usually has the data in a slightly different arrangement.
    """


class DatasetFormatError(UserError, ValueError):
    """A dataset file exists but its content is not what the layout promises."""


def require_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(f"missing file {path}\nexpected layout:\n{layout}")
    return path


def require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(f"missing folder {path}\nexpected layout:\n{layout}")
    return path


def _is_preprocess(transform: Any) -> bool:
    from clipforge.image import Preprocess

    return isinstance(transform, Preprocess)


class LabelledDataset(torch.utils.data.Dataset):
    """`(image, label)` samples over local files, with bad images returned as `BadImage`.

    Attributes every adapter fills: `name` (registry name), `split`, `root`, `classnames`
    (index = label), `samples` (list of `(source, label)`; source is a file path or an archive
    member name) and `missing` (files listed by the dataset's metadata but absent on disk; they
    are skipped, not fatal, because partial copies of datasets are common).
    Subclasses whose samples are not plain files override `load_image`.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classnames: Sequence[str],
        *,
        name: str,
        split: str,
        root: str | Path,
        transform: Callable[[Image.Image], Any] | None = None,
        missing: Sequence[str] = (),
        layout: str = "",
    ) -> None:
        self.samples: list[tuple[str, int]] = list(samples)
        self.classnames: list[str] = list(classnames)
        self.name = name
        self.split = split
        self.root = Path(root)
        self.transform = transform
        self.missing: list[str] = list(missing)
        self.layout = layout
        if not self.samples:
            raise DatasetFormatError(
                f"{self.name} ({layout or 'dataset'}) at {self.root} has no samples for split "
                f"{split!r}" + (f" ({len(self.missing)} listed files are missing on disk)" if self.missing else "")
            )
        bad = [lab for _, lab in self.samples if not 0 <= lab < len(self.classnames)]
        if bad:
            raise DatasetFormatError(
                f"{self.name} at {self.root}: label {bad[0]} outside 0..{len(self.classnames) - 1}"
            )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def class_counts(self) -> list[int]:
        counts = Counter(self.targets)
        return [counts.get(i, 0) for i in range(len(self.classnames))]

    def source_name(self, index: int) -> str:
        return str(self.samples[index][0])

    def load_image(self, index: int) -> Image.Image:
        """Decode sample `index` to an RGB PIL image (raises on a bad file)."""
        from ._decode import load_path

        return load_path(self.samples[index][0])

    def _load_transformed(self, index: int) -> Any:
        source = self.samples[index][0]
        if _is_preprocess(self.transform) and type(self).load_image is LabelledDataset.load_image:
            return self.transform.load(source)  # decode + preprocess with its JPEG draft fast path
        image = self.load_image(index)
        return self.transform(image) if self.transform is not None else image

    def __getitem__(self, index: int):
        label = self.samples[index][1]
        try:
            out = self._load_transformed(index)
        except DECODE_ERRORS as exc:
            return BadImage(self.source_name(index), error_reason(exc), index)
        return out, label

    def __repr__(self) -> str:
        if "samples" not in self.__dict__:  # failed in __init__
            return f"{self.__class__.__name__}(<not initialised>)"
        extra = f", missing={len(self.missing)}" if self.missing else ""
        return (
            f"{self.__class__.__name__}(name={self.name!r}, split={self.split!r}, root='{self.root}', "
            f"samples={len(self)}, classes={len(self.classnames)}, layout={self.layout!r}{extra})"
        )
