"""Architecture configs as data.

Each config holds exactly the arguments of the `CLIP` constructor, named as in OpenAI's
reference so a config can be compared field by field with what `build_model` infers from a
checkpoint's tensor shapes. open_clip spellings (``ViT-B-32``) are aliases, so users of
either project can keep their model names.
"""

from __future__ import annotations

import copy
from typing import Any

ArchConfig = dict[str, Any]



def _text(width: int, heads: int, layers: int = 12) -> dict[str, int]:
    return {"context_length": 77, "vocab_size": 49408, "transformer_width": width,
            "transformer_heads": heads, "transformer_layers": layers}


ARCH_CONFIGS: dict[str, ArchConfig] = {
    "RN50": {"embed_dim": 1024, "image_resolution": 224, "vision_layers": (3, 4, 6, 3), "vision_width": 64,
             "vision_patch_size": None, **_text(512, 8)},
    "RN101": {"embed_dim": 512, "image_resolution": 224, "vision_layers": (3, 4, 23, 3), "vision_width": 64,
              "vision_patch_size": None, **_text(512, 8)},
    "RN50x4": {"embed_dim": 640, "image_resolution": 288, "vision_layers": (4, 6, 10, 6), "vision_width": 80,
               "vision_patch_size": None, **_text(640, 10)},
    "RN50x16": {"embed_dim": 768, "image_resolution": 384, "vision_layers": (6, 8, 18, 8), "vision_width": 96,
                "vision_patch_size": None, **_text(768, 12)},
    "RN50x64": {"embed_dim": 1024, "image_resolution": 448, "vision_layers": (3, 15, 36, 10), "vision_width": 128,
                "vision_patch_size": None, **_text(1024, 16)},
    "ViT-B/32": {"embed_dim": 512, "image_resolution": 224, "vision_layers": 12, "vision_width": 768,
                 "vision_patch_size": 32, **_text(512, 8)},
    "ViT-B/16": {"embed_dim": 512, "image_resolution": 224, "vision_layers": 12, "vision_width": 768,
                 "vision_patch_size": 16, **_text(512, 8)},
    "ViT-L/14": {"embed_dim": 768, "image_resolution": 224, "vision_layers": 24, "vision_width": 1024,
                 "vision_patch_size": 14, **_text(768, 12)},
    "ViT-L/14@336px": {"embed_dim": 768, "image_resolution": 336, "vision_layers": 24, "vision_width": 1024,
                       "vision_patch_size": 14, **_text(768, 12)},
    # Small configs: fast enough for unit tests, same code paths as the real ones.
    "test-vit-tiny": {"embed_dim": 32, "image_resolution": 32, "vision_layers": 2, "vision_width": 128,
                      "vision_patch_size": 8, "context_length": 77, "vocab_size": 49408,
                      "transformer_width": 128, "transformer_heads": 2, "transformer_layers": 2},
    "test-rn-tiny": {"embed_dim": 32, "image_resolution": 64, "vision_layers": (1, 1, 1, 1), "vision_width": 16,
                     "vision_patch_size": None, "context_length": 77, "vocab_size": 49408,
                     "transformer_width": 128, "transformer_heads": 2, "transformer_layers": 2},
}

OPENAI_MODELS: tuple[str, ...] = (
    "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px",
)

ALIASES: dict[str, str] = {
    "ViT-B-32": "ViT-B/32",
    "ViT-B-16": "ViT-B/16",
    "ViT-L-14": "ViT-L/14",
    "ViT-L-14-336": "ViT-L/14@336px",
    "ViT-L/14-336": "ViT-L/14@336px",
}


def canonical_name(name: str) -> str:
    """Map an alias (open_clip spelling) to the OpenAI name; unknown names pass through."""
    return ALIASES.get(name, name)


def register_config(name: str, config: ArchConfig) -> None:
    """Add an architecture at run time (e.g. one read from a checkpoint's config file)."""
    ARCH_CONFIGS[name] = dict(config)


def get_config(name: str) -> ArchConfig:
    """A fresh copy of a named config, so callers may edit it without touching the table."""
    key = canonical_name(name)
    if key not in ARCH_CONFIGS:
        known = ", ".join(sorted(ARCH_CONFIGS) + sorted(ALIASES))
        raise KeyError(f"unknown architecture {name!r}; known: {known}")
    return copy.deepcopy(ARCH_CONFIGS[key])


def list_configs(include_test: bool = False) -> list[str]:
    return [n for n in ARCH_CONFIGS if include_test or not n.startswith("test-")]
