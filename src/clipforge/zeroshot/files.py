"""Classify image files with free-form labels: the library side of `clipforge classify`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from clipforge.zeroshot.classifier import ZeroShotClassifier

__all__ = ["classify_files", "parse_labels", "read_labels_file"]


def parse_labels(text: str) -> list[str]:
    """``"cat, dog,plane"`` -> ``["cat", "dog", "plane"]``; empty items are an error, not ignored."""
    labels = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not label for label in labels):
        raise ValueError(f"--labels {text!r}: expected comma-separated non-empty class names, e.g. 'cat,dog'")
    return labels


def read_labels_file(path: str | Path) -> list[str]:
    """One label per line (blank lines and ``#`` comments skipped) or a JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ValueError(f"{path}: expected a JSON list of label strings")
        labels = data
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not labels:
        raise ValueError(f"{path}: no labels found (expected one label per line)")
    return labels


def classify_files(paths: Sequence[str | Path], labels: Sequence[str], model: str | torch.nn.Module,
                   templates: str | Sequence[str] = "simple", top_k: int = 5,
                   plot: str | Path | None = None, device: str | None = None, preprocess: Any = None,
                   cache_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Top-k labels for each image file.

    Unreadable images do not stop the run: they are listed under ``errors`` with the
    reason. Returns ``{"model", "templates", "results": [{image, labels, probabilities}], "errors"}``.
    """
    from clipforge.image import ImageLoadError, load_image
    from clipforge.resolve import load_model

    model_name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        loaded = load_model(model, device=device)
        model, preprocess = loaded.model, preprocess or loaded.preprocess
    classifier = ZeroShotClassifier(model, labels, templates, preprocess=preprocess, device=device,
                                    cache_dir=cache_dir, progress=progress)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    shown: list[Any] = []
    for path in tqdm(paths, unit="image", desc="classify", disable=not progress or len(paths) < 2):
        try:
            image = load_image(path)
        except (ImageLoadError, OSError) as exc:
            errors.append({"image": str(path), "error": str(exc)})
            continue
        names, probs = classifier.predict([image], top_k=top_k)
        results.append({"image": str(path), "labels": names[0], "probabilities": [round(float(p), 6) for p in probs[0]]})
        if plot is not None:
            image.thumbnail((256, 256))
            shown.append(image)
    out: dict[str, Any] = {"model": model_name, "templates": classifier.templates, "results": results,
                           "errors": errors}
    if plot is not None and results:
        from clipforge.zeroshot.plot import plot_predictions

        out["plot"] = str(plot_predictions(shown, [r["labels"] for r in results],
                                           [r["probabilities"] for r in results], plot,
                                           titles=[Path(r["image"]).name for r in results]))
    return out
