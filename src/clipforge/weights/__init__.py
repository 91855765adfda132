"""Weights: registry of OpenAI checkpoints, verified downloads, safe loading, format conversion.

Importing this package is cheap and touches no network: the heavier modules (torch,
safetensors, the TorchScript reader) load on first use of a name that needs them.
"""

from __future__ import annotations

from clipforge._lazy import lazy_exports

# Imported eagerly (stdlib only) because the function `download` shares its name with the
# submodule `download`: binding it here keeps `clipforge.weights.download` the function no
# matter which of the two gets imported first.
from clipforge.weights.download import download as download
from clipforge.weights.download import download_pretrained as download_pretrained
from clipforge.weights.download import sha256_file as sha256_file

_EXPORTS: dict[str, str] = {
    # registry
    "OPENAI_WEIGHTS": "registry", "PretrainedWeights": "registry", "cache_dir": "registry",
    "cached_path": "registry", "get_pretrained": "registry", "is_cached": "registry",
    "list_pretrained": "registry", "sha256_from_url": "registry", "PRETRAINED": "registry",
    "list_pretrained_tags_by_model": "registry",
    # the zoo: registry weights and files to (config, preprocessing), never silently wrong
    "checkpoint_config": "zoo",
    # download
    "download": "download", "download_pretrained": "download", "sha256_file": "download",  # eager
    # errors
    "CheckpointFormatError": "errors", "DownloadError": "errors", "UnsafeCheckpointError": "errors",
    # loading
    "Checkpoint": "loading", "load_checkpoint": "loading", "load_state_dict": "loading",
    "torch_load_safely": "loading",
    "is_torchscript_archive": "torchscript", "read_torchscript_state_dict": "torchscript",
    # conversion and saving
    "from_hf": "hf", "to_hf": "hf", "save_hf": "hf", "hf_config_from_config": "hf",
    "save_safetensors": "save", "model_config": "save",
    # identity
    "fingerprint_state_dict": "fingerprint", "model_fingerprint": "fingerprint",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
