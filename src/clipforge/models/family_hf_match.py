"""Which registered architecture a state dict with a transformers text tower holds.

A transformers encoder's arithmetic depends on config fields no tensor shows (M2M100's
embedding scale and ReLU, mT5's relative-position buckets, norm epsilons), so such a config
cannot be read back from shapes the way OpenAI's can. Instead the file's shapes are matched
against the registered architectures with a transformers tower (`family_configs`), and the
matching one's config is returned whole. No match is an error naming what the file holds.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from clipforge.models.family_keys import hf_embedding_key, hf_layer_prefix, hf_layers, hf_width

__all__ = ["hf_tower_config_from_state_dict", "hf_tower_signature"]


def _count(sd: Mapping[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def hf_tower_signature(config: Mapping[str, Any]) -> tuple:
    """What the tensors of `config`'s model show: tower kinds and shapes."""
    hf = config["text_hf"]
    model_type = str(hf["model_type"])
    grid = int(config["image_resolution"]) // int(config["vision_patch_size"])
    pool = config.get("vision_pool", "class")
    return (hf_layer_prefix(model_type), int(hf["vocab_size"]), hf_width(hf), hf_layers(hf),
            bool(config.get("text_proj_mlp", False)), int(config["embed_dim"]), pool, int(config["vision_width"]),
            int(config["vision_patch_size"]), int(config["vision_layers"]), grid * grid + (pool != "map"))


def _signature_of_state_dict(sd: Mapping[str, torch.Tensor]) -> tuple:
    text = "text.transformer."
    prefix = next((p for p in ("encoder.layer.", "layers.", "block.") if any(k.startswith(text + p) for k in sd)), None)
    if prefix is None:
        raise ValueError("a transformers text tower without layers (no text.transformer.{encoder.layer,layers,block}.*)")
    model_type = {"encoder.layer.": "roberta", "layers.": "m2m_100", "block.": "mt5"}[prefix]
    embedding = sd[text + hf_embedding_key(model_type)]
    mlp = "text.proj.2.weight" in sd
    embed_dim = sd["text.proj.2.weight" if mlp else "text.proj.weight"].shape[0]
    pool = "map" if "visual.attn_pool.probe" in sd else "class"
    conv = sd["visual.conv1.weight"]
    return (prefix, int(embedding.shape[0]), int(embedding.shape[1]), _count(sd, text + prefix), mlp, int(embed_dim),
            pool, int(conv.shape[0]), int(conv.shape[-1]), _count(sd, "visual.transformer.resblocks."),
            int(sd["visual.positional_embedding"].shape[0]))


def hf_tower_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The config of the registered architecture whose tensors `sd` holds (ValueError if none)."""
    from clipforge.models.configs import ARCH_CONFIGS

    try:
        found = _signature_of_state_dict(sd)
    except KeyError as missing:
        raise ValueError(f"a transformers text tower state dict without {missing.args[0]}") from None
    for config in ARCH_CONFIGS.values():
        if config.get("text_hf") is not None and hf_tower_signature(config) == found:
            return copy.deepcopy(dict(config))
    raise ValueError(f"no registered architecture has a transformers text tower of these shapes "
                     f"(layers {found[0]!r}, vocabulary {found[1]}, width {found[2]}, {found[3]} layers, "
                     f"embedding {found[5]}, image tower {found[7]} wide with {found[9]} blocks)")
