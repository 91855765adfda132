"""The references clipforge is measured against, built on the very same weights.

- Hugging Face `transformers.CLIPModel` (ViT models only), loaded from our weights through
  `clipforge.weights.to_hf`, so both compute the same function;
- OpenAI's reference `clip/model.py` (from the `clip-anytorch` package), imported by file path
  because that package's `__init__` imports torchvision, which has no CPU build here.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["HF_MISSING", "build_hf", "build_reference", "hf_available", "reference_module"]

HF_MISSING = "transformers is not installed"
"""Why a section's HF rows are missing (its `hf_skipped`); printed as "HF rows not measured: ..."."""


def hf_available() -> bool:
    """Whether transformers can be imported (False where it is not installed, or hidden as `sys.modules[...] = None`)."""
    try:
        return importlib.util.find_spec("transformers") is not None
    except ValueError:  # in sys.modules without a spec
        return "transformers" in sys.modules and sys.modules["transformers"] is not None


def build_hf(model: torch.nn.Module, config: dict) -> torch.nn.Module:
    """A `transformers.CLIPModel` holding `model`'s weights (fp32, eval, sdpa attention)."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.utils import logging as hf_logging

    from clipforge.weights import to_hf

    hf_logging.set_verbosity_error()
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    hf_state, hf_config = to_hf(state, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = CLIPModel(CLIPConfig(**hf_config))
    missing, unexpected = hf.load_state_dict(hf_state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"HF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return hf.eval()


def reference_module() -> ModuleType | None:
    """OpenAI's `clip/model.py` as a module, or None when clip-anytorch is not installed."""
    key = "_clip_reference_model"
    if key in sys.modules:
        return sys.modules[key]
    for entry in sys.path:
        path = Path(entry) / "clip" / "model.py"
        if path.is_file() and (Path(entry) / "clip" / "simple_tokenizer.py").is_file():
            spec = importlib.util.spec_from_file_location(key, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
            return module
    return None


def build_reference(model: torch.nn.Module, config: dict) -> torch.nn.Module | None:
    """OpenAI's reference CLIP with `model`'s weights (fp32, eval), or None when unavailable.

    Built from the constructor, not the reference's `build_model`, which rounds every weight
    to fp16 on the way in.
    """
    module = reference_module()
    if module is None:
        return None
    reference = module.CLIP(**config)
    reference.load_state_dict({k: v.detach().float() for k, v in model.state_dict().items()}, strict=True)
    return reference.float().eval()
