"""Train-time augmentation on PIL images without torchvision, reproducible by construction.

Randomness comes from an explicit `random.Random` passed per call; the image-text datasets
derive it from (seed, epoch, sample index), so a sample gets the same crop whatever worker
decodes it and however many workers there are, which is what exact resume needs.

Defaults follow CLIP fine-tuning practice: RandomResizedCrop with scale 0.9-1.0 (CLIP was
trained on near-full crops) and NO horizontal flip, because captions may say "left"/"right".
Normalisation reuses `clipforge.image.Preprocess.normalize` so train and eval tensors agree.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["RandomResizedCrop", "TrainTransform", "build_train_transform"]


class RandomResizedCrop:
    """Crop a random region (area fraction in `scale`, aspect ratio in `ratio`) and resize it to
    `size` x `size` (bicubic), with torchvision's sampling rule (10 tries, then a centre crop)."""

    def __init__(
        self,
        size: int,
        scale: Sequence[float] = (0.9, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: Image.Resampling = Image.Resampling.BICUBIC,
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.interpolation = interpolation

    def params(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        """(left, top, crop_width, crop_height)."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, width - w), rng.randint(0, height - h), w, h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        left, top, w, h = self.params(image.width, image.height, rng)
        return image.resize((self.size, self.size), self.interpolation, box=(left, top, left + w, top + h))


class TrainTransform:
    """PIL image -> normalised FloatTensor[3, size, size]: random resized crop, optional flip.

    Call as `t(image, rng)`; without `rng` a private `random.Random(seed)` is used (reproducible
    only in a single process). `accepts_rng` tells datasets to pass their per-sample rng.
    """

    accepts_rng = True

    def __init__(
        self,
        size: int,
        scale: Sequence[float] = (0.9, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: bool = False,
        seed: int = 0,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str = "bicubic",
    ) -> None:
        from clipforge.image import MEAN, STD, Preprocess

        self.size = int(size)
        resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[interpolation]
        self.crop = RandomResizedCrop(size, scale, ratio, interpolation=resample)
        self.hflip = bool(hflip)
        self._normalizer = Preprocess(self.size, mean=mean or MEAN, std=std or STD)  # the weights' own
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return (f"TrainTransform(size={self.size}, scale={self.crop.scale}, ratio={tuple(round(r, 4) for r in self.crop.ratio)}, "
                f"hflip={self.hflip}) -> Normalize(mean={self._normalizer.mean}, std={self._normalizer.std})")

    def pixels(self, image: Image.Image, rng: random.Random | None = None) -> Image.Image:
        """The augmented RGB image (before tensor conversion), for inspection and tests."""
        rng = rng if rng is not None else self._rng
        if image.mode != "RGB":
            image = image.convert("RGB")
        out = self.crop(image, rng)
        if self.hflip and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        return self._normalizer.normalize(np.array(self.pixels(image, rng), dtype=np.uint8))


def build_train_transform(size: int, scale: Sequence[float] = (0.9, 1.0), hflip: bool = False) -> TrainTransform:
    """The default CLIP fine-tuning augmentation for input resolution `size`."""
    return TrainTransform(size, scale=scale, hflip=hflip)
