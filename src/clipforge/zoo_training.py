"""open_clip's training-script helpers over clipforge: precision names to dtypes, and a checkpoint
file loaded into a model already built (``open_clip.load_checkpoint(model, path)``).

open_clip's `train.py` and the scripts copied from it call these between `create_model_and_transforms`
and the training loop; with ``import clipforge as open_clip`` each was an AttributeError. The file is
read by clipforge's one reader (`clipforge.weights.loading`: any format it knows, open_clip's and OpenAI's
layouts, nothing in it executed), then handed to the model's own `load_state_dict`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["get_cast_dtype", "get_input_dtype", "load_checkpoint"]


def get_cast_dtype(precision: str) -> torch.dtype | None:
    """The dtype open_clip casts a model's weights to for `precision` (``"bf16"``, ``"fp16"``), else None."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def get_input_dtype(precision: str) -> torch.dtype | None:
    """The dtype of the images fed to a model trained at `precision` (``pure_`` variants included), else None."""
    return {"bf16": torch.bfloat16, "pure_bf16": torch.bfloat16,
            "fp16": torch.float16, "pure_fp16": torch.float16}.get(precision)


def load_checkpoint(model: torch.nn.Module, checkpoint_path: str | os.PathLike[str], strict: bool = True,
                    weights_only: bool = True, device: str | torch.device = "cpu") -> Any:
    """Load a checkpoint file into `model` as open_clip's `load_checkpoint` does; returns what
    `load_state_dict` returns (missing and unexpected keys, empty when `strict`).

    The file is read by `clipforge.weights.loading.load_checkpoint` whatever `weights_only` says: it never
    runs code from a file. Names are OpenAI's (what open_clip's CLIP uses too), training wrappers and DDP's
    ``module.`` prefixes are taken off, an old 1-element ``logit_scale`` reads as a scalar. Tensors go to the model's own device
    (`device` is where open_clip reads them first; here they are read on the CPU)."""
    from clipforge.weights.loading import load_checkpoint as read

    del weights_only, device
    return model.load_state_dict(read(checkpoint_path).state_dict, strict=strict)
