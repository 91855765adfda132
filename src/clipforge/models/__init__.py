"""The CLIP networks and their architecture table."""

from clipforge.models.clip import CLIP, build_model, config_from_state_dict, create_model_from_config
from clipforge.models.configs import (
    ALIASES,
    ARCH_CONFIGS,
    OPENAI_MODELS,
    canonical_name,
    get_config,
    list_configs,
    register_config,
)

__all__ = [
    "ALIASES", "ARCH_CONFIGS", "CLIP", "OPENAI_MODELS", "build_model", "canonical_name",
    "config_from_state_dict", "create_model_from_config", "get_config", "list_configs", "register_config",
]
