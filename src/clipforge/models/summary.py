"""Parameter counts per architecture: each model built on the meta device (nothing allocated) as a
`skeleton` (no initialiser runs: on meta tensors each one goes through Python meta kernels, and
`clipforge models --all` spent most of its time in them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from clipforge.models.configs import ARCH_CONFIGS, activation_of, list_configs
from clipforge.models.factory import create_model_from_config
from clipforge.models.skeleton import skeleton


def count_parameters(name: str, config: dict[str, Any] | None = None) -> dict[str, int]:
    """(total, image, text) parameters of an architecture; counted once per process per config (80 skeletons
    take seconds, and a program that lists the models twice need not build them twice)."""
    key = json.dumps(config or ARCH_CONFIGS[name], sort_keys=True, default=str)
    if key not in _COUNTED:
        _COUNTED[key] = _count(config or ARCH_CONFIGS[name])
    return dict(_COUNTED[key])


_COUNTED: dict[str, dict[str, int]] = {}


def _count(config: dict[str, Any]) -> dict[str, int]:
    with torch.device("meta"):  # nothing allocated, and no initialiser runs (`skeleton`)
        model = skeleton(lambda **c: create_model_from_config(c), **dict(config))
    image = sum(p.numel() for p in model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    scalars = sum(1 for n in ("logit_scale", "logit_bias") if getattr(model, n, None) is not None)
    return {"params": total, "image_params": image, "text_params": total - image - scalars}


def summarize_models(include_test: bool = False, is_cached: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """One row per architecture; `is_cached(name) -> bool` reports weights on disk for it (the
    caller knows where weights live: this layer does not)."""
    rows = []
    for name in list_configs(include_test=include_test):
        config = ARCH_CONFIGS[name]
        rows.append({"name": name, "kind": "architecture", **count_parameters(name),
                     "input_size": config["image_resolution"], "embed_dim": config["embed_dim"],
                     "activation": activation_of(config), "cached": bool(is_cached and is_cached(name))})
    return rows
