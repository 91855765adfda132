"""Check an architecture config before anything is built from it.

Configs arrive from files (safetensors metadata, a Hugging Face ``config.json``) that anyone
can write. Without a check, a negative head count builds a model that fails at its first
forward pass, a width of 10**30 overflows inside torch, and a zero divides; every one of those
surfaces far from its cause. Here each field is checked for type and a plausible range, and
the first bad one is named in a `ConfigError`.

Fields each in range can still multiply into a model no machine holds (every field at its
maximum asks for trillions of parameters: a process grew to 13.8 GB before the kernel killed
it). So the whole is bounded too, from the config alone, before anything is allocated:
`estimate_elements` counts parameters and buffers (exactly), `validate_config` refuses more than `MAX_ELEMENTS`, and
`check_fits_memory` refuses a model (or, for training, a model with its gradients and AdamW
state) larger than the memory this machine has available.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from clipforge.errors import UserError
from clipforge.models.configs import ACTIVATIONS, ArchConfig, mlp_width, vision_heads
from clipforge.models.family_keys import FAMILY_KEYS, check_family_fields

# Generous upper bounds: 10x beyond the largest published CLIPs, small enough that nothing
# overflows and a hostile file cannot ask for terabytes.
_LIMITS: dict[str, tuple[int, int]] = {
    "embed_dim": (1, 32768),
    "image_resolution": (1, 8192),
    "vision_width": (1, 32768),
    "vision_patch_size": (1, 1024),
    "context_length": (1, 65536),
    "vocab_size": (1, 2_000_000),
    "transformer_width": (1, 32768),
    "transformer_heads": (1, 1024),
    "transformer_layers": (1, 1024),
    "vision_head_width": (1, 32768),
}
_VIT_LAYERS = (1, 1024)
# About 1.6x the largest published CLIP (ViT-bigG-14: 2.54 G parameters), 16 GB in fp32.
MAX_ELEMENTS = 4_000_000_000
BYTES_PER_ELEMENT = {"inference": 4, "training": 16}  # fp32 weights; + gradients + AdamW's two moments
_REQUIRED = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "context_length",
             "vocab_size", "transformer_width", "transformer_heads", "transformer_layers")
_OPTIONAL = ("vision_patch_size", "activation", "vision_head_width", "vision_mlp_ratio", *FAMILY_KEYS)


class ConfigError(UserError, ValueError):
    """An architecture config with a missing, malformed or implausible field."""


def _int(config: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"field {key!r} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"field {key!r} = {value} is outside the plausible range {low}..{high}")
    return value


def validate_config(config: Any) -> ArchConfig:
    """A checked copy of `config` (lists of ResNet layers become tuples); raises `ConfigError`."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"a model config must be a JSON object, got {type(config).__name__}")
    unknown = sorted(k for k in config if k not in _REQUIRED + _OPTIONAL)
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r} in model config")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ConfigError(f"model config lacks field {missing[0]!r}")
    out: ArchConfig = dict(config)
    for key, (low, high) in _LIMITS.items():
        if key in config and not (key == "vision_patch_size" and config[key] is None):
            out[key] = _int(config, key, low, high)
    layers = config["vision_layers"]
    if isinstance(layers, (list, tuple)):
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 256
                                   for n in layers):
            raise ConfigError(f"field 'vision_layers' of a ResNet must be 4 integers in 1..256, got {layers!r}")
        out["vision_layers"] = tuple(layers)
        if out["vision_width"] % 2 or out["image_resolution"] % 32:
            raise ConfigError("a ResNet needs an even 'vision_width' and an 'image_resolution' divisible by 32")
    else:
        out["vision_layers"] = _int(config, "vision_layers", *_VIT_LAYERS)
        if config.get("vision_patch_size") is None:
            raise ConfigError("field 'vision_patch_size' is required for a ViT image tower")
        if out["image_resolution"] % out["vision_patch_size"] and config.get("vision_pool") != "map":
            raise ConfigError(f"field 'image_resolution' = {out['image_resolution']} is not a multiple of "
                              f"'vision_patch_size' = {out['vision_patch_size']}")
    activation = config.get("activation", "quick_gelu")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"field 'activation' must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    ratio = config.get("vision_mlp_ratio", 4.0)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
            or not 0.0 < ratio <= 64.0:
        raise ConfigError(f"field 'vision_mlp_ratio' must be a number in (0, 64], got {ratio!r}")
    if out["transformer_width"] % out["transformer_heads"]:
        raise ConfigError(f"field 'transformer_heads' = {out['transformer_heads']} does not divide "
                          f"'transformer_width' = {out['transformer_width']}")
    heads = vision_heads(out)
    if heads < 1 or (out["vision_width"] * (32 if isinstance(out["vision_layers"], tuple) else 1)) % heads:
        raise ConfigError(f"field 'vision_head_width' = {out.get('vision_head_width', 64)} does not divide "
                          f"the image tower's width {out['vision_width']}")
    if mlp_width(out) < 1:
        raise ConfigError("field 'vision_mlp_ratio' gives an empty MLP")
    family_problems = check_family_fields(out)  # the family knobs (SigLIP, MetaCLIP 2, ...)
    if family_problems:
        raise ConfigError(family_problems[0])
    elements = estimate_elements(out)
    if elements > MAX_ELEMENTS:
        raise ConfigError(f"this model config builds about {elements:,} parameters and buffers "
                          f"({elements * 4 / 1e9:,.1f} GB in fp32), more than the {MAX_ELEMENTS:,} clipforge allows "
                          f"(the largest published CLIP has 2.5 G); lower its widths, layers or context_length")
    return out


def _vit_elements(config: ArchConfig) -> int:
    width, patch, layers = config["vision_width"], config["vision_patch_size"], config["vision_layers"]
    hidden = mlp_width(config)
    grid = (config["image_resolution"] // patch) ** 2
    block = 4 * width * width + 4 * width + 2 * width * hidden + hidden + width + 4 * width
    return 3 * patch * patch * width + width + (grid + 1) * width + 4 * width + layers * block \
        + width * config["embed_dim"]


def _bn(channels: int) -> int:
    return 4 * channels + 1  # weight, bias, running mean and variance, batches seen


def _resnet_elements(config: ArchConfig) -> int:
    """ModifiedResNet's parameters and buffers: stem, bottleneck stages, attention pool."""
    width, layers = config["vision_width"], config["vision_layers"]
    half = width // 2
    total = 27 * half + _bn(half) + 9 * half * half + _bn(half) + 9 * half * width + _bn(width)
    inplanes = width
    for stage, blocks in enumerate(layers):
        planes = width * 2 ** stage
        for block in range(blocks):
            total += inplanes * planes + _bn(planes) + 9 * planes * planes + _bn(planes) + 4 * planes * planes \
                + _bn(4 * planes)
            if block == 0 and (stage > 0 or inplanes != 4 * planes):
                total += inplanes * 4 * planes + _bn(4 * planes)
            inplanes = 4 * planes
    embed, out = width * 32, config["embed_dim"]
    grid = (config["image_resolution"] // 32) ** 2
    return total + (grid + 1) * embed + 3 * (embed * embed + embed) + embed * out + out


def estimate_elements(config: ArchConfig) -> int:
    """Parameters plus buffers of the CLIP `config` describes (validated fields), without building it."""
    width, context = config["transformer_width"], config["context_length"]
    text = config["vocab_size"] * width + context * width + config["transformer_layers"] * (
        12 * width * width + 13 * width) + 2 * width + width * config["embed_dim"] + 1
    image = _resnet_elements(config) if isinstance(config["vision_layers"], (list, tuple)) else _vit_elements(config)
    return text + image


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (then no memory check is made)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits_memory(config: ArchConfig, purpose: str = "inference", available: int | None = None) -> int:
    """Refuse (ConfigError) a validated config whose model needs more memory than is available;
    returns the estimated bytes. `purpose` "training" counts gradients and AdamW's state too."""
    need = estimate_elements(config) * BYTES_PER_ELEMENT[purpose]
    available = available_memory_bytes() if available is None else available
    if available is not None and need > available:
        raise ConfigError(f"this model config needs about {need / 1e9:,.1f} GB for {purpose} "
                          f"({estimate_elements(config):,} parameters and buffers), but only "
                          f"{available / 1e9:,.1f} GB of memory is available; use a smaller model")
    return need
