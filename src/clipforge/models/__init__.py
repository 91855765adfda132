"""The CLIP networks and their architecture table.

Importing this package is cheap and imports no torch: the names load on first use (`clipforge._lazy`, as in
`clipforge.weights`). It imported `clip` and `factory` eagerly, so every ``import clipforge.models.configs``
(the table alone: `clipforge models`, name checks, `zeroshot.languages`) paid ~1 s of ``import torch``.
"""

from __future__ import annotations

from clipforge._lazy import lazy_exports

_LAZY: dict[str, str] = {
    # the networks (torch)
    "CLIP": "clip", "config_from_state_dict": "clip", "matching_architectures": "clip",
    "build_model": "factory", "create_model_from_config": "factory",
    # the architecture table (standard library only)
    "ACTIVATIONS": "configs", "ALIASES": "configs", "ARCH_CONFIGS": "configs", "OPEN_CLIP_MODELS": "configs",
    "OPENAI_MODELS": "configs", "activation_of": "configs", "canonical_name": "configs", "get_config": "configs",
    "list_configs": "configs", "register_config": "configs",
    # checking a config from a file (standard library only)
    "ConfigError": "validate", "validate_config": "validate",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
