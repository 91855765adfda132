"""Parameter counts per architecture, for `clipforge models`: read from a stored table, counted when not there.

A count is a function of the architecture's config and the model code. Building 85 skeletons on the meta
device (nothing allocated, no initialiser: `skeleton`) took ~7 s of CPU and imported transformers for the
BERT-family towers, so `clipforge models` took 11 s, the first command many users type. The counts now ship
as data (`parameter_counts.json`, each entry with a fingerprint of the config it was counted from); a config
that is not in the table or has changed since is counted here as before (`count_parameters`). The table is
written by ``python -m clipforge.cli.models`` (which knows the shipped models' configs) and a test recounts every entry, so a change to the model code
that changes a count cannot leave the table stale.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipforge.models.configs import ARCH_CONFIGS, activation_of, list_configs

__all__ = ["COUNTS_FILE", "config_fingerprint", "count_chinese_parameters", "count_parameters", "counted",
           "summarize_models", "write_counts"]

COUNTS_FILE = Path(__file__).with_name("parameter_counts.json")
_COUNTED: dict[str, dict[str, int]] = {}


def config_fingerprint(config: dict[str, Any]) -> str:
    """What a stored count was counted from: the config as canonical JSON, hashed."""
    text = json.dumps(config, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _stored() -> dict[str, dict[str, Any]]:
    try:
        return json.loads(COUNTS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a damaged or missing table: everything is counted, as before it existed
        return {}


def _from_table(name: str, config: dict[str, Any]) -> dict[str, int] | None:
    entry = _stored().get(name)
    if not isinstance(entry, dict) or entry.get("config") != config_fingerprint(config):
        return None
    return {key: int(entry[key]) for key in ("params", "image_params", "text_params")}


def count_parameters(name: str, config: dict[str, Any] | None = None) -> dict[str, int]:
    """(total, image, text) parameters of an architecture: the stored count of this exact config, else counted
    once per process per config."""
    config = config or ARCH_CONFIGS[name]
    stored = _from_table(name, config)
    return stored if stored is not None else counted(config)


def counted(config: dict[str, Any]) -> dict[str, int]:
    """The count of a config on the meta device (what the table stores), once per process per config."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _COUNTED:
        _COUNTED[key] = _count(config)
    return dict(_COUNTED[key])


def _count(config: dict[str, Any]) -> dict[str, int]:
    import torch

    from clipforge.models.factory import create_model_from_config
    from clipforge.models.skeleton import skeleton

    with torch.device("meta"):  # nothing allocated, and no initialiser runs (`skeleton`)
        model = skeleton(lambda **c: create_model_from_config(c), **dict(config))
    image = sum(p.numel() for p in model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    scalars = sum(1 for n in ("logit_scale", "logit_bias") if getattr(model, n, None) is not None)
    return {"params": total, "image_params": image, "text_params": total - image - scalars}


def count_chinese_parameters(name: str, recount: bool = False) -> dict[str, int]:
    """Chinese-CLIP's (cn-*) counts: the stored ones, else its image tower sized on the meta device and its BERT
    tower by formula (plus the projection and the logit scale)."""
    from clipforge.models.chinese_configs import chinese_clip_config

    config = chinese_clip_config(name)
    stored = None if recount else _from_table(name, config)
    return stored if stored is not None else _count_chinese(config)


def _count_chinese(c: dict[str, Any]) -> dict[str, int]:
    import torch

    from clipforge.models.chinese_clip import bert_parameter_count
    from clipforge.models.resnet import ModifiedResNet
    from clipforge.models.vit import VisionTransformer

    with torch.device("meta"):
        if isinstance(c["vision_layers"], list):
            visual = ModifiedResNet(tuple(c["vision_layers"]), c["embed_dim"],
                                    c["vision_width"] * 32 // c["vision_head_width"], c["image_resolution"],
                                    c["vision_width"])
        else:
            visual = VisionTransformer(c["image_resolution"], c["vision_patch_size"], c["vision_width"],
                                       c["vision_layers"], c["vision_width"] // c["vision_head_width"],
                                       c["embed_dim"])
    image = sum(p.numel() for p in visual.parameters())
    text = bert_parameter_count(c["bert"]) + c["bert"]["hidden_size"] * c["embed_dim"] + 1
    return {"params": image + text, "image_params": image, "text_params": text}


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


def write_counts(extra: dict[str, dict[str, Any]] | None = None, path: Path = COUNTS_FILE) -> dict[str, Any]:
    """Count every registered architecture (test ones too), every Chinese-CLIP model and the `extra` configs
    (name -> config: the shipped models, whose configs ride in their files) and write the table."""
    from clipforge.models.chinese_clip import CHINESE_CLIP_CONFIGS, chinese_clip_config

    table: dict[str, Any] = {}
    for name in list_configs(include_test=True):
        table[name] = {"config": config_fingerprint(ARCH_CONFIGS[name]), **counted(ARCH_CONFIGS[name])}
    for name in CHINESE_CLIP_CONFIGS:
        config = chinese_clip_config(name)
        table[name] = {"config": config_fingerprint(config), **_count_chinese(config)}
    for name, config in (extra or {}).items():
        table[name] = {"config": config_fingerprint(config), **counted(config)}
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _stored.cache_clear()
    return table
