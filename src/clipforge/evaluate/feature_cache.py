"""Dataset features cached on disk, so probes and sweeps never re-run the image tower.

A linear probe's cost is almost all feature extraction; the fits afterwards take seconds.
Features are keyed by the weights fingerprint, the dataset (name, resolved root, split), the
exact subset of indices and the input resolution, and written atomically as safetensors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from clipforge.atomic import atomic_path
from clipforge.evaluate.features import FeatureResult, extract_image_features
from clipforge.zeroshot.embeddings import default_cache_dir

__all__ = ["cached_features", "default_feature_cache_dir", "feature_cache_key"]

_VERSION = 1


def default_feature_cache_dir() -> Path:
    return default_cache_dir().parent / "features"


def feature_cache_key(fingerprint: str, dataset: Any, split: str, indices: Sequence[int] | None,
                      resolution: int, model_class: str = "") -> str:
    payload = json.dumps({
        "version": _VERSION, "fingerprint": fingerprint, "model_class": model_class,
        "dataset": str(getattr(dataset, "name", "")),
        "root": str(Path(getattr(dataset, "root", "")).resolve()), "split": split,
        "num_samples": len(dataset), "indices": None if indices is None else list(indices),
        "resolution": int(resolution),
    }, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _load(path: Path) -> FeatureResult | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in ("features", "labels", "indices")}
        return FeatureResult(tensors["features"], tensors["labels"], tensors["indices"],
                             json.loads(meta.get("bad", "{}")), json.loads(meta.get("timing", "{}")))
    except Exception:  # a damaged cache entry is recomputed, never trusted
        return None


def cached_features(model: torch.nn.Module, dataset: Any, *, fingerprint: str, split: str,
                    indices: Sequence[int] | None, cache_dir: str | Path | None, batch_size: int, workers: int,
                    device: torch.device, progress: bool = True, use_cache: bool = True) -> tuple[FeatureResult, bool]:
    """Features of `dataset` (subset `indices`), from the cache when present; returns (result, hit)."""
    from safetensors.torch import save_file

    cache_dir = Path(cache_dir) if cache_dir is not None else default_feature_cache_dir()
    key = feature_cache_key(fingerprint, dataset, split, indices, int(model.visual.input_resolution),
                            f"{type(model).__module__}.{type(model).__qualname__}")
    path = cache_dir / f"{key}.safetensors"
    if use_cache and path.is_file():
        hit = _load(path)
        if hit is not None:
            return hit, True
    result = extract_image_features(model, dataset, batch_size=batch_size, workers=workers, device=device,
                                    indices=indices, progress=progress, desc=f"features {split}")
    if use_cache:
        try:
            with atomic_path(path) as tmp:
                save_file({"features": result.features.contiguous(), "labels": result.labels.contiguous(),
                           "indices": result.indices.contiguous()}, str(tmp),
                          metadata={"bad": json.dumps(result.bad), "timing": json.dumps(result.timing),
                                    "fingerprint": fingerprint, "split": split})
        except OSError as exc:
            import logging

            logging.getLogger(__name__).warning("could not write feature cache %s: %s", path, exc)
    return result, False

