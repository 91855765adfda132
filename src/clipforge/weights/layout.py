"""The canonical key order of a CLIP state dict.

Formats scramble key order (safetensors sorts names, HF groups q/k/v apart), while people
compare and diff state dicts as lists; putting keys back in the order ``CLIP(**config)``
registers them makes every loader's output line up with ``model.state_dict()``.
"""

from __future__ import annotations

from typing import Any

import torch


def canonical_order(state_dict: dict[str, torch.Tensor], config: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """`state_dict` re-keyed in model order; unknown keys keep their relative order at the end."""
    from clipforge.models import config_from_state_dict, create_model_from_config

    try:
        config = config or config_from_state_dict(state_dict)
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            order = list(create_model_from_config(config).state_dict())
    except Exception:  # not a CLIP we can build: leave the order alone
        return state_dict
    known = [k for k in order if k in state_dict]
    rest = [k for k in state_dict if k not in set(order)]
    return {k: state_dict[k] for k in known + rest}
