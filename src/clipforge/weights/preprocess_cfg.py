"""The preprocessing a set of weights needs, as data: mean, std, interpolation, resize mode.

Most CLIP weights use OpenAI's pipeline (bicubic resize of the shortest side, centre crop,
OpenAI's mean/std), but not all: open_clip's ViT-L-14 ``laion2b_s32b_b82k`` was trained with
Inception's mean/std (0.5), DFN's ViT-H-14 with a squashing resize. Features from the wrong
preprocessing are quietly worse, so the registry and saved files carry these four fields.

A fifth, ``crop_offset``, is present only where it is not torchvision's: ``"floor"`` for a Hugging Face
folder whose image processor crops (transformers cuts the centre crop at ``(size - crop) // 2``, torchvision
rounds half to even: 1 px apart on 12% of ImageNet photos at 224). `validate_preprocess` drops ``"round"``
and drops the field under ``squash`` (no crop), so every other config keeps its four fields.
"""

from __future__ import annotations

import math
from typing import Any

from clipforge.errors import UserError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INTERPOLATIONS = ("bicubic", "bilinear")
RESIZE_MODES = ("shortest", "squash")
CROP_OFFSETS = ("round", "floor")  # = clipforge.image.geometry.CROP_OFFSETS; kept here so reading a config needs no PIL
DEFAULT_PREPROCESS: dict[str, Any] = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                                      "interpolation": "bicubic", "resize_mode": "shortest"}
OPTIONAL_FIELDS: dict[str, Any] = {"crop_offset": "round"}  # kept only when not this default (see above)


class PreprocessConfigError(UserError, ValueError):
    """A preprocessing config with a malformed field."""


# Pixels are in [0, 1] before normalisation, so a mean outside it is no preprocessing anyone trained
# with; a std far below 1e-3 (or above 10) turns every pixel into +-1e3..1e308 and every probability into
# nan (a file with mean 1e308 / std 1e-308 did). Published weights use 0.26..0.5.
MEAN_RANGE = (0.0, 1.0)
STD_RANGE = (1e-3, 10.0)


def _triple(value: Any, key: str, low: float, high: float) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise PreprocessConfigError(f"field {key!r} must be 3 finite numbers, got {value!r}")
    if any(not low <= v <= high for v in value):
        raise PreprocessConfigError(f"field {key!r} must be 3 numbers in [{low:g}, {high:g}] (per-channel "
                                    f"{'mean' if key == 'mean' else 'standard deviation'} of pixels in 0..1), "
                                    f"got {value!r}")
    return [float(v) for v in value]


def validate_preprocess(config: Any) -> dict[str, Any]:
    """A checked, complete copy (missing fields take OpenAI's values); raises `PreprocessConfigError`."""
    if not isinstance(config, dict):
        raise PreprocessConfigError(f"a preprocessing config must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULT_PREPROCESS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise PreprocessConfigError(f"unknown field {unknown[0]!r}")
    out = {**DEFAULT_PREPROCESS, **config}
    out["mean"] = _triple(out["mean"], "mean", *MEAN_RANGE)
    out["std"] = _triple(out["std"], "std", *STD_RANGE)
    if out["interpolation"] not in INTERPOLATIONS:
        raise PreprocessConfigError(f"field 'interpolation' must be one of {', '.join(INTERPOLATIONS)}, "
                                    f"got {out['interpolation']!r}")
    if out["resize_mode"] not in RESIZE_MODES:
        raise PreprocessConfigError(f"field 'resize_mode' must be one of {', '.join(RESIZE_MODES)}, "
                                    f"got {out['resize_mode']!r}")
    crop = out.pop("crop_offset", "round")
    if crop not in CROP_OFFSETS:
        raise PreprocessConfigError(f"field 'crop_offset' must be one of {', '.join(CROP_OFFSETS)} (torchvision's "
                                    f"or transformers' centre crop), got {crop!r}")
    if crop != "round" and out["resize_mode"] == "shortest":  # squash has no crop to place
        out["crop_offset"] = crop
    return out
