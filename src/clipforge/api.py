"""The public entry points, shaped like openai/CLIP so migrating is a one-line import change.

`load` accepts what users actually have: a registry name (downloaded and verified), the
shipped offline model, or a path to a checkpoint in any supported format.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from clipforge.image import Preprocess, build_preprocess
from clipforge.models import (
    CLIP,
    OPENAI_MODELS,
    build_model,
    canonical_name,
    create_model_from_config,
    get_config,
)

SHIPPED_MODELS_DIR = Path(__file__).resolve().parent / "pretrained"


def _shipped_models() -> dict[str, Path]:
    """Models that live inside the package (no network needed), by name."""
    if not SHIPPED_MODELS_DIR.is_dir():
        return {}
    return {p.name: p / "model.safetensors" for p in sorted(SHIPPED_MODELS_DIR.iterdir())
            if (p / "model.safetensors").is_file()}


def available_models() -> list[str]:
    """Names `load` resolves without a path: the nine OpenAI checkpoints and the shipped ones."""
    return list(OPENAI_MODELS) + list(_shipped_models())


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _checkpoint_path(name_or_path: str | Path, download_root: str | Path | None) -> Path:
    from clipforge.weights import download_pretrained

    shipped = _shipped_models()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    if canonical_name(str(name_or_path)) in OPENAI_MODELS:
        return download_pretrained(canonical_name(str(name_or_path)), root=download_root)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    raise FileNotFoundError(
        f"model {str(name_or_path)!r} is neither a known name ({', '.join(available_models())}) "
        f"nor an existing checkpoint file or directory")


def load_model(name_or_path: str | Path, download_root: str | Path | None = None) -> CLIP:
    """A CLIP with the weights of a name or file, fp32, eval mode, on the CPU."""
    from clipforge.weights import load_checkpoint

    state_dict, config = load_checkpoint(_checkpoint_path(name_or_path, download_root))
    return build_model(state_dict, config=config)


def load(name_or_path: str | Path, device: str | torch.device | None = None, jit: bool = False,
         download_root: str | Path | None = None) -> tuple[CLIP, Preprocess]:
    """Same signature and return value as `clip.load`: `(model, preprocess)`, model in eval mode.

    Unlike the original, weights stay fp32 on every device (use autocast for lower precision)
    and TorchScript is never executed: `jit=True` is accepted for compatibility and returns
    the eager model, which computes the same numbers.
    """
    if jit:
        warnings.warn("clipforge never executes TorchScript; jit=True returns the eager model",
                      stacklevel=2)
    model = load_model(name_or_path, download_root=download_root)
    model = model.to(device or _default_device()).eval()
    return model, build_preprocess(model.image_size)


def create_model(name: str, pretrained: str | Path | None = None,
                 download_root: str | Path | None = None) -> CLIP:
    """An architecture by name, randomly initialised or with weights.

    `pretrained` is None (random), "openai" (the registry checkpoint for this name), or a path.
    The weights must fit the named architecture: a mismatch is an error, not a silent rebuild.
    """
    config = get_config(name)
    if pretrained is None:
        return create_model_from_config(config)
    source = canonical_name(name) if pretrained == "openai" else pretrained
    model = load_model(source, download_root=download_root)
    inferred = {k: getattr(model, k, None) for k in ("context_length", "vocab_size", "embed_dim")}
    expected = {k: config[k] for k in ("context_length", "vocab_size", "embed_dim")}
    if inferred != expected or model.image_size != config["image_resolution"]:
        raise ValueError(f"weights {pretrained!s} do not fit architecture {name!r}")
    return model
