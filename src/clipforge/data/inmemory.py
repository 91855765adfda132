"""Datasets held in memory as one uint8 array, and decoding a dataset into one.

Small-image training (CIFAR-sized) is bound by JPEG decoding, not by the model: decoding the
50,000 training images once (in worker processes, with progress) and augmenting the in-memory
pixels afterwards turns each epoch from a decode job into a memory copy. `ArrayDataset` is a
normal `LabelledDataset`, so `LabelledImageText(ArrayDataset(...), templates, TrainTransform(32))`
gives training pairs straight from memory.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import BadImage, DatasetFormatError, LabelledDataset

__all__ = ["ArrayDataset", "decode_all"]


class ArrayDataset(LabelledDataset):
    """Images in a uint8 array [N, H, W, 3] with integer labels; sources name where each came from."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int],
        classnames: Sequence[str],
        *,
        name: str = "array",
        split: str = "all",
        root: str | Path = ".",
        transform: Callable | None = None,
        sources: Sequence[str] | None = None,
        layout: str = "array",
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DatasetFormatError(f"expected uint8 images shaped [N, H, W, 3], got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise DatasetFormatError(f"{len(images)} images but {len(labels)} labels")
        names = list(sources) if sources is not None else [f"{name}[{i}]" for i in range(len(images))]
        self.images = images
        super().__init__(list(zip(names, (int(x) for x in labels), strict=True)), classnames, name=name,
                         split=split, root=root, transform=transform, layout=layout)

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index], mode="RGB")


class _Pixels:
    """PIL image -> uint8 tensor [H, W, 3]; with `size`, CLIP's resize + centre crop to size x size."""

    def __init__(self, size: int | None) -> None:
        from clipforge.image import Preprocess

        self.preprocess = Preprocess(size) if size else None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = self.preprocess.pixels(image) if self.preprocess is not None else np.array(image, dtype=np.uint8)
        return torch.from_numpy(pixels)


def decode_all(
    dataset: LabelledDataset,
    size: int | None = None,
    workers: int = 0,
    batch_size: int = 256,
    progress: bool = True,
) -> ArrayDataset:
    """Decode every image of `dataset` once into an `ArrayDataset` (same classnames and labels).

    `size`: resize (shorter side, bicubic) + centre-crop to size x size, as CLIP's preprocessing
    does; without it all images must already share one size. Undecodable images are skipped and
    listed in the result's `skipped` attribute (BadImage records).
    """
    from tqdm.auto import tqdm

    from .loader import make_loader

    source = copy.copy(dataset)
    source.transform = _Pixels(size)
    chunks: list[torch.Tensor] = []
    indices: list[torch.Tensor] = []
    skipped: list[BadImage] = []
    bar = tqdm(total=len(source), desc=f"decoding {dataset.name}", unit="img", disable=not progress)
    try:
        for batch in make_loader(source, batch_size=batch_size, workers=workers):
            skipped += batch.errors
            if len(batch.indices):
                chunks.append(batch.images)
                indices.append(batch.indices)
            bar.update(len(batch.indices) + len(batch.errors))
    except RuntimeError as exc:
        if "stack expects each tensor to be equal size" in str(exc):
            raise DatasetFormatError(f"images of {dataset.name} differ in size; pass size= to decode_all") from exc
        raise
    finally:
        bar.close()
    if not chunks:
        raise DatasetFormatError(f"no image of {dataset.name} at {dataset.root} could be decoded "
                                 f"({len(skipped)} failed, e.g. {skipped[0] if skipped else '-'})")
    order = torch.cat(indices).tolist()
    images = torch.cat(chunks).numpy()
    result = ArrayDataset(
        images, [dataset.samples[i][1] for i in order], dataset.classnames, name=dataset.name,
        split=dataset.split, root=dataset.root, transform=dataset.transform,
        sources=[dataset.source_name(i) for i in order], layout=f"{dataset.layout}+memory",
    )
    result.skipped = skipped
    return result
