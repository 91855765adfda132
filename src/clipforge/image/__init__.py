"""Image decoding and CLIP preprocessing without torchvision.

``load_image(path)`` gives an upright RGB PIL image or raises `ImageLoadError` naming the file and
the reason; ``build_preprocess(n_px)`` gives the reference preprocessing (PIL image -> normalised
FloatTensor[3, n_px, n_px]) with batched and draft-decoding fast paths.
"""

from clipforge.image.formats import IMAGE_EXTENSIONS, is_image_path
from clipforge.image.loading import (
    DEFAULT_MAX_PIXELS,
    DRAFT_MARGIN,
    Decoded,
    ImageLoadError,
    decode_image,
    load_image,
)
from clipforge.image.preprocess import MEAN, STD, Preprocess, build_preprocess

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DRAFT_MARGIN",
    "IMAGE_EXTENSIONS",
    "MEAN",
    "STD",
    "Decoded",
    "ImageLoadError",
    "Preprocess",
    "build_preprocess",
    "decode_image",
    "is_image_path",
    "load_image",
]
