"""Write checkpoints as safetensors, with the architecture config riding along as metadata.

safetensors cannot run code when read, which is why it is the format clipforge writes. The
config is stored because shapes do not determine everything (a text tower's head count), so
a file written here rebuilds exactly the model that was saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CONFIG_KEY = "clipforge_config"


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """The constructor arguments of a built CLIP, read back from its shapes and attention heads."""
    from clipforge.models import config_from_state_dict

    config = config_from_state_dict(model.state_dict())
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if blocks is not None and len(blocks) and hasattr(blocks[0].attn, "heads"):
        config["transformer_heads"] = int(blocks[0].attn.heads)
    return config


def _atomic_write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def save_safetensors(model_or_state_dict: torch.nn.Module | dict[str, torch.Tensor],
                     path: str | os.PathLike[str], config: dict[str, Any] | None = None) -> Path:
    """Save weights (OpenAI layout) to `path`, atomically, with `config` as JSON metadata.

    Given a model and no config, the model's own config is stored; given a bare state dict
    and no config, none is stored and loaders fall back to inferring it from shapes.
    """
    if isinstance(model_or_state_dict, torch.nn.Module):
        state_dict = model_or_state_dict.state_dict()
        if config is None:
            config = model_config(model_or_state_dict)
    else:
        state_dict = dict(model_or_state_dict)
    metadata = {"format": "pt"}
    if config is not None:
        metadata[CONFIG_KEY] = json.dumps(_jsonable(config), sort_keys=True)
    path = Path(path)
    _atomic_write_safetensors(state_dict, path, metadata)
    return path


def config_from_metadata(metadata: dict[str, str] | None, source: object = "") -> dict[str, Any] | None:
    """The config `save_safetensors` stored, ready for `CLIP(**config)`; None when absent."""
    from clipforge.weights.errors import CheckpointFormatError

    if not metadata or CONFIG_KEY not in metadata:
        return None
    try:
        config = json.loads(metadata[CONFIG_KEY])
    except ValueError as err:
        raise CheckpointFormatError(f"{source}: metadata {CONFIG_KEY!r} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise CheckpointFormatError(f"{source}: metadata {CONFIG_KEY!r} is not a JSON object")
    if isinstance(config.get("vision_layers"), list):
        config["vision_layers"] = tuple(config["vision_layers"])
    return config
