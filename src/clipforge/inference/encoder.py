"""The one encoder: pixels or tokens in, unit float32 vectors out, on the fast path.

Every command that embeds (``index add``, ``embed``, ``eval``, ``classify``, ``similarity``,
the server, the training evaluation hook) hands its batches to a `BatchEncoder`, so what
`benchmarks/` measures is what users run. It owns three choices:

- **normalise**: uint8 crops [N, R, R, 3] (what the file reader ships from its workers, 4x
  smaller than floats) are normalised here, in one vectorised step per batch; float batches
  [N, 3, R, R] that are already normalised pass through;
- **precision**: ``"fp32"`` runs the model's own fast forward (`enable_fast_forward`: packed
  oneDNN weights, parameters untouched, so a model being trained can be encoded too);
  ``"bf16"`` runs a `prepare`d bf16 model (weights cast once), offered only where the CPU
  multiplies bf16 natively (`Bf16UnsupportedError` otherwise) and on CUDA; ``None`` runs the
  model exactly as given (plain reference forward, e.g. under a caller's autocast);
- **batch**: everything runs under `torch.inference_mode` on the model's device; outputs are
  L2-normalised float32 on the CPU;
- **finite**: every batch of vectors, image or text, passes `check_finite` on its way out (`BatchEncoder._unit`):
  a model whose weights hold NaN or inf (a diverged training run) makes NaN vectors, which ranked first in every
  metric, printed ``nan%`` and were committed to a library that then called its own database damaged. It is
  refused, naming the model, before any caller writes or scores a vector: one `torch.isfinite(...).all()` per
  batch of outputs, not a scan of the weights at load (measured on one core: 20 us for 32 x 256, 0.04% of
  clipforge-tiny's batch; 35 us for 32 x 512, 0.001% of ViT-B/32's). The zero-shot logits
  and the evaluation's own feature loops use the same check.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from clipforge.errors import UserError
from clipforge.inference.precision import (
    Bf16UnsupportedError,
    enable_fast_forward,
    precision_of,
    prepare,
    resolve_precision,
)

__all__ = ["DIVERGED", "BatchEncoder", "NonFiniteModelError", "check_finite", "fast_model", "model_label", "remember_label",
           "unit_rows"]

_LABEL = "_cf_label"  # the spec a model was loaded from, in its __dict__ (a deep copy keeps it)
DIVERGED = "its weights hold NaN or inf, as a diverged training run leaves them"


class NonFiniteModelError(UserError, ValueError):
    """A model made NaN or infinite numbers (embeddings, or a logit scale): its weights hold NaN or inf. Raised
    before anything is written or scored, so its message can say so (no embedding written, no score given)."""

    http_status = 503  # the server's model is broken, not the request: nothing a client sends differently helps


def remember_label(model: nn.Module, label: str) -> None:
    """Record the spec `model` was loaded from (`clipforge.api.load_model` calls it), for messages about it."""
    model.__dict__[_LABEL] = str(label)


def model_label(model: nn.Module) -> str:
    """What a message calls `model`: the spec it was loaded from, else its class name (a caller's own module)."""
    return model.__dict__.get(_LABEL) or type(model).__name__


def check_finite(vectors: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """`vectors` when every value is finite; else `NonFiniteModelError` naming `model` (module docstring)."""
    if not bool(torch.isfinite(vectors).all()):
        raise NonFiniteModelError(f"model {model_label(model)} produced NaN or infinite embeddings ({DIVERGED}); "
                                  "no embedding was written")
    return vectors


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, in float32 (zero rows stay zero)."""
    features = features.float()
    return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def fast_model(model: nn.Module, precision: str | None = "fp32", *, copy_model: bool = False) -> nn.Module:
    """`model` ready for inference in `precision` (see module docstring).

    fp32 changes `model` only by giving it the inference forward passes (in place, harmless to
    training). bf16 casts weights, so it works on a copy when `copy_model` (the caller keeps its
    fp32 model) and in place otherwise; a model already prepared for bf16 is used as is.
    """
    if precision is None:
        return model
    precision = resolve_precision(precision)
    current = precision_of(model)
    if current == precision:
        return model
    if precision == "fp32":
        if current is not None:
            raise ValueError(f"model was prepared for {current}; pass precision={current!r} or an fp32 model")
        return enable_fast_forward(model)
    if current is not None:
        raise ValueError(f"model was prepared for {current}; bf16 needs a fresh fp32 model")
    # packed on each tower's first call: a command that embeds images never packs the text tower
    return prepare(copy.deepcopy(model) if copy_model else model, precision, pack=False)


class BatchEncoder:
    """Batches -> unit vectors with one model in one precision (see module docstring).

    `normalizer` turns uint8 crops into model input (default: CLIP's `Preprocess` for the
    model's resolution). The model must be on its device already.
    """

    def __init__(self, model: nn.Module, precision: str | None = "fp32", *, normalizer: Any = None,
                 copy_model: bool = False) -> None:
        self.precision = None if precision is None else resolve_precision(precision)
        self.model = fast_model(model, self.precision, copy_model=copy_model)
        if normalizer is None or not hasattr(normalizer, "normalize"):
            from clipforge.weights.preprocessing import preprocess_for

            normalizer = preprocess_for(model)
        self.normalizer = normalizer
        self.device = next(self.model.parameters()).device
        self.embed_dim = int(model.embed_dim)

    def image_input(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 crops [N, R, R, 3] (or one [R, R, 3]) or float [N, 3, R, R] -> model input on the device."""
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels)
        if pixels.dtype == torch.uint8:
            if self.device.type != "cpu":
                pixels = pixels.to(self.device)
            pixels = self.normalizer.normalize(pixels)
        if pixels.ndim == 3:
            pixels = pixels.unsqueeze(0)
        return pixels.to(self.device, dtype=torch.float32)

    def _unit(self, features: torch.Tensor) -> torch.Tensor:
        """The one way out of the encoder, images and texts alike: unit float32 rows on the CPU, all finite."""
        return check_finite(unit_rows(features).cpu(), self.model)

    def image_features(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Unit float32 [N, D] features on the CPU (a tensor, for callers that keep computing)."""
        with torch.inference_mode():
            return self._unit(self.model.encode_image(self.image_input(pixels)))

    def images(self, pixels: torch.Tensor | np.ndarray) -> np.ndarray:
        """Unit float32 [N, D] image vectors."""
        return self.image_features(pixels).numpy()

    def texts(self, tokens: torch.Tensor) -> np.ndarray:
        """Token ids [N, context] -> unit float32 [N, D] text vectors."""
        with torch.inference_mode():
            return self._unit(self.model.encode_text(tokens.to(self.device))).numpy()


def check_precision(precision: str) -> str:
    """Validate `precision` now (a CLI flag), raising `Bf16UnsupportedError` for bf16 on this CPU."""
    from clipforge.inference.cpu import bf16_supported, no_bf16_reason

    name = resolve_precision(precision)
    if name == "bf16" and not torch.cuda.is_available() and not bf16_supported():
        raise Bf16UnsupportedError(
            f"--precision bf16: {no_bf16_reason()}, so bf16 would be emulated and slower than fp32; use "
            "--precision fp32")
    return name
