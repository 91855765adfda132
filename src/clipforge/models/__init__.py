"""The CLIP networks and their architecture table."""

from clipforge.models.clip import (
    CLIP,
    config_from_state_dict,
    matching_architectures,
)
from clipforge.models.configs import (
    ACTIVATIONS,
    ALIASES,
    ARCH_CONFIGS,
    OPEN_CLIP_MODELS,
    OPENAI_MODELS,
    activation_of,
    canonical_name,
    get_config,
    list_configs,
    register_config,
)
from clipforge.models.factory import build_model, create_model_from_config
from clipforge.models.validate import ConfigError, validate_config

__all__ = [
    "ACTIVATIONS", "ALIASES", "ARCH_CONFIGS", "CLIP", "ConfigError", "OPENAI_MODELS", "OPEN_CLIP_MODELS",
    "activation_of", "build_model", "canonical_name", "config_from_state_dict", "create_model_from_config",
    "get_config", "list_configs", "matching_architectures", "register_config", "validate_config",
]
