"""Conversion between OpenAI-layout CLIP state dicts and Hugging Face `transformers` `CLIPModel`.

The two layouts hold the same numbers under different names, with three structural
differences: HF splits attention's packed ``in_proj_weight`` into q/k/v Linears, stores the
projections as ``nn.Linear`` weights (the transpose of OpenAI's ``x @ proj`` matrices), and
wraps the 1-D positional tables in ``nn.Embedding``. Everything else is a rename, so the
conversion is exact both ways. Only ViT image towers exist in HF's CLIPModel.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from clipforge.weights.errors import CheckpointFormatError, json_object, json_value, member
from clipforge.weights.layout import canonical_order
from clipforge.weights.torch_pickle import brief

Tensor = torch.Tensor

# Non-block tensors: OpenAI name -> (HF name, transposed?)
_TOP_LEVEL: dict[str, tuple[str, bool]] = {
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "ln_final.weight": ("text_model.final_layer_norm.weight", False),
    "ln_final.bias": ("text_model.final_layer_norm.bias", False),
    "text_projection": ("text_projection.weight", True),
    "logit_scale": ("logit_scale", False),
    "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
    "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "visual.ln_pre.weight": ("vision_model.pre_layrnorm.weight", False),
    "visual.ln_pre.bias": ("vision_model.pre_layrnorm.bias", False),
    "visual.ln_post.weight": ("vision_model.post_layernorm.weight", False),
    "visual.ln_post.bias": ("vision_model.post_layernorm.bias", False),
    "visual.proj": ("visual_projection.weight", True),
}
_TOP_LEVEL_FROM_HF = {hf: (ours, t) for ours, (hf, t) in _TOP_LEVEL.items()}

# Inside a residual block: OpenAI suffix -> HF suffix (the packed in_proj is handled apart).
_BLOCK: dict[str, str] = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_BLOCK_FROM_HF = {hf: ours for ours, hf in _BLOCK.items()}
_TOWERS = (("transformer.resblocks.", "text_model.encoder.layers."),
           ("visual.transformer.resblocks.", "vision_model.encoder.layers."))
_OURS_BLOCK = re.compile(r"^(visual\.transformer\.resblocks\.|transformer\.resblocks\.)(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^(vision_model\.encoder\.layers\.|text_model\.encoder\.layers\.)(\d+)\.(.+)$")
_QKV = re.compile(r"^self_attn\.([qkv])_proj\.(weight|bias)$")
_IGNORED_HF = re.compile(r"(^|\.)position_ids$")
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")

TEXT_TOKEN_IDS = {"bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}


def _is_resnet(state_dict: dict[str, Tensor]) -> bool:
    return any(k.startswith(("visual.attnpool.", "visual.layer1.")) for k in state_dict)


_CLIPMODEL_FORM = {"vision_pool": "class", "vision_ln_pre": True, "text_causal": True, "text_pool": "argmax",
                   "tokenizer": None, "text_hf": None}
"""Family settings a transformers `CLIPModel` has, and their only value there (`models.family_keys`)."""


def _refuse_family_settings(config: dict[str, Any], state_dict: dict[str, Tensor]) -> None:
    """A state dict whose config has a family setting `CLIPModel` lacks (CLIPA's mean-pooled image tower without
    `ln_pre`, a bidirectional text tower read at its last position, a tokenizer of its own) has no CLIPModel form:
    `save_hf(model.state_dict(), ...)` of a CLIPA model wrote a folder transformers loaded with `pre_layrnorm`
    missing, whose image features had cosine 0.25-0.63 to ours. `save_hf(model)` refused it already."""
    odd = [f"{key}={config[key]!r}" for key, value in _CLIPMODEL_FORM.items()
           if config.get(key) is not None and config[key] != value]
    if "visual.class_embedding" in state_dict and "visual.ln_pre.weight" not in state_dict:
        odd.append("no visual.ln_pre, as in CLIPA's image tower")
    if odd:
        raise CheckpointFormatError(
            f"this model has no Hugging Face CLIPModel form ({', '.join(odd)}): save it with save_safetensors")


def to_hf(state_dict: dict[str, Tensor], config: dict[str, Any] | None = None,
          ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """OpenAI-layout state dict + our config -> (HF CLIPModel state dict, HF config dict).

    `config` supplies what shapes cannot (the text tower's head count); without it heads are
    width // 64, as in every OpenAI model.
    """
    from clipforge.models import config_from_state_dict

    if _is_resnet(state_dict):
        raise CheckpointFormatError("ResNet CLIP models (RN50, RN101, RN50x*) have no Hugging Face "
                                    "CLIPModel equivalent: only ViT image towers can be converted")
    sd = {k: v for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS}
    config = dict(config) if config is not None else config_from_state_dict(sd)
    _refuse_family_settings(config, sd)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key in _TOP_LEVEL:
            name, transpose = _TOP_LEVEL[key]
            out[name] = value.t().contiguous() if transpose else value
            continue
        match = _OURS_BLOCK.match(key)
        if match is None:
            raise CheckpointFormatError(f"cannot convert {key!r} to Hugging Face layout: not a CLIP ViT tensor")
        prefix, index, suffix = match.groups()
        hf_prefix = dict(_TOWERS)[prefix] + index + "."
        if suffix in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if suffix.endswith("weight") else "bias"
            if value.shape[0] % 3:
                raise CheckpointFormatError(f"{key!r} has {value.shape[0]} rows, not a multiple of 3 (q, k, v)")
            for letter, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{hf_prefix}self_attn.{letter}_proj.{kind}"] = part.contiguous()
        elif suffix in _BLOCK:
            out[hf_prefix + _BLOCK[suffix]] = value
        else:
            raise CheckpointFormatError(f"cannot convert {key!r} to Hugging Face layout: unknown block tensor")
    return out, hf_config_from_config(config, logit_scale=sd.get("logit_scale"))


def hf_config_from_config(config: dict[str, Any], logit_scale: Tensor | None = None) -> dict[str, Any]:
    """Our constructor arguments as a `transformers.CLIPConfig` dict (``CLIPConfig(**d)`` works).

    GELU models map to HF's ``hidden_act="gelu"`` (exact erf GELU, as open_clip's ``nn.GELU``),
    QuickGELU ones to ``"quick_gelu"``; head width and MLP ratio become head count and
    intermediate size.
    """
    from clipforge.models.configs import activation_of, mlp_width, vision_heads

    if isinstance(config["vision_layers"], (list, tuple)):
        raise CheckpointFormatError("ResNet CLIP models have no Hugging Face CLIPModel equivalent")
    width, vwidth, embed = config["transformer_width"], config["vision_width"], config["embed_dim"]
    common = {"hidden_act": activation_of(config), "layer_norm_eps": 1e-5, "attention_dropout": 0.0,
              "dropout": 0.0, "initializer_range": 0.02, "initializer_factor": 1.0, "projection_dim": embed}
    text = {"vocab_size": config["vocab_size"], "hidden_size": width, "intermediate_size": 4 * width,
            "num_hidden_layers": config["transformer_layers"],
            "num_attention_heads": config["transformer_heads"],
            "max_position_embeddings": config["context_length"], **common, **TEXT_TOKEN_IDS}
    vision = {"hidden_size": vwidth, "intermediate_size": mlp_width(config),
              "num_hidden_layers": config["vision_layers"], "num_attention_heads": vision_heads(config),
              "image_size": config["image_resolution"], "patch_size": config["vision_patch_size"],
              "num_channels": 3, **common}
    scale = float(logit_scale) if logit_scale is not None else 2.6592
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": embed,
            "logit_scale_init_value": scale, "initializer_factor": 1.0,
            "text_config": text, "vision_config": vision}


def from_hf(hf_state_dict: dict[str, Tensor], hf_config: dict[str, Any] | None = None,
            ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """HF CLIPModel state dict (+ its config.json dict) -> (OpenAI-layout state dict, our config).
    A ``SiglipModel``'s tensors go to `clipforge.weights.hf_siglip` (clipforge's SigLIP layout)."""
    from clipforge.models import config_from_state_dict
    from clipforge.weights.family_layouts import is_hf_siglip

    if is_hf_siglip(hf_state_dict):
        from clipforge.weights.hf_siglip import from_hf_siglip_state

        return from_hf_siglip_state(hf_state_dict, hf_config)

    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in hf_state_dict.items():
        if _IGNORED_HF.search(key):
            continue  # a buffer older transformers saved; it is just arange(n)
        if key in _TOP_LEVEL_FROM_HF:
            name, transpose = _TOP_LEVEL_FROM_HF[key]
            out[name] = value.t().contiguous() if transpose else value
            continue
        match = _HF_BLOCK.match(key)
        if match is None:
            raise CheckpointFormatError(f"unexpected tensor {key!r} in a Hugging Face CLIPModel checkpoint")
        prefix, index, suffix = match.groups()
        ours = {hf: o for o, hf in _TOWERS}[prefix] + index + "."
        if (m := _QKV.match(suffix)) is not None:
            qkv.setdefault((ours, m.group(2)), {})[m.group(1)] = value
        elif suffix in _BLOCK_FROM_HF:
            out[ours + _BLOCK_FROM_HF[suffix]] = value
        else:
            raise CheckpointFormatError(f"unexpected tensor {key!r} in a Hugging Face CLIPModel checkpoint")
    for (ours, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointFormatError(f"Hugging Face checkpoint lacks some of q/k/v_proj.{kind} for {ours}")
        out[f"{ours}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if "visual.proj" not in out:
        raise CheckpointFormatError("not a Hugging Face CLIPModel checkpoint: visual_projection.weight is missing")
    try:
        config = config_from_state_dict(out)
    except (KeyError, IndexError, ValueError) as err:
        raise CheckpointFormatError(f"Hugging Face CLIPModel checkpoint is incomplete: {err!s} is missing "
                                    "or malformed") from None
    if hf_config is not None:  # a folder's config.json, even an empty object: checked (`_apply_hf_config`)
        config = _apply_hf_config(config, hf_config, hf_state_dict)
    return canonical_order(out, config), config


def _apply_hf_config(config: dict[str, Any], hf_config: dict[str, Any],
                     hf_state_dict: dict[str, Tensor]) -> dict[str, Any]:
    """Take activation and head counts from HF's config; refuse what our CLIP would compute
    differently, and every size that contradicts the tensors `hf_state_dict` (`hf_config.check_config_sizes`);
    every value is checked before use (the file may come from anyone)."""
    from clipforge.models import ConfigError, validate_config
    from clipforge.weights.hf_config import CLIP_SIZES, check_config_sizes, field_name, tower_config

    if not isinstance(hf_config, dict):
        raise CheckpointFormatError("config.json must hold a JSON object")
    subs, sections = {}, {}
    for label in ("text", "vision"):
        subs[label], sections[label] = tower_config(hf_config, label)
    check_config_sizes(hf_state_dict, subs["text"], subs["vision"], sizes=CLIP_SIZES, top=hf_config,
                       class_token=True, sections=sections)
    acts = {subs[t].get("hidden_act", "quick_gelu") for t in subs}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise CheckpointFormatError(f"config.json field 'hidden_act' is {sorted(map(str, acts))}; clipforge's CLIP "
                                    "runs quick_gelu or gelu, the same in both towers")
    config["activation"] = acts.pop()
    for label, sub in subs.items():
        eps = sub.get("layer_norm_eps", 1e-5)  # NaN passed `abs(eps - 1e-5) > 1e-12` (every comparison is False)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not abs(float(eps) - 1e-5) <= 1e-12:
            name = field_name(sections[label].get("layer_norm_eps", f"{label}_config"), "layer_norm_eps")
            raise CheckpointFormatError(f"config.json field '{name}' is {brief(eps)}; clipforge uses 1e-5")
    text, vision = subs["text"], subs["vision"]
    if "num_attention_heads" in text:
        config["transformer_heads"] = text["num_attention_heads"]
    heads = vision.get("num_attention_heads")
    if heads is not None:
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or config["vision_width"] % heads:
            raise CheckpointFormatError(f"config.json field 'vision_config.num_attention_heads' = {brief(heads)} "
                                        f"does not divide the vision width {config['vision_width']}")
        config.pop("vision_head_width", None)
        if config["vision_width"] // heads != 64:
            config["vision_head_width"] = config["vision_width"] // heads
    try:
        return validate_config(config)
    except ConfigError as err:
        raise CheckpointFormatError(f"config.json: {err}") from None


def save_hf(model_or_state_dict: Any, directory: str | os.PathLike[str],
            config: dict[str, Any] | None = None, preprocess: dict[str, Any] | None = None) -> Path:
    """Write a folder Hugging Face reads as a whole model: ``config.json`` + ``model.safetensors``
    (``CLIPModel.from_pretrained``), the tokenizer files (``CLIPTokenizer``/``AutoTokenizer``) and
    ``preprocessor_config.json`` (``CLIPProcessor``, ``pipeline("zero-shot-image-classification")``).

    `preprocess` (mean, std, interpolation, resize_mode) defaults to the model's
    ``preprocess_cfg`` (set for registry weights), else OpenAI's.
    """
    from clipforge.atomic import write_json_atomic
    from clipforge.weights.hf_files import write_preprocessor_config, write_tokenizer_files
    from clipforge.weights.save import _atomic_write_safetensors, model_config

    if hasattr(model_or_state_dict, "bert") and hasattr(model_or_state_dict, "visual"):  # Chinese-CLIP (issue 17)
        from clipforge.weights.cn_clip import save_chinese_hf

        return save_chinese_hf(model_or_state_dict, directory)
    if isinstance(model_or_state_dict, torch.nn.Module) and getattr(model_or_state_dict, "scoring", "") == "sigmoid":
        from clipforge.weights.hf_siglip import save_hf_siglip  # SiglipModel + SiglipTokenizer folder

        return save_hf_siglip(model_or_state_dict, directory, preprocess)
    if isinstance(model_or_state_dict, torch.nn.Module) and (
            getattr(model_or_state_dict, "tokenizer_cfg", None) or getattr(model_or_state_dict, "text_pool", "argmax")
            != "argmax"):
        raise ValueError("save_hf writes CLIPModel folders (OpenAI's BPE, text read at the highest id) and SigLIP "
                         "folders; this model's tokenizer or text pooling (e.g. MetaCLIP 2's XLM-V, first EOS) has "
                         "no CLIPModel form - save it with save_safetensors")
    if isinstance(model_or_state_dict, torch.nn.Module):
        config = config or model_config(model_or_state_dict)
        preprocess = preprocess or getattr(model_or_state_dict, "preprocess_cfg", None)
        state_dict = model_or_state_dict.state_dict()
    else:
        state_dict = dict(model_or_state_dict)
    hf_sd, hf_config = to_hf(state_dict, config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write_safetensors(hf_sd, directory / "model.safetensors", {"format": "pt"})
    write_json_atomic(directory / "config.json", hf_config)
    write_tokenizer_files(directory, int(hf_config["text_config"]["max_position_embeddings"]))
    write_preprocessor_config(directory, int(hf_config["vision_config"]["image_size"]), preprocess)
    languages = getattr(model_or_state_dict, "languages", None)
    if languages:  # what the model reads (a fine-tune of clipforge-tiny-zh: zh, en), read back by `recorded_languages`
        write_json_atomic(directory / "languages.json", {"languages": [str(code) for code in languages]})
    return directory


def read_hf_directory(directory: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The raw HF state dict and config of a ``save_pretrained`` directory (sharded or not). A member that is no
    regular file (a FIFO, a device) is named as such (`member`), not taken for a missing one; the shards hold at most
    `damaged.MAX_TENSORS` tensors in all, as one file does."""
    from clipforge.weights.damaged import too_many_tensors
    from clipforge.weights.safetensors_file import read_safetensors

    config_path = directory / "config.json"
    if not member(config_path):
        raise CheckpointFormatError(f"{directory} is a directory without config.json: expected a Hugging "
                                    "Face CLIPModel checkpoint (config.json + model.safetensors or "
                                    "pytorch_model.bin)")
    hf_config = json_object(config_path)
    if hf_config.get("model_type", "clip") not in ("clip", "siglip"):
        raise CheckpointFormatError(_unread_model_type(config_path, hf_config.get("model_type")))

    def read(path: Path) -> dict[str, Tensor]:
        from clipforge.weights.torch_pickle import torch_load_safely, unwrap

        if path.suffix == ".safetensors":  # the generic reader: a FIFO, damage, too many tensors said as there
            return read_safetensors(path)[0]
        # whatever torch.save wrote (a list, a bare tensor): said naming this file, not the folder
        return unwrap(torch_load_safely(path), path)

    for single in ("model.safetensors", "pytorch_model.bin"):
        if member(directory / single):
            return read(directory / single), hf_config
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if member(directory / index):
            weight_map = _weight_map(directory / index)
            if (refusal := too_many_tensors(directory / index, len(weight_map), "its weight_map lists")) is not None:
                raise CheckpointFormatError(refusal)
            state: dict[str, Tensor] = {}
            held = 0
            for shard in sorted(set(weight_map.values())):
                if not isinstance(shard, str) or Path(shard).name != shard:
                    raise CheckpointFormatError(f"{directory / index} names shard {brief(shard)} outside "
                                                "its directory")
                part = read(directory / shard)
                held += len(part)
                if (refusal := too_many_tensors(directory / index, held, "the shards it names hold")) is not None:
                    raise CheckpointFormatError(refusal)
                state.update(part)
            return state, hf_config
    raise CheckpointFormatError(f"{directory} has config.json but no model.safetensors, pytorch_model.bin "
                                "or sharded index: no weights to load")


_READ_FOLDERS = ("CLIPModel (model_type 'clip'), SiglipModel ('siglip': SigLIP, and SigLIP 2 at a fixed resolution) "
                 "and ChineseCLIPModel ('chinese_clip')")


def _unread_model_type(config_path: Path, model_type: Any) -> str:
    """The line for a transformers folder of a model clipforge does not run, saying which folders it does read:
    a SigLIP 2 NaFlex folder was told "expected a CLIPModel", as if no SiglipModel folder loaded."""
    if model_type == "siglip2":  # Siglip2Model: patches of any aspect ratio, no fixed position grid
        return (f"{config_path} describes a 'siglip2' model (Siglip2Model: SigLIP 2 NaFlex, variable resolution), "
                "which clipforge does not run; the fixed-resolution SigLIP 2 folders (SiglipModel, model_type "
                "'siglip', e.g. google/siglip2-base-patch16-224) load, as do CLIPModel and ChineseCLIPModel folders")
    return f"{config_path} describes a {brief(model_type)} model, which clipforge does not run: it reads {_READ_FOLDERS}"


_INDEX_LIMIT = 10_000_000


def _weight_map(index: Path) -> dict[str, Any]:
    """The ``weight_map`` (tensor name -> shard file) of a sharded folder's index file, checked to be one. At most
    `_INDEX_LIMIT` bytes are read: the index of `damaged.MAX_TENSORS` tensors with 200-character names is 1.1 MB."""
    found = json_value(index, _INDEX_LIMIT)
    weight_map = found.get("weight_map") if isinstance(found, dict) else None
    # every shard a file name: a list or a number among them was a TypeError traceback (set(), then sorted())
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointFormatError(f"{index} must hold a JSON object with a 'weight_map' object (tensor names to "
                                    "shard files)")
    return weight_map


def read_hf_preprocess(directory: Path, image_size: int | None = None,
                       default: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The preprocessing a folder's image processor config records (`clipforge.weights.hf_preprocess`)."""
    from clipforge.weights.hf_preprocess import read_hf_preprocess as read

    return read(directory, image_size, default)
