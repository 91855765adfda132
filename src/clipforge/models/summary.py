"""Parameter counts per architecture, computed on the meta device so nothing is allocated."""

from __future__ import annotations

from typing import Any

import torch

from clipforge.models.clip import CLIP
from clipforge.models.configs import ARCH_CONFIGS, OPENAI_MODELS, activation_of, list_configs


def count_parameters(name: str, config: dict[str, Any] | None = None) -> dict[str, int]:
    with torch.device("meta"):
        model = CLIP(**(config or ARCH_CONFIGS[name]))
    image = sum(p.numel() for p in model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"params": total, "image_params": image, "text_params": total - image - 1}


def summarize_models(include_test: bool = False, is_cached: Any = None) -> list[dict[str, Any]]:
    """One row per architecture; `is_cached(name) -> bool` reports weights on disk for it."""
    if is_cached is None:
        from clipforge.weights import is_cached as weights_cached
        from clipforge.weights.registry import list_pretrained_tags_by_model

        def is_cached(name: str) -> bool:  # OpenAI's names: their checkpoint; open_clip's: any of their tags
            tags = ["openai"] if name in OPENAI_MODELS else list_pretrained_tags_by_model(name)
            return any(weights_cached(name, tag=tag) for tag in tags)

    rows = []
    for name in list_configs(include_test=include_test):
        config = ARCH_CONFIGS[name]
        rows.append({"name": name, "kind": "architecture", **count_parameters(name),
                     "input_size": config["image_resolution"], "embed_dim": config["embed_dim"],
                     "activation": activation_of(config), "cached": bool(is_cached(name))})
    return rows


def summarize_pretrained() -> list[dict[str, Any]]:
    """One row per (architecture, tag) of the weights registry: what `--model ARCH:TAG` loads."""
    from clipforge.weights.registry import PRETRAINED, is_cached

    return [{"name": f"{arch}:{tag}", "kind": "pretrained", "architecture": arch, "tag": tag, "builds": entry.name,
             "activation": entry.activation, "imagenet_top1": entry.imagenet_top1,
             "input_size": ARCH_CONFIGS[entry.name]["image_resolution"],
             "embed_dim": ARCH_CONFIGS[entry.name]["embed_dim"], "cached": is_cached(arch, tag=tag),
             "url": entry.sources()[0].url}
            for (arch, tag), entry in PRETRAINED.items()]
