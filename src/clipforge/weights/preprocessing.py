"""The preprocessing a set of weights needs, built on `clipforge.image.Preprocess`.

`Preprocess` already takes mean and std; two knobs some weights need beyond that are added here:
bilinear interpolation, and open_clip's ``squash`` resize (straight to n x n, no crop), which
DFN's ViT-H-14 was trained with. With the defaults this is exactly `Preprocess`.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from clipforge.image import Preprocess

__all__ = ["WeightsPreprocess", "build_weights_preprocess", "preprocess_for"]

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class WeightsPreprocess(Preprocess):
    """`Preprocess` with the two knobs some weights need beyond mean/std: bilinear
    interpolation, and open_clip's ``squash`` resize (straight to n x n, no crop; DFN's ViT-H-14).
    With the defaults (bicubic, shortest side + centre crop) it is exactly `Preprocess`."""

    def __init__(self, n_px: int, *, interpolation: str = "bicubic", resize_mode: str = "shortest",
                 **kwargs: Any) -> None:
        super().__init__(n_px, **kwargs)
        if interpolation not in _RESAMPLE or resize_mode not in ("shortest", "squash"):
            raise ValueError(f"unsupported preprocessing: interpolation={interpolation!r}, resize_mode={resize_mode!r}")
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.resample = _RESAMPLE[interpolation]

    def __repr__(self) -> str:
        return f"{super().__repr__()} [interpolation={self.interpolation}, resize_mode={self.resize_mode}]"

    def _target(self, width: int, height: int) -> tuple[int, int]:
        return (self.n_px, self.n_px) if self.resize_mode == "squash" else super()._target(width, height)


def build_weights_preprocess(n_px: int, cfg: dict[str, Any] | None = None, *, draft: bool = True) -> Preprocess:
    """The preprocessing for weights whose `cfg` (registry entry or file metadata) says how
    they were trained; None means OpenAI's."""
    from clipforge.weights.preprocess_cfg import validate_preprocess

    cfg = validate_preprocess(dict(cfg or {}))
    if cfg["interpolation"] == "bicubic" and cfg["resize_mode"] == "shortest":
        return Preprocess(n_px, draft=draft, mean=cfg["mean"], std=cfg["std"])
    return WeightsPreprocess(n_px, draft=draft, mean=cfg["mean"], std=cfg["std"],
                             interpolation=cfg["interpolation"], resize_mode=cfg["resize_mode"])


def preprocess_for(model: Any, *, draft: bool = True) -> Preprocess:
    """The preprocessing a built model's weights were trained with (its `preprocess_cfg`, set by
    the loader for registry weights and files that record it), else OpenAI's; for every place
    that is handed a model without a preprocess, so none of them falls back to OpenAI's mean/std
    for weights trained with other ones (e.g. Inception mean/std, squash resize)."""
    return build_weights_preprocess(int(model.visual.input_resolution), getattr(model, "preprocess_cfg", None),
                                    draft=draft)
