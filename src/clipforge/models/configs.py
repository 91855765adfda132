"""Architecture configs as data: OpenAI's nine and open_clip's CLIPs of the same shape.

Each config holds the arguments of the `CLIP` constructor. OpenAI's nine hold exactly the
arguments of OpenAI's reference `CLIP` (so a config can be compared field by field with what
`build_model` infers from a checkpoint); open_clip's add the knobs they turn:

- ``activation``: ``"gelu"`` (exact, erf-based; open_clip's default) or ``"quick_gelu"``
  (OpenAI's sigmoid approximation, the default when the key is absent);
- ``vision_head_width``: the ViT's attention head width (64 unless given; ViT-H/g/bigG differ);
- ``vision_mlp_ratio``: the ViT MLP's hidden width over its width (4 unless given).

Names follow each project's meaning. OpenAI's spellings (``ViT-B/32``) are OpenAI's
QuickGELU models; open_clip's spellings follow open_clip exactly: ``ViT-B-32`` is the GELU
architecture and ``ViT-B-32-quickgelu`` the QuickGELU one. The one overlap, the ResNet names
both projects spell alike (``RN50``), keeps OpenAI's meaning (QuickGELU, as all their weights). (clipforge 0.1 treated ``ViT-B-32``
as an alias of ``ViT-B/32``; that alias is gone because it silently gave GELU weights the
wrong activation. ``ViT-B-32-quickgelu`` or ``ViT-B/32`` is the old meaning.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

ArchConfig = dict[str, Any]

ACTIVATIONS = ("quick_gelu", "gelu", "gelu_tanh")
DEFAULT_ACTIVATION = "quick_gelu"


def _text(width: int, heads: int, layers: int = 12) -> dict[str, int]:
    return {"context_length": 77, "vocab_size": 49408, "transformer_width": width,
            "transformer_heads": heads, "transformer_layers": layers}


def _vit(embed: int, resolution: int, layers: int, width: int, patch: int) -> dict[str, Any]:
    return {"embed_dim": embed, "image_resolution": resolution, "vision_layers": layers,
            "vision_width": width, "vision_patch_size": patch}


def _rn(embed: int, resolution: int, layers: tuple[int, int, int, int], width: int) -> dict[str, Any]:
    return {"embed_dim": embed, "image_resolution": resolution, "vision_layers": layers,
            "vision_width": width, "vision_patch_size": None}


ARCH_CONFIGS: dict[str, ArchConfig] = {
    "RN50": {**_rn(1024, 224, (3, 4, 6, 3), 64), **_text(512, 8)},
    "RN101": {**_rn(512, 224, (3, 4, 23, 3), 64), **_text(512, 8)},
    "RN50x4": {**_rn(640, 288, (4, 6, 10, 6), 80), **_text(640, 10)},
    "RN50x16": {**_rn(768, 384, (6, 8, 18, 8), 96), **_text(768, 12)},
    "RN50x64": {**_rn(1024, 448, (3, 15, 36, 10), 128), **_text(1024, 16)},
    "ViT-B/32": {**_vit(512, 224, 12, 768, 32), **_text(512, 8)},
    "ViT-B/16": {**_vit(512, 224, 12, 768, 16), **_text(512, 8)},
    "ViT-L/14": {**_vit(768, 224, 24, 1024, 14), **_text(768, 12)},
    "ViT-L/14@336px": {**_vit(768, 336, 24, 1024, 14), **_text(768, 12)},
    # Small configs: fast enough for unit tests, same code paths as the real ones.
    "test-vit-tiny": {**_vit(32, 32, 2, 128, 8), **_text(128, 2, 2)},
    "test-rn-tiny": {**_rn(32, 64, (1, 1, 1, 1), 16), **_text(128, 2, 2)},
}

OPENAI_MODELS: tuple[str, ...] = (
    "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px",
)

# open_clip's model_configs/*.json for the CLIPs of OpenAI's shape that have published weights
# (open-clip-torch 3.3), in our constructor's terms; `-quickgelu` twins where open_clip has them.
_OPEN_CLIP_BASE: dict[str, ArchConfig] = {
    "RN50": ARCH_CONFIGS["RN50"],
    "RN101": ARCH_CONFIGS["RN101"],
    "RN50x4": ARCH_CONFIGS["RN50x4"],
    "RN50x16": ARCH_CONFIGS["RN50x16"],
    "RN50x64": ARCH_CONFIGS["RN50x64"],
    "ViT-B-32": ARCH_CONFIGS["ViT-B/32"],
    "ViT-B-32-256": {**_vit(512, 256, 12, 768, 32), **_text(512, 8)},
    "ViT-B-16": ARCH_CONFIGS["ViT-B/16"],
    "ViT-B-16-plus-240": {**_vit(640, 240, 12, 896, 16), **_text(640, 10)},
    "ViT-L-14": ARCH_CONFIGS["ViT-L/14"],
    "ViT-L-14-336": ARCH_CONFIGS["ViT-L/14@336px"],
    "ViT-H-14": {**_vit(1024, 224, 32, 1280, 14), "vision_head_width": 80, **_text(1024, 16, 24)},
    "ViT-g-14": {**_vit(1024, 224, 40, 1408, 14), "vision_head_width": 88, "vision_mlp_ratio": 4.3637,
                 **_text(1024, 16, 24)},
    "ViT-bigG-14": {**_vit(1280, 224, 48, 1664, 14), "vision_head_width": 104, "vision_mlp_ratio": 4.9231,
                    **_text(1280, 20, 32)},
}
_QUICKGELU_TWINS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14",
                    "ViT-L-14-336", "ViT-H-14", "ViT-bigG-14")  # the `-quickgelu` configs open_clip defines
OPEN_CLIP_MODELS: tuple[str, ...] = tuple(_OPEN_CLIP_BASE) + tuple(f"{b}-quickgelu" for b in _QUICKGELU_TWINS)

for _name, _config in _OPEN_CLIP_BASE.items():
    # RN50, RN101 and RN50x4/x16/x64 are spelled alike by both projects: they keep OpenAI's
    # meaning (QuickGELU), as does every weight published for them; open_clip's GELU variants
    # of these ResNets have no published weights.
    if _name not in ARCH_CONFIGS:
        ARCH_CONFIGS[_name] = {**_config, "activation": "gelu"}
for _name in _QUICKGELU_TWINS:
    ARCH_CONFIGS[f"{_name}-quickgelu"] = {**_OPEN_CLIP_BASE[_name], "activation": "quick_gelu"}

# open_clip's own RN50/RN101/RN50x4/x16/x64 configs are GELU (their text towers); clipforge's
# names keep OpenAI's QuickGELU meaning, so open_clip's GELU ResNets are spelled `RN50-gelu` here
# and `clipforge.create_model*` (open_clip's API) builds them for `RN50` with random weights or a
# plain file. Every published ResNet tag is QuickGELU (the registry says so).
OPEN_CLIP_GELU_RESNETS: dict[str, str] = {name: f"{name}-gelu" for name in ("RN50", "RN101", "RN50x4", "RN50x16",
                                                                            "RN50x64")}
for _name, _gelu in OPEN_CLIP_GELU_RESNETS.items():
    ARCH_CONFIGS[_gelu] = {**ARCH_CONFIGS[_name], "activation": "gelu"}

# The families beyond OpenAI's shape (SigLIP, SigLIP 2, MetaCLIP 2 worldwide, DFN-378, CLIPA-v2), as data.
from clipforge.models.family_configs import (  # noqa: E402
    CLIPA_CONFIGS,
    DFN_CONFIGS,
    HF_TOWER_CONFIGS,
    SIGLIP_CONFIGS,
    TEST_FAMILY_CONFIGS,
    WORLDWIDE_CONFIGS,
)

FAMILY_MODELS: tuple[str, ...] = (*SIGLIP_CONFIGS, *WORLDWIDE_CONFIGS, *DFN_CONFIGS, *HF_TOWER_CONFIGS,
                                  *CLIPA_CONFIGS)
for _table in (SIGLIP_CONFIGS, WORLDWIDE_CONFIGS, DFN_CONFIGS, HF_TOWER_CONFIGS, CLIPA_CONFIGS, TEST_FAMILY_CONFIGS):
    ARCH_CONFIGS.update(_table)

# Other spellings of OpenAI's names (never of a different architecture).
ALIASES: dict[str, str] = {
    "ViT-L/14-336": "ViT-L/14@336px",
    "ViT-L/14-336px": "ViT-L/14@336px",
}


def canonical_name(name: str) -> str:
    """Map an alternative spelling to its registered name; unknown names pass through."""
    return ALIASES.get(name, name)


def register_config(name: str, config: ArchConfig) -> None:
    """Add an architecture at run time (e.g. one read from a checkpoint's config file)."""
    ARCH_CONFIGS[name] = dict(config)


def closest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate a mistyped model name most likely meant: the same name spelt with other case or separators
    (``cn-ViT-B16``, ``vit-b-32``), or a near spelling; None when nothing is close."""
    import difflib

    def squeeze(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    by_squeezed: dict[str, str] = {}
    for candidate in candidates:
        by_squeezed.setdefault(squeeze(candidate), candidate)
    if squeeze(name) in by_squeezed:
        return by_squeezed[squeeze(name)]
    close = difflib.get_close_matches(squeeze(name), list(by_squeezed), n=1, cutoff=0.8)
    return by_squeezed[close[0]] if close else None


def get_config(name: str) -> ArchConfig:
    """A fresh copy of a named config, so callers may edit it without touching the table."""
    key = canonical_name(name)
    if key not in ARCH_CONFIGS:
        known = ", ".join(sorted(ARCH_CONFIGS) + sorted(ALIASES))
        guess = closest_name(name, [*ARCH_CONFIGS, *ALIASES])
        hint = f" (did you mean {guess}?)" if guess else ""
        raise KeyError(f"unknown architecture {name!r}{hint}; known: {known}")
    return copy.deepcopy(ARCH_CONFIGS[key])


def list_configs(include_test: bool = False) -> list[str]:
    return [n for n in ARCH_CONFIGS if include_test or not n.startswith("test-")]


def activation_of(config: ArchConfig) -> str:
    """The config's MLP activation; configs without the key are OpenAI's (QuickGELU)."""
    return str(config.get("activation", DEFAULT_ACTIVATION))


def same_shape(a: ArchConfig, b: ArchConfig) -> bool:
    """Whether two configs build tensors of identical names and shapes (activation and head
    counts aside: those do not show in a state dict)."""
    keys = ("embed_dim", "image_resolution", "vision_width", "vision_patch_size", "context_length",
            "vocab_size", "transformer_width", "transformer_layers")
    layers = [tuple(c["vision_layers"]) if isinstance(c["vision_layers"], (list, tuple)) else c["vision_layers"]
              for c in (a, b)]
    return layers[0] == layers[1] and all(a.get(k) == b.get(k) for k in keys) and (
        mlp_width(a) == mlp_width(b))


def vision_heads(config: ArchConfig) -> int:
    """Attention heads of the image tower: width // head width (ResNets: of the attention pool)."""
    width, head_width = int(config["vision_width"]), int(config.get("vision_head_width", 64))
    if isinstance(config["vision_layers"], (list, tuple)):
        return width * 32 // head_width
    return width // head_width if width >= head_width else 1


def mlp_width(config: ArchConfig) -> int:
    """Hidden width of the ViT's MLP. Rounded, so that the ratio inferred from a checkpoint
    (6144 / 1408) and open_clip's rounded 4.3637 give the same 6144 (open_clip truncates; the
    two agree on every published config)."""
    return round(int(config["vision_width"]) * float(config.get("vision_mlp_ratio", 4.0)))
