"""The model side of a library: one object that turns images and texts into unit vectors.

A library stores vectors of exactly one model, identified by the fingerprint of its weights
(not its name: two checkpoints both called "ViT-B/32" can differ). `resolve_encoder` accepts
whatever a caller has - a name or checkpoint path for `clipforge.load`, a loaded CLIP, a
`(model, preprocess)` pair, or an `Encoder` - so the CLI, the Python API and a web server
all end up with the same thing. Zero-shot class embeddings are made here too (and only
here), through `clipforge.zeroshot.ZeroShotClassifier`.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Encoder", "default_model_name", "model_fingerprint", "resolve_encoder"]

log = logging.getLogger(__name__)

def model_fingerprint(model: torch.nn.Module) -> str:
    """Stable hex id of the weights (`clipforge.weights.model_fingerprint`): what a library is keyed by."""
    from clipforge.weights import model_fingerprint as core_fingerprint

    return str(core_fingerprint(model))


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32, copy=False)


class Encoder:
    """A CLIP model plus its preprocessing and identity; every output vector is L2-normalised."""

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Any], torch.Tensor] | None = None,
                 name: str | None = None, device: str | torch.device | None = None) -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        if preprocess is None:
            from clipforge.image import build_preprocess

            preprocess = build_preprocess(int(model.visual.input_resolution))
        self.preprocess = preprocess
        self.name = name
        self.fingerprint = model_fingerprint(model)
        self.embed_dim = int(model.embed_dim)
        self.context_length = int(getattr(model, "context_length", 77))
        self._classifiers: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.name or type(self.model).__name__} (fingerprint {self.fingerprint[:12]})"

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """[N, 3, R, R] preprocessed batch (or uint8 [N, R, R, 3] crops) -> [N, D] unit float32 vectors."""
        if pixels.dtype == torch.uint8:
            pixels = self.preprocess.normalize(pixels)
        if pixels.ndim == 3:
            pixels = pixels.unsqueeze(0)
        return _normalise(self.model.encode_image(pixels.to(self.device, dtype=torch.float32)))

    def encode_images(self, images: Sequence[Any], max_pixels: int | None = None) -> np.ndarray:
        """PIL images, paths or raw bytes -> [N, D] unit vectors (decoding errors propagate)."""
        from clipforge.image import load_image

        tensors = []
        for item in images:
            if not hasattr(item, "convert"):  # not already a PIL image
                item = load_image(item, max_pixels=max_pixels) if max_pixels else load_image(item)
            tensors.append(self.preprocess(item))
        return self.encode_pixels(torch.stack(tensors))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        from clipforge.text import tokenize

        tokens = tokenize(list(texts), context_length=self.context_length, truncate=True)
        return _normalise(self.model.encode_text(tokens.to(self.device)))

    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    def class_embeddings(self, labels: Sequence[str], templates: str | Sequence[str] = "imagenet",
                         cache_dir: str | Path | None = None, progress: bool = False) -> np.ndarray:
        """[L, D] zero-shot class vectors (prompt ensemble), via ZeroShotClassifier, memoised."""
        key = (tuple(labels), templates if isinstance(templates, str) else tuple(templates))
        with self._lock:
            classifier = self._classifiers.get(key)
            if classifier is None:
                from clipforge.zeroshot import ZeroShotClassifier

                classifier = ZeroShotClassifier(self.model, list(labels), templates, preprocess=self.preprocess,
                                                device=self.device, cache_dir=cache_dir,
                                                use_cache=cache_dir is not None, progress=progress)
                self._classifiers = {key: classifier}  # keep only the latest label set
        return classifier.class_embeddings.detach().float().cpu().numpy()


def default_model_name() -> str:
    """ViT-B/32 when its weights are cached, else the shipped offline model (with a notice)."""
    from clipforge.resolve import default_model

    name, notice = default_model()
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    return name


def _load_named(name: str, device: str | torch.device | None) -> tuple[torch.nn.Module, Any]:
    from clipforge.resolve import load_model

    loaded = load_model(name, device=device or "cpu")
    return loaded.model, loaded.preprocess


def resolve_encoder(model: Any, preprocess: Any = None, device: str | torch.device | None = None,
                    name: str | None = None) -> Encoder:
    """Turn any accepted `model` argument into an `Encoder` (see module docstring)."""
    if isinstance(model, Encoder):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        model, preprocess = model
    if isinstance(model, (str, Path)):
        name = str(model)
        model, loaded_preprocess = _load_named(name, device)
        preprocess = preprocess or loaded_preprocess
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "encode_image"):
        raise TypeError(f"model must be a name, a checkpoint path, a CLIP module, (model, preprocess) or an "
                        f"Encoder; got {type(model).__name__}")
    return Encoder(model, preprocess, name=name, device=device)
