"""CLIP's image preprocessing without torchvision, number-for-number.

OpenAI's pipeline is ``Resize(n, BICUBIC) -> CenterCrop(n) -> convert("RGB") -> ToTensor ->
Normalize(MEAN, STD)`` on PIL images. `Preprocess` performs the same Pillow resize on the image in
its own mode, torchvision's size and crop arithmetic (`geometry`), and the same float32 operations
in the same order (``/255``, ``-mean``, ``/std``), so its output equals the reference's.

Deliberate differences, all for inputs where the reference is wrong:

* EXIF orientation is applied first (``exif_transpose=False`` switches that off);
* 16/32-bit greyscale is rescaled to 8 bits before resizing instead of being clipped to white;
* palette images with transparency convert without Pillow's warning (same colours).

`load(path)` decodes with `load_image`, which converts to RGB *before* resizing; for RGB and
greyscale files (almost every photo) that is identical to the reference's
``preprocess(Image.open(path))``, for palette/CMYK/alpha files it resizes in RGB (bicubic) where
the reference resizes the palette indices with nearest-neighbour.

Speed: `batch` normalises a whole batch in one vectorised step, `pixels` gives the uint8 crop
so DataLoader workers can ship 4x smaller arrays and normalise in the main process, and `load`
decodes big JPEGs at a reduced DCT scale (`draft`) and then resamples only the region the centre crop
keeps (``draft=False``: the whole picture, exactly the reference's pixels).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from clipforge.image.geometry import (
    center_crop_array,
    crop_region,
    exif_orientation,
    orientation_transpose,
    resized_size,
)
from clipforge.image.loading import DEFAULT_MAX_PIXELS, Decoded, decode_image
from clipforge.image.modes import to_eight_bit, to_rgb

if TYPE_CHECKING:
    import torch

__all__ = ["EXACT_RESIZE_PIXELS", "MEAN", "STD", "Preprocess", "build_preprocess"]

EXACT_RESIZE_PIXELS = 1 << 25
"""The exact path resizes the whole picture only while the resized picture has at most this many pixels
(32 M: 100 MB of RGB; every photo up to 10:1 at n = 1024 stays far below, and so does a 3 x 500 strip,
a 224 x 37,333 resize). Beyond it, resize-then-crop would allocate without bound from a tiny file (a 15 KB
1 x 5000 PNG: a 224 x 1,120,000 image, 2.4 GB and 3.2 s; 1 x 100,000 would be 15 GB), so only the crop
is resampled, as the fast path does (a value may differ by a level or two)."""

MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


class Preprocess:
    """Callable PIL image -> FloatTensor[3, n_px, n_px], CLIP's reference preprocessing.

    Also: ``batch(images) -> [N, 3, n_px, n_px]`` (PIL images or paths), ``load(path)`` (decode +
    preprocess, with JPEG draft decoding when `draft` is on), ``pixels(image)`` (the uint8
    [n_px, n_px, 3] crop) and ``normalize(uint8 batch)``. Picklable, so it can go to DataLoader
    workers.
    """

    def __init__(
        self,
        n_px: int,
        draft: bool = True,
        *,
        exif_transpose: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        mean: Sequence[float] = MEAN,
        std: Sequence[float] = STD,
    ) -> None:
        if int(n_px) != n_px or n_px < 1:
            raise ValueError(f"n_px must be a positive integer, got {n_px!r}")
        if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
            raise ValueError(f"mean and std need 3 values each (std non-zero), got {mean!r}, {std!r}")
        self.n_px = int(n_px)
        self.draft = bool(draft)
        self.exif_transpose = bool(exif_transpose)
        self.max_pixels = max_pixels
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __repr__(self) -> str:
        n = self.n_px
        return (
            f"Preprocess(n_px={n}, draft={self.draft}, exif_transpose={self.exif_transpose}): "
            f"Resize({n}, bicubic) -> CenterCrop({n}) -> RGB -> ToTensor -> Normalize(mean={self.mean}, std={self.std})"
        )

    # -- pixels -------------------------------------------------------------------------------
    def pixels(self, image: Image.Image | str | os.PathLike) -> np.ndarray:
        """The resized, centre-cropped RGB pixels as a new uint8 [n_px, n_px, 3] array (before ToTensor)."""
        if isinstance(image, (str, os.PathLike)):
            return self.decoded_pixels(self.decode(image))
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL.Image.Image or a path, got {type(image).__name__}")
        return self._resized_pixels(image)

    def decode(self, source: str | os.PathLike | IO[bytes]) -> Decoded:
        """Decode a path or file object as this preprocess will resize it (draft JPEG when `draft`).

        `Decoded.source_size` is the upright full size whether or not the decode was drafted.
        """
        return decode_image(source, self.max_pixels, self.n_px if self.draft else None)

    def decoded_pixels(self, decoded: Decoded) -> np.ndarray:
        """The uint8 [n_px, n_px, 3] crop of a `decode` result (same as ``pixels(path)``).

        With `draft` only the part of the picture the centre crop keeps is resampled (see
        `crop_region`: 26% less time than resize-then-crop on ImageNet photos, a value off by a
        level or two in 1 of 10,000); ``draft=False`` resizes the whole picture and crops, as the
        reference does.
        """
        return self._resized_pixels(decoded.image, decoded.source_size, decoded.box, crop_first=self.draft)

    resample: Image.Resampling = Image.Resampling.BICUBIC
    """The resize filter (OpenAI's bicubic; some weights were trained with bilinear)."""

    crop_offset: str = "round"
    """How the centre crop's offset is rounded (`geometry.CROP_OFFSETS`): torchvision's "round" (OpenAI's
    reference); a Hugging Face folder's image processor crops at transformers' "floor"."""

    def _target(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an upright picture of this size is resized to before the centre crop."""
        return resized_size(width, height, self.n_px)

    def _resized_pixels(
        self,
        image: Image.Image,
        source_size: tuple[int, int] | None = None,
        box: tuple[float, float, float, float] | None = None,
        crop_first: bool = False,
    ) -> np.ndarray:
        upright = box is not None or not self.exif_transpose  # decode_image already applied EXIF
        if not upright and orientation_transpose(exif_orientation(image)) is not None:
            image = ImageOps.exif_transpose(image)
        image = to_eight_bit(image)
        width, height = source_size if source_size is not None else image.size
        target = self._target(width, height)
        resizing = box is not None or target != image.size  # torchvision skips the resize when the size matches
        # `box` (a drafted JPEG): the region that holds the full picture, resampled to the size a full decode
        # would be resized to, so the crop sees the same geometry as the exact path
        huge = target[0] * target[1] > EXACT_RESIZE_PIXELS
        region = (crop_region(box or (0, 0, *image.size), target, self.n_px, self.crop_offset)
                  if resizing and (crop_first or huge) else None)
        if region is not None:
            image = image.resize((self.n_px, self.n_px), self.resample, box=region)
        elif resizing:
            image = image.resize(target, self.resample, box=box)
        # The reference converts to RGB after cropping; every Pillow conversion is per pixel, so
        # converting the (slightly larger) resized image first gives identical pixels.
        array = np.asarray(to_rgb(image))
        return np.array(center_crop_array(array, self.n_px, self.crop_offset), dtype=np.uint8, order="C", copy=True)

    # -- tensors ------------------------------------------------------------------------------
    def normalize(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [N, n, n, 3] (or [n, n, 3]) -> float32 [N, 3, n, n] (or [3, n, n]), as ToTensor +
        Normalize: ``x / 255``, then ``- mean``, then ``/ std`` in float32 (same rounding).

        Done in numpy on purpose: a torch elementwise op on a few hundred thousand elements uses
        the intra-op thread pool, whose threads spin-wait when the cores are busy (DataLoader
        workers, the model) - measured 8x slower per image on 2 busy cores than single-threaded.
        """
        import torch  # here, not at import: decoding (`pixels`, `decode`) runs in processes that never load torch

        if isinstance(pixels, torch.Tensor) and pixels.device.type != "cpu":
            return self._normalize_on_device(pixels)
        array = pixels.numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
        if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
            raise ValueError(f"expected uint8 pixels shaped [N, H, W, 3] or [H, W, 3], got {array.shape} {array.dtype}")
        single = array.ndim == 3
        if single:
            array = array[None]
        out = np.empty((array.shape[0], 3) + array.shape[1:3], dtype=np.float32)
        for c in range(3):
            channel = out[:, c]
            np.divide(array[..., c], np.float32(255), out=channel, dtype=np.float32)
            np.subtract(channel, np.float32(self.mean[c]), out=channel)
            np.divide(channel, np.float32(self.std[c]), out=channel)
        tensor = torch.from_numpy(out)
        return tensor[0] if single else tensor

    def _normalize_on_device(self, pixels: torch.Tensor) -> torch.Tensor:
        """Same float32 steps on an accelerator, for batches already moved there as uint8."""
        import torch

        if pixels.dtype != torch.uint8 or pixels.ndim not in (3, 4) or pixels.shape[-1] != 3:
            raise ValueError(f"expected uint8 pixels shaped [N, H, W, 3] or [H, W, 3], got {tuple(pixels.shape)} {pixels.dtype}")
        single = pixels.ndim == 3
        batch = pixels.unsqueeze(0) if single else pixels
        out = batch.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        out.sub_(mean).div_(std)
        return out[0] if single else out

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Preprocess one PIL image (any mode) to FloatTensor[3, n_px, n_px]."""
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"Preprocess expects a PIL.Image.Image, got {type(image).__name__}; "
                "use .load(path) for files or .batch(...) for several images"
            )
        return self.normalize(self._resized_pixels(image))

    def batch(self, images: Sequence[Image.Image | str | os.PathLike]) -> torch.Tensor:
        """Preprocess a batch of PIL images and/or paths to FloatTensor[N, 3, n_px, n_px]."""
        n = self.n_px
        buffer = np.empty((len(images), n, n, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            buffer[i] = self.pixels(image)
        return self.normalize(buffer)

    def load(self, path: str | os.PathLike) -> torch.Tensor:
        """Decode a file (see `load_image`; JPEG draft decoding when ``self.draft``) and preprocess it.

        With ``draft=False`` this equals ``self(load_image(path))`` exactly. Raises `ImageLoadError`.
        """
        return self.normalize(self.pixels(path))


def build_preprocess(n_px: int, draft: bool = True) -> Preprocess:
    """CLIP's preprocessing for input resolution `n_px` (the model's ``visual.input_resolution``).

    `draft` lets `Preprocess.load` (and `pixels`/`batch` given paths) decode large JPEGs at a
    reduced DCT scale (shortest side still >= ``DRAFT_MARGIN`` x `n_px`) before the bicubic
    resize, about 4x faster on 12-megapixel photos, and resample only the crop's region (see
    `decoded_pixels`): pixel-space cosine to the exact path >= 0.9997 on the ImageNet sample.
    Calling the result on a PIL image is unaffected by it.
    """
    return Preprocess(n_px, draft=draft)
