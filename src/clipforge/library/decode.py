"""Read, hash and decode image files in DataLoader workers.

Each file is read once: the same bytes are hashed (the library's content key) and decoded,
so the stored sha256 always describes exactly what was embedded. Files whose hash is already
embedded skip decoding (`skip_shas`) - a re-indexed duplicate costs a read and a hash, not a
model forward pass. A bad file never raises out of a worker: it comes back as an item with an
`error` reason, so one corrupt JPEG cannot end a million-image run.
"""

from __future__ import annotations

import errno
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["DecodedItem", "FileItem", "ImageFileDataset", "collate_items"]


@dataclass(frozen=True)
class FileItem:
    path: str
    size: int
    mtime_ns: int


@dataclass
class DecodedItem:
    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    pixels: torch.Tensor | None = None
    error: str | None = None


def _read_error(exc: OSError) -> str:
    if isinstance(exc, PermissionError) or exc.errno == errno.EACCES:
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found (removed while indexing)"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    return f"cannot read file ({exc.strerror or exc})"


def _pixels(preprocess: Callable[[Any], torch.Tensor], image: Any) -> torch.Tensor:
    """uint8 [n, n, 3] when the preprocess can split off normalisation (4x less to ship from a
    worker; `Encoder.encode_pixels` normalises), else whatever the preprocess returns."""
    if hasattr(preprocess, "pixels") and hasattr(preprocess, "normalize"):
        return torch.from_numpy(preprocess.pixels(image))
    return preprocess(image)


class ImageFileDataset(Dataset):
    """Items: `DecodedItem` with pixels (preprocessed) or an error reason; never raises."""

    def __init__(self, items: Sequence[FileItem], preprocess: Callable[[Any], torch.Tensor],
                 max_pixels: int | None, skip_shas: frozenset[str] = frozenset()) -> None:
        self.items = list(items)
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.skip_shas = skip_shas

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> DecodedItem:
        from clipforge.image import ImageLoadError, load_image

        item = self.items[index]
        out = DecodedItem(item.path, item.size, item.mtime_ns)
        try:
            with open(item.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            out.error = _read_error(exc)
            return out
        out.size = len(data)
        out.sha256 = hashlib.sha256(data).hexdigest()
        if not data:
            out.error = "file is empty (0 bytes)"
            return out
        if out.sha256 in self.skip_shas:
            return out
        try:
            image = load_image(io.BytesIO(data), max_pixels=self.max_pixels)
            out.width, out.height = image.size
            out.pixels = _pixels(self.preprocess, image)
        except ImageLoadError as exc:
            out.error = str(getattr(exc, "reason", None) or exc)
        except Exception as exc:  # preprocessing of a decodable but odd image: record, do not crash
            out.error = f"cannot preprocess image ({type(exc).__name__}: {exc})"
        return out


def collate_items(items: list[DecodedItem]) -> tuple[list[DecodedItem], torch.Tensor | None, list[int]]:
    """(all items, stacked pixels of the decoded ones, their positions in `items`)."""
    positions = [i for i, item in enumerate(items) if item.pixels is not None]
    pixels = torch.stack([items[i].pixels for i in positions]) if positions else None
    for i in positions:
        items[i].pixels = None  # the stacked tensor is the one copy that travels on
    return items, pixels, positions
