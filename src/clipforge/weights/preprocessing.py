"""The preprocessing a set of weights needs, built on `clipforge.image.Preprocess`.

`Preprocess` already takes mean and std; three knobs some weights need beyond that are added here:
bilinear interpolation, open_clip's ``squash`` resize (straight to n x n, no crop), which
DFN's ViT-H-14 was trained with, and transformers' centre-crop offset (``crop_offset="floor"``) for a
Hugging Face folder whose image processor crops. With the defaults this is exactly `Preprocess`.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from clipforge.image import Preprocess
from clipforge.image.geometry import CROP_OFFSETS

__all__ = ["WeightsPreprocess", "build_weights_preprocess", "preprocess_for"]

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class WeightsPreprocess(Preprocess):
    """`Preprocess` with the knobs some weights need beyond mean/std: bilinear interpolation, open_clip's
    ``squash`` resize (straight to n x n, no crop; DFN's ViT-H-14) and transformers' crop offset
    (``crop_offset="floor"``: ``(size - crop) // 2``, where torchvision rounds half to even).
    With the defaults (bicubic, shortest side + centre crop, "round") it is exactly `Preprocess`."""

    def __init__(self, n_px: int, *, interpolation: str = "bicubic", resize_mode: str = "shortest",
                 crop_offset: str = "round", **kwargs: Any) -> None:
        super().__init__(n_px, **kwargs)
        if interpolation not in _RESAMPLE or resize_mode not in ("shortest", "squash") \
                or crop_offset not in CROP_OFFSETS:
            raise ValueError(f"unsupported preprocessing: interpolation={interpolation!r}, resize_mode={resize_mode!r}"
                             f", crop_offset={crop_offset!r}")
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.crop_offset = crop_offset
        self.resample = _RESAMPLE[interpolation]

    def __repr__(self) -> str:
        crop = "" if self.crop_offset == "round" else f", crop_offset={self.crop_offset} (transformers')"
        return f"{super().__repr__()} [interpolation={self.interpolation}, resize_mode={self.resize_mode}{crop}]"

    def _target(self, width: int, height: int) -> tuple[int, int]:
        return (self.n_px, self.n_px) if self.resize_mode == "squash" else super()._target(width, height)


def build_weights_preprocess(n_px: int, cfg: dict[str, Any] | None = None, *, draft: bool = True) -> Preprocess:
    """The preprocessing for weights whose `cfg` (registry entry or file metadata) says how
    they were trained; None means OpenAI's."""
    from clipforge.weights.preprocess_cfg import validate_preprocess

    cfg = validate_preprocess(dict(cfg or {}))
    crop = cfg.get("crop_offset", "round")  # present only for transformers' floor (see preprocess_cfg)
    if cfg["interpolation"] == "bicubic" and cfg["resize_mode"] == "shortest" and crop == "round":
        return Preprocess(n_px, draft=draft, mean=cfg["mean"], std=cfg["std"])
    return WeightsPreprocess(n_px, draft=draft, mean=cfg["mean"], std=cfg["std"],
                             interpolation=cfg["interpolation"], resize_mode=cfg["resize_mode"], crop_offset=crop)


def preprocess_for(model: Any, *, draft: bool = True) -> Preprocess:
    """The preprocessing a built model's weights were trained with (its `preprocess_cfg`, set by
    the loader for registry weights and files that record it), else OpenAI's; for every place
    that is handed a model without a preprocess, so none of them falls back to OpenAI's mean/std
    for weights trained with other ones (e.g. Inception mean/std, squash resize)."""
    return build_weights_preprocess(int(model.visual.input_resolution), getattr(model, "preprocess_cfg", None),
                                    draft=draft)
