"""Parameter counts per architecture, computed on the meta device so nothing is allocated."""

from __future__ import annotations

from typing import Any

import torch

from clipforge.models.clip import CLIP
from clipforge.models.configs import ARCH_CONFIGS, list_configs


def count_parameters(name: str) -> dict[str, int]:
    with torch.device("meta"):
        model = CLIP(**ARCH_CONFIGS[name])
    image = sum(p.numel() for p in model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"params": total, "image_params": image, "text_params": total - image - 1}


def summarize_models(include_test: bool = False, is_cached: Any = None) -> list[dict[str, Any]]:
    """One row per architecture; `is_cached(name) -> bool` reports local weights."""
    if is_cached is None:
        from clipforge.weights import is_cached as weights_cached

        def is_cached(name: str) -> bool:
            try:
                return weights_cached(name)
            except KeyError:
                return False

    rows = []
    for name in list_configs(include_test=include_test):
        config = ARCH_CONFIGS[name]
        rows.append({"name": name, **count_parameters(name), "input_size": config["image_resolution"],
                     "embed_dim": config["embed_dim"], "cached": bool(is_cached(name))})
    return rows
