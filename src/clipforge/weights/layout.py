"""The canonical key order of a CLIP state dict.

Formats scramble key order (safetensors sorts names, HF groups q/k/v apart), while people
compare and diff state dicts as lists; putting keys back in the order ``CLIP(**config)``
registers them makes every loader's output line up with ``model.state_dict()``.

The order comes from an uninitialised skeleton of the model (`clipforge.models.skeleton`: built on
the CPU with its initialisers switched off, pages never touched), cached per config. Not the meta
device: arithmetic on meta tensors imports `torch._dynamo` and sympy, which cost over a second of
every command's start (issue 20.4).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch

__all__ = ["canonical_order", "model_key_order"]


@functools.lru_cache(maxsize=8)
def _key_order(config_json: str) -> tuple[str, ...]:
    from clipforge.models.factory import create_model_from_config
    from clipforge.models.skeleton import skeleton

    return tuple(skeleton(lambda **c: create_model_from_config(c), **json.loads(config_json)).state_dict())


def model_key_order(config: dict[str, Any]) -> tuple[str, ...]:
    """The names ``CLIP(**config).state_dict()`` has, in its order, without initialising a model."""
    return _key_order(json.dumps(config, sort_keys=True, default=str))


def canonical_order(state_dict: dict[str, torch.Tensor], config: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """`state_dict` re-keyed in model order; unknown keys keep their relative order at the end."""
    from clipforge.models import config_from_state_dict

    try:
        config = config or config_from_state_dict(state_dict)
        order = model_key_order(config)
    except Exception:  # not a CLIP we can build: leave the order alone
        return state_dict
    known = [k for k in order if k in state_dict]
    seen = set(order)
    rest = [k for k in state_dict if k not in seen]
    return {k: state_dict[k] for k in known + rest}
