"""Building a model from a config or a state dict: OpenAI's `CLIP` or, when a family knob is
turned, `FamilyCLIP` (kept apart from `clipforge.models.clip`, which `family` builds on)."""

from __future__ import annotations

from typing import Any

import torch

from clipforge.models.clip import _NON_PARAMETER_KEYS, CLIP, config_from_state_dict
from clipforge.models.family import FamilyCLIP
from clipforge.models.family_keys import FAMILY_KEYS, is_family_config

__all__ = ["build_model", "create_model_from_config"]


def create_model_from_config(config: dict[str, Any]) -> CLIP:
    """OpenAI's `CLIP` for OpenAI-shaped configs, `FamilyCLIP` when a family knob is turned."""
    if is_family_config(config):
        return FamilyCLIP(**config)
    return CLIP(**{k: v for k, v in config.items() if k not in FAMILY_KEYS})


def build_model(state_dict: dict[str, torch.Tensor], config: dict[str, Any] | None = None) -> CLIP:
    """Build a CLIP whose shape fits the state dict and load it strictly, in fp32, eval mode.

    `config` overrides inference (needed only for heads counts that are not width // 64).
    """
    state_dict = {k: v for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS}
    # Built without initialisation (`skeleton`): random initialisation of a 600M-parameter model costs
    # far more than copying the weights that replace it, and the meta device would import torch._dynamo
    # (over a second of every command's start). The copies keep the caller's tensors untouched.
    from clipforge.models.skeleton import skeleton

    model = skeleton(lambda **c: create_model_from_config(c), **(config or config_from_state_dict(state_dict)))
    owned = {k: v.to(torch.float32 if v.is_floating_point() else v.dtype, copy=True) for k, v in state_dict.items()}
    model.load_state_dict(owned, strict=True, assign=True)
    leftover = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"state dict left tensors uninitialised: {', '.join(leftover[:5])}")
    return model.eval()
