"""Turn a `--model` argument into a model: a registry name, a checkpoint file, or a config.

Command-line tools accept one string for the model. Real weights come from `clipforge.load`
(registry names such as ``ViT-B/32``, shipped models, checkpoint paths). Configs that have
no published weights (``test-vit-tiny``) and ``random:<config>`` build a randomly
initialised model (seed 0): what tests and smoke runs want, and labelled "random" in
reports so nobody mistakes the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["LoadedModel", "default_model", "load_model"]

PREFERRED_DEFAULT = "ViT-B/32"
OFFLINE_DEFAULT = "clipforge-tiny"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    preprocess: Any
    name: str
    weights: str  # "random (seed 0)", a checkpoint path, or the registry name


def _random_model(config_name: str, seed: int) -> torch.nn.Module:
    from clipforge.models import create_model_from_config, get_config

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return create_model_from_config(get_config(config_name)).eval()
    finally:
        torch.random.set_rng_state(generator_state)


def _default_preprocess(model: torch.nn.Module) -> Any:
    from clipforge.image import build_preprocess

    return build_preprocess(int(model.visual.input_resolution))


def load_model(spec: str, device: str | torch.device | None = None, seed: int = 0) -> LoadedModel:
    """Resolve `spec` and return the model in eval mode on `device` with its preprocess."""
    import clipforge
    from clipforge.models import ARCH_CONFIGS, OPENAI_MODELS, canonical_name

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    random_config = spec[len("random:"):] if spec.startswith("random:") else None
    if (random_config is None and canonical_name(spec) in ARCH_CONFIGS
            and canonical_name(spec) not in OPENAI_MODELS and not Path(spec).expanduser().exists()):
        random_config = spec  # a config with no weights of its own, e.g. test-vit-tiny
    if random_config is not None:
        model = _random_model(random_config, seed).to(device)
        return LoadedModel(model, _default_preprocess(model), random_config, f"random (seed {seed})")

    path = Path(spec).expanduser()
    try:
        model, preprocess = clipforge.load(str(path) if path.exists() else spec, device=device)
    except FileNotFoundError as exc:
        known = ", ".join(n for n in ARCH_CONFIGS if n.startswith("test-"))
        raise FileNotFoundError(f"{exc}. For random weights pass a test config ({known}) "
                                "or random:<config>, e.g. random:ViT-B/32.") from exc
    if path.exists():
        return LoadedModel(model.eval(), preprocess, path.name, str(path.resolve()))
    return LoadedModel(model.eval(), preprocess, spec, spec)


def default_model() -> tuple[str, str | None]:
    """ViT-B/32 when its checkpoint is in the download cache, else the shipped offline model.

    Returns (name, notice); the notice says why the fallback was taken (None when it was not),
    so a first run without network classifies instead of failing on a download.
    """
    import clipforge
    from clipforge.weights import is_cached

    if is_cached(PREFERRED_DEFAULT) or OFFLINE_DEFAULT not in clipforge.available_models():
        return PREFERRED_DEFAULT, None
    return OFFLINE_DEFAULT, (f"{PREFERRED_DEFAULT} weights are not downloaded; using the small shipped model "
                             f"{OFFLINE_DEFAULT!r} (pass --model to choose)")
