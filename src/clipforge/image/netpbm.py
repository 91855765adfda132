"""Binary Netpbm samples that Pillow decodes in Python, decoded with numpy to the same values.

Pillow's PPM opener hands a binary PGM or PPM whose maxval is not 255 (16-bit photos from raw converters such as
dcraw ``-4``; 10- and 12-bit scientific PGMs; an odd 8-bit maxval) to a decoder written in Python, ~1 us a
sample: 2.3 s for a 1-megapixel 16-bit RGB file, half a minute for a 12-megapixel one. `decode` reads the same
samples with numpy and scales them exactly as that decoder does (``min(out_max, round(value / maxval *
out_max))``, half to even, in float64; 255 for L and RGB, 65535 for Pillow's 32-bit I mode), in milliseconds:
the picture is the one Pillow would make, so a 16-bit photo is indexed like any other. Plain (ASCII) P2/P3 files
stay Pillow's and stay bounded by `costly.ppm`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["decode", "decodes"]

_PYTHON_DECODER = "ppm"  # Pillow's tile codec for binary samples it scales in Python
_STRIP = 1 << 20  # samples scaled at once


def decodes(image: Image.Image) -> bool:
    """Whether `image` (opened, not loaded) is a binary Netpbm file that Pillow would decode in Python."""
    tile = getattr(image, "tile", None) or []
    return (image.format == "PPM" and image.mode in ("L", "RGB", "I") and len(tile) == 1
            and tile[0][0] == _PYTHON_DECODER and tile[0][3][0] == ("L" if image.mode == "I" else image.mode))


def decode(image: Image.Image) -> Image.Image:
    """The picture of `image` (`decodes(image)`), in the mode and values Pillow's decoder gives; EOFError when the
    file holds fewer samples than its header says."""
    codec, _, offset, args = image.tile[0]
    mode, maxval = args[0], int(args[-1])
    width, height = image.size
    bands = len(mode) if mode in ("L", "RGB") else 1
    dtype = np.dtype(">u2") if maxval >= 256 else np.dtype("u1")
    count = width * height * bands
    image.fp.seek(offset)
    data = image.fp.read(count * dtype.itemsize)
    if len(data) < count * dtype.itemsize:
        raise EOFError(f"{len(data) // dtype.itemsize:,} of {count:,} samples")
    samples = np.frombuffer(data, dtype=dtype)
    out_max = 65535 if image.mode == "I" else 255
    scaled = np.empty(count, dtype=np.int32 if image.mode == "I" else np.uint8)
    for start in range(0, count, _STRIP):  # float64 a strip at a time: 8 MB, not 8 bytes a sample of the picture
        part = samples[start:start + _STRIP].astype(np.float64)
        scaled[start:start + _STRIP] = np.minimum(out_max, np.round(part / maxval * out_max))
    if image.mode == "I":
        return Image.fromarray(scaled.reshape(height, width), mode="I")
    shape = (height, width, bands) if bands > 1 else (height, width)
    return Image.fromarray(scaled.reshape(shape), mode=image.mode)
