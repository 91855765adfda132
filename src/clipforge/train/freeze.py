"""Tower freezing: lock the image tower, the text tower, or train only the two projections.

Locked-image tuning (LiT, Zhai et al. 2022) shows a frozen pretrained image tower with a
trained text tower keeps most of the image tower's quality while costing a fraction of the
compute; training only the projections is the cheapest adaptation of all. A frozen tower is
also put in eval mode, so BatchNorm statistics (ResNet towers) stop drifting.
"""

from __future__ import annotations

from torch import nn

_IMAGE_PROJECTIONS = ("visual.proj", "visual.attnpool.c_proj.weight", "visual.attnpool.c_proj.bias")
_TEXT_PROJECTIONS = ("text_projection", "text.proj.weight", "text.proj.0.weight", "text.proj.2.weight")  # + HF towers


def _is_image(name: str) -> bool:
    return name.startswith("visual.")


def apply_freezing(model: nn.Module, lock_image: bool = False, lock_text: bool = False,
                   projections_only: bool = False) -> dict[str, int]:
    """Set `requires_grad` per parameter; returns trainable/frozen parameter counts.

    The logit scale stays trainable unless both towers are locked without projections.
    """
    trainable = frozen = 0
    for name, param in model.named_parameters():
        if name == "logit_scale":
            train = not (lock_image and lock_text and not projections_only)
        elif projections_only:
            train = name in _IMAGE_PROJECTIONS + _TEXT_PROJECTIONS
        elif _is_image(name):
            train = not lock_image
        else:
            train = not lock_text
        param.requires_grad_(train)
        if train:
            trainable += param.numel()
        else:
            frozen += param.numel()
    if trainable == 0:
        raise ValueError("every parameter is frozen: nothing to train")
    return {"trainable_params": trainable, "frozen_params": frozen}


def set_frozen_eval(model: nn.Module, lock_image: bool = False, lock_text: bool = False) -> None:
    """After `model.train()`: keep locked towers in eval mode (no BatchNorm statistic updates)."""
    if lock_image:
        model.visual.eval()
    if lock_text:  # (a transformers text tower is `model.text`; the others are None then)
        for module in (getattr(model, "text", None), model.transformer, model.ln_final):
            if module is not None:
                module.eval()
