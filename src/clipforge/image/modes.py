"""Colour-mode conversion to 8-bit RGB.

The reference (OpenAI's ``_convert_image_to_rgb``) is plain ``image.convert("RGB")``, and we keep
it wherever it is right: alpha is dropped, palettes are looked up, CMYK/YCbCr/HSV/LAB use Pillow's
formulas. Two places where plain ``convert`` is wrong get fixed here:

* 16/32-bit integer and float greyscale (``I;16*``, ``I``, ``F``): Pillow clips to 0..255, so
  a 16-bit scan comes out almost white. We rescale to 8 bits instead.
* ``La`` (premultiplied) has no direct conversion in Pillow and would raise.

Optionally, transparent images can be composited over a background colour instead of having
their alpha dropped (useful for logos and icons, not the reference's behaviour).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

__all__ = ["HIGH_BIT_DEPTH_MODES", "has_alpha", "to_eight_bit", "to_rgb"]

HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


_STRIP_PIXELS = 1 << 20
"""Pixels converted at a time: the float64 maths runs on ~1-megapixel strips (~8 MB each), never on the whole
image. Converting a 7000x7000 16-bit PNG whole took the server 0.85 -> 2.08 GB (several float64 copies of
49 megapixels, 392 MB each); a deflated 7000x7000 float TIFF, 2.6 GB and 5.7 s. Values are computed by the
same float64 formulas per pixel, so the output is bit-identical."""


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    # round(v * 255 / full_scale): maps 0 -> 0 and full_scale -> 255 exactly (libpng's 16->8 rule)
    return np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def _strips(image: Image.Image) -> Iterator[tuple[int, int, np.ndarray]]:
    """(top, bottom, the rows' values as float64) for each strip of about `_STRIP_PIXELS` pixels; NaN and
    infinities read as 0."""
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        values = np.asarray(image.crop((0, top, width, bottom))).astype(np.float64)
        if image.mode == "F":
            values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        yield top, bottom, values


def to_eight_bit(image: Image.Image) -> Image.Image:
    """Map a 16/32-bit integer or float greyscale image to mode ``L`` without clipping.

    ``I;16*`` is 16-bit by definition and is scaled by 255/65535. ``I`` and ``F`` carry no range,
    so the range is inferred: values already within 0..255 are kept (e.g. an ``L`` image converted
    to ``I``), ``I`` within 0..65535 is treated as 16-bit (older Pillow opens 16-bit PNGs as
    ``I``), ``F`` within 0..1 is treated as normalised intensity; anything else is stretched
    from its minimum to its maximum (NaN and infinities count as 0). Other modes are returned unchanged.

    Strip by strip (`_STRIP_PIXELS`): the memory beyond the image is its 8-bit result plus one strip.
    """
    mode = image.mode
    if mode not in HIGH_BIT_DEPTH_MODES:
        return image
    width, height = image.size
    scaled = np.zeros((height, width), np.uint8)
    if mode.startswith("I;16"):
        shift = 32768.0 if mode == "I;16S" else 0.0  # signed 16-bit: shift to unsigned range
        for top, bottom, values in _strips(image):
            scaled[top:bottom] = _scale_to_uint8(values + shift if shift else values, 65535.0)
        return Image.fromarray(scaled, mode="L")
    low = high = 0.0
    for index, (_, _, values) in enumerate(_strips(image)):
        if values.size:
            low = float(values.min()) if index == 0 else min(low, float(values.min()))
            high = float(values.max()) if index == 0 else max(high, float(values.max()))
    offset, full_scale = _range(mode, low, high)
    if full_scale > 0:
        for top, bottom, values in _strips(image):
            scaled[top:bottom] = _scale_to_uint8(values - offset if offset else values, full_scale)
    return Image.fromarray(scaled, mode="L")


def _range(mode: str, low: float, high: float) -> tuple[float, float]:
    """(offset, full scale) mapping an ``I`` or ``F`` image whose values span `low`..`high` to 0..255
    (`to_eight_bit`'s rules); a full scale of 0 makes every pixel 0."""
    if low >= 0 and high <= 255 and not (mode == "F" and high <= 1.0):
        return 0.0, 255.0  # kept: v * 255 / 255 is v exactly
    if mode == "F" and low >= 0 and high <= 1.0:
        return 0.0, 1.0
    if mode == "I" and low >= 0 and high <= 65535:
        return 0.0, 65535.0
    return low, high - low


def has_alpha(image: Image.Image) -> bool:
    """True for modes with an alpha band and palette images with a transparent colour."""
    return image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info)


def to_rgb(image: Image.Image, alpha_background: tuple[int, int, int] | None = None) -> Image.Image:
    """8-bit RGB version of `image` (the same object when it already is plain RGB).

    With `alpha_background` None (the default, as the reference) transparency is dropped and the
    stored colours are kept; with an RGB tuple the image is composited over that colour.
    """
    if image.mode == "RGB" and (alpha_background is None or "transparency" not in image.info):
        return image
    image = to_eight_bit(image)
    if image.mode == "La":
        image = image.convert("LA")
    if alpha_background is not None and has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, tuple(alpha_background) + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        # Pillow warns when converting a palette with transparency straight to RGB; going through
        # RGBA gives the same colours (alpha is dropped next) without the warning.
        image = image.convert("RGBA")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")
