"""Pixel geometry shared by decoding and preprocessing: torchvision's resize and crop arithmetic,
and EXIF orientation.

The numbers here decide which source pixels land in the model's input, so they follow
torchvision's integer rules exactly (truncation for the long side, Python's round-half-to-even
for the crop offset); a one-pixel disagreement shifts every pixel of the crop.

transformers' image processors (CLIPImageProcessor, ChineseCLIPImageProcessor, both backends of transformers
5) cut the same crop at ``(size - crop) // 2`` instead: where the margin is odd and half of it rounds up to
even (227 -> 224: 1.5 -> 2) their crop starts a pixel earlier (1.5 -> 1). 124 of the 1,000 ImageNet sample
photos differ at 224 px. `CROP_OFFSETS` names both rules; the weights' preprocessing says which applies.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = [
    "CROP_OFFSETS",
    "ORIENTATION_TAG",
    "center_crop_array",
    "crop_offsets",
    "crop_region",
    "exif_orientation",
    "orientation_transpose",
    "resized_size",
    "transpose_box",
    "transposed_size",
]

ORIENTATION_TAG = 0x0112

CROP_OFFSETS = ("round", "floor")
"""How a centre crop's offset is rounded: "round" is torchvision's ``CenterCrop`` (Python's round-half-to-even
of ``(size - crop) / 2``; OpenAI's and open_clip's preprocessing), "floor" is transformers' ``center_crop``
(``(size - crop) // 2``; a Hugging Face folder's image processor)."""

# EXIF orientation value -> the PIL transpose that displays the image upright (as ImageOps.exif_transpose).
_ORIENTATION_TO_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
}


def resized_size(width: int, height: int, n_px: int) -> tuple[int, int]:
    """(width, height) after torchvision's ``Resize(n_px)``: shortest side to `n_px`, the other
    side ``int(n_px * long / short)`` (truncated, computed in float exactly as torchvision does)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if width <= height:
        return n_px, int(n_px * height / width)
    return int(n_px * width / height), n_px


def crop_offsets(size: int, crop: int, rounding: str = "round") -> tuple[int, int]:
    """(pad_before, offset) of torchvision's ``CenterCrop`` along one axis.

    A side shorter than the crop is zero-padded by ``(crop - size) // 2`` before it (and the rest
    after); a longer side is cut at ``int(round((size - crop) / 2.0))`` - Python's round, so half
    pixels go to the even neighbour, as in torchvision. ``rounding="floor"``: transformers'
    ``(size - crop) // 2`` instead (its padding of a short side is never reached by a resize that
    makes the shortest side the crop's, so only the offset is modelled).
    """
    if rounding not in CROP_OFFSETS:
        raise ValueError(f"rounding must be one of {', '.join(CROP_OFFSETS)}, got {rounding!r}")
    if size < crop:
        return (crop - size) // 2, 0
    return 0, (size - crop) // 2 if rounding == "floor" else int(round((size - crop) / 2.0))


def crop_region(
    region: tuple[float, float, float, float], resized: tuple[int, int], crop: int, rounding: str = "round"
) -> tuple[float, float, float, float] | None:
    """The part of `region` (a box in the source image) that becomes the centre `crop` once `region`
    is resized to `resized` (width, height), or None when the crop would need padding.

    Resampling only that part straight to crop x crop gives the same geometry as resize-then-crop (each
    output pixel's centre maps to the same source point) for a quarter less work on a 4:3 photo; the
    filter weights are computed from a shifted origin, so a value may differ by a level or two
    (measured on 1,000 ImageNet photos: 9 in 100,000 values, never more than 2). `rounding`: see `crop_offsets`.
    """
    width, height = resized
    if width < crop or height < crop:
        return None
    left, top = crop_offsets(width, crop, rounding)[1], crop_offsets(height, crop, rounding)[1]
    x0, y0, x1, y1 = region
    sx, sy = (x1 - x0) / width, (y1 - y0) / height
    return (x0 + left * sx, y0 + top * sy, x0 + (left + crop) * sx, y0 + (top + crop) * sy)


def center_crop_array(array: np.ndarray, crop: int, rounding: str = "round") -> np.ndarray:
    """Centre `crop` x `crop` window of an HxW[xC] array with torchvision's rounding and zero padding
    (``rounding="floor"``: transformers' offset, see `crop_offsets`)."""
    height, width = array.shape[:2]
    pad_top, top = crop_offsets(height, crop, rounding)
    pad_left, left = crop_offsets(width, crop, rounding)
    if pad_top == 0 and pad_left == 0 and height >= crop and width >= crop:
        return array[top : top + crop, left : left + crop]
    out = np.zeros((crop, crop) + array.shape[2:], dtype=array.dtype)
    rows = min(height - top, crop)
    cols = min(width - left, crop)
    out[pad_top : pad_top + rows, pad_left : pad_left + cols] = array[top : top + rows, left : left + cols]
    return out


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation (1..8) of `image`; 1 when absent or unreadable (broken EXIF is common)."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF blocks must not make an otherwise fine image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orientation_transpose(orientation: int) -> Image.Transpose | None:
    """The transpose that makes an image with this EXIF orientation upright, or None."""
    return _ORIENTATION_TO_TRANSPOSE.get(orientation)


def transposed_size(size: tuple[int, int], method: Image.Transpose | None) -> tuple[int, int]:
    """Size of an image of `size` after `method`."""
    return (size[1], size[0]) if method in _SWAPS_AXES else size


def transpose_box(
    box: tuple[float, float, float, float], size: tuple[int, int], method: Image.Transpose | None
) -> tuple[float, float, float, float]:
    """Where `box` (left, top, right, bottom in an image of `size`) lies after `method`.

    Needed because a JPEG draft decodes whole 8x8-block rows: the valid picture ends a fraction of
    a pixel before the drafted image's right/bottom edge, and after an EXIF rotation that partial
    edge can be on any side.
    """
    if method is None:
        return box
    width, height = size
    x0, y0, x1, y1 = box

    def move(x: float, y: float) -> tuple[float, float]:
        if method == Image.Transpose.FLIP_LEFT_RIGHT:
            return width - x, y
        if method == Image.Transpose.FLIP_TOP_BOTTOM:
            return x, height - y
        if method == Image.Transpose.ROTATE_180:
            return width - x, height - y
        if method == Image.Transpose.ROTATE_90:  # counter-clockwise
            return y, width - x
        if method == Image.Transpose.ROTATE_270:  # clockwise
            return height - y, x
        if method == Image.Transpose.TRANSPOSE:
            return y, x
        return height - y, width - x  # TRANSVERSE

    (ax, ay), (bx, by) = move(x0, y0), move(x1, y1)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)
