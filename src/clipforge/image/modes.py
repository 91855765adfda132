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

import numpy as np
from PIL import Image

__all__ = ["HIGH_BIT_DEPTH_MODES", "has_alpha", "to_eight_bit", "to_rgb"]

HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    # round(v * 255 / full_scale): maps 0 -> 0 and full_scale -> 255 exactly (libpng's 16->8 rule)
    return np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def to_eight_bit(image: Image.Image) -> Image.Image:
    """Map a 16/32-bit integer or float greyscale image to mode ``L`` without clipping.

    ``I;16*`` is 16-bit by definition and is scaled by 255/65535. ``I`` and ``F`` carry no range,
    so the range is inferred: values already within 0..255 are kept (e.g. an ``L`` image converted
    to ``I``), ``I`` within 0..65535 is treated as 16-bit (older Pillow opens 16-bit PNGs as
    ``I``), ``F`` within 0..1 is treated as normalised intensity; anything else is stretched
    from its minimum to its maximum. Other modes are returned unchanged.
    """
    mode = image.mode
    if mode not in HIGH_BIT_DEPTH_MODES:
        return image
    values = np.asarray(image).astype(np.float64)
    if mode.startswith("I;16"):
        if mode == "I;16S":  # signed 16-bit: shift to unsigned range
            values = values + 32768.0
        return Image.fromarray(_scale_to_uint8(values, 65535.0), mode="L")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low = float(values.min()) if values.size else 0.0
    high = float(values.max()) if values.size else 0.0
    if low >= 0 and high <= 255 and not (mode == "F" and high <= 1.0):
        scaled = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    elif mode == "F" and low >= 0 and high <= 1.0:
        scaled = _scale_to_uint8(values, 1.0)
    elif mode == "I" and low >= 0 and high <= 65535:
        scaled = _scale_to_uint8(values, 65535.0)
    else:
        span = high - low
        scaled = _scale_to_uint8(values - low, span) if span > 0 else np.zeros(values.shape, np.uint8)
    return Image.fromarray(scaled, mode="L")


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
