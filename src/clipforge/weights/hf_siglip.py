"""transformers' SigLIP folders: read (`from_hf_siglip_state`) and write (`save_hf_siglip`).

A folder written here is what ``SiglipModel.from_pretrained``, ``AutoProcessor`` and
``pipeline("zero-shot-image-classification")`` read: ``config.json`` (model_type ``siglip``),
``model.safetensors``, the SentencePiece tokenizer (``spiece.model`` + its config, lower-casing
as SigLIP was trained) and ``preprocessor_config.json`` (squash resize, mean/std 0.5).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipforge.weights.errors import CheckpointFormatError
from clipforge.weights.hf_config import check_config_sizes, config_number
from clipforge.weights.hf_siglip_folder import GEMMA_VOCAB, folder_tokenizer

__all__ = ["GEMMA_VOCAB", "check_config_sizes", "folder_tokenizer", "from_hf_siglip_state", "save_hf_siglip"]

_ACT = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}


def from_hf_siglip_state(hf_state_dict: dict[str, Tensor], hf_config: dict[str, Any] | None
                         ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """transformers ``SiglipModel`` tensors + config.json -> (clipforge state dict, checked config)."""
    from clipforge.models import ConfigError, config_from_state_dict, validate_config
    from clipforge.weights.family_layouts import from_hf_siglip

    sd = from_hf_siglip(hf_state_dict)  # a missing or unexpected tensor: its own line
    hf_config = hf_config or {}
    text, vision = hf_config.get("text_config") or {}, hf_config.get("vision_config") or {}
    if not isinstance(text, dict) or not isinstance(vision, dict):
        raise CheckpointFormatError("config.json fields 'text_config'/'vision_config' must be JSON objects")
    image_size = check_config_sizes(hf_state_dict, text, vision)
    try:
        config = config_from_state_dict(sd)
    except (KeyError, IndexError, ValueError) as err:
        raise CheckpointFormatError(f"SigLIP checkpoint is incomplete: {err!s} is missing or malformed") from None
    config.update(vision_pool="map", vision_patch_bias=True, vision_ln_pre=False, vision_proj=False,
                  text_causal=False, text_pool="last", text_proj_bias=True, scoring="sigmoid")
    acts = {}
    for label, sub in (("text", text), ("vision", vision)):
        act = sub.get("hidden_act", "gelu_pytorch_tanh")
        if act not in _ACT:
            raise CheckpointFormatError(f"config.json field '{label}_config.hidden_act' = {act!r} is not one "
                                        f"clipforge runs ({', '.join(_ACT)})")
        acts[label] = _ACT[act]
    config["activation"] = acts["vision"]
    if acts["text"] != acts["vision"]:
        config["text_activation"] = acts["text"]
    if image_size is not None:  # the tensors' grid at the size transformers feeds: 384 for so400m-patch14-384
        config["image_resolution"] = image_size
    config["norm_eps"] = float(config_number(vision, "layer_norm_eps", 1e-6, "vision_config"))
    config["transformer_heads"] = int(config_number(text, "num_attention_heads", config["transformer_heads"],
                                                    "text_config"))
    heads = int(config_number(vision, "num_attention_heads", 12, "vision_config"))
    if heads < 1 or config["vision_width"] % heads:
        raise CheckpointFormatError(f"config.json field 'vision_config.num_attention_heads' = {heads} does not "
                                    f"divide the vision width {config['vision_width']}")
    config["vision_head_width"] = config["vision_width"] // heads
    try:
        return sd, validate_config(config)
    except ConfigError as err:
        raise CheckpointFormatError(f"config.json: {err}") from None


def save_hf_siglip(model: torch.nn.Module, directory: str | os.PathLike[str],
                   preprocess: dict[str, Any] | None = None) -> Path:
    """Write a transformers SigLIP folder for a clipforge SigLIP model (see module docstring)."""
    from clipforge.atomic import write_json_atomic
    from clipforge.weights.family_layouts import siglip_hf_config, to_hf_siglip
    from clipforge.weights.save import _atomic_write_safetensors, model_config

    config = model_config(model)
    tokenizer = getattr(model, "tokenizer_cfg", None) or {}
    if tokenizer.get("kind") != "sentencepiece":
        raise ValueError("save_hf writes SigLIP folders with a SentencePiece tokenizer (SiglipTokenizer); "
                         f"this model's tokenizer is {tokenizer.get('kind', 'openai-bpe')!r}")
    from clipforge.text.families import tokenizer_of

    source = tokenizer_of(model).path
    if source is None:
        raise FileNotFoundError(f"the model's tokenizer file {tokenizer.get('file')!r} was not found; "
                                "put it beside the checkpoint")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_sd = to_hf_siglip(model.state_dict())
    _atomic_write_safetensors(hf_sd, directory / "model.safetensors", {"format": "pt"})
    hf_config = siglip_hf_config(config)
    hf_config["text_config"]["pad_token_id"] = int(tokenizer.get("pad_id", 1))
    hf_config["text_config"]["eos_token_id"] = int(tokenizer.get("eos_id", 1))
    write_json_atomic(directory / "config.json", hf_config)
    shutil.copyfile(source, directory / "spiece.model")
    context = int(config["context_length"])
    write_json_atomic(directory / "tokenizer_config.json", {
        "tokenizer_class": "SiglipTokenizer", "model_max_length": context,
        "do_lower_case": tokenizer.get("clean") in ("canonicalize", "lower"),
        "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
        # no attention mask: SigLIP's text tower attends to the padding (as trained, and as google's folders say)
        "model_input_names": ["input_ids"]})
    write_json_atomic(directory / "special_tokens_map.json",
                      {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"})
    cfg = dict(preprocess or getattr(model, "preprocess_cfg", None) or {})
    size = int(config["image_resolution"])
    if cfg.get("resize_mode") == "shortest":  # SiglipImageProcessor only squashes: CLIP's form says this one
        from clipforge.weights.hf_files import write_preprocessor_config

        write_preprocessor_config(directory, size, cfg)
        return directory
    write_json_atomic(directory / "preprocessor_config.json", {
        "image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
        "do_resize": True, "size": {"height": size, "width": size}, "resample": 3 if
        cfg.get("interpolation", "bicubic") == "bicubic" else 2, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(cfg.get("mean", (0.5, 0.5, 0.5))),
        "image_std": list(cfg.get("std", (0.5, 0.5, 0.5)))})
    return directory
