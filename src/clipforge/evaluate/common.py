"""Shared plumbing of the evaluation runners: model and dataset resolution, report skeleton."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipforge.evaluate.report import device_info, now_iso, versions

__all__ = ["EvalModel", "dataset_classnames", "default_templates", "open_eval_dataset", "report_header",
           "resolve_model"]

# Prompt sets the CLIP paper used per dataset; a folder of unknown classes gets the plain one.
_DEFAULT_TEMPLATES = {"imagenet": "imagenet", "cifar10": "cifar10", "cifar100": "cifar100", "cars": "cars",
                      "cub": "cub", "folder": "simple"}


@dataclass
class EvalModel:
    model: torch.nn.Module
    preprocess: Any
    name: str
    weights: str
    device: torch.device

    def describe(self, fingerprint: str | None = None) -> dict[str, Any]:
        if fingerprint is None:
            from clipforge.weights import model_fingerprint

            fingerprint = model_fingerprint(self.model)
        return {"name": self.name, "weights": self.weights, "fingerprint": fingerprint,
                "embed_dim": int(getattr(self.model, "embed_dim", 0)),
                "image_resolution": int(self.model.visual.input_resolution),
                "parameters": int(sum(p.numel() for p in self.model.parameters()))}


def resolve_model(model: str | torch.nn.Module, device: str | torch.device | None = None,
                  preprocess: Any = None, name: str | None = None) -> EvalModel:
    """Accept a `--model` string (see `clipforge.resolve`) or an in-memory model."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(model, str):
        from clipforge.resolve import load_model

        loaded = load_model(model, device=device)
        return EvalModel(loaded.model.eval(), preprocess or loaded.preprocess, name or loaded.name,
                         loaded.weights, device)
    if preprocess is None:
        from clipforge.image import build_preprocess

        preprocess = build_preprocess(int(model.visual.input_resolution))
    return EvalModel(model.to(device).eval(), preprocess, name or type(model).__name__, "in-memory model", device)


def open_eval_dataset(dataset: str | Any, root: str | Path | None, split: str | None, transform: Any) -> Any:
    """A `LabelledDataset` from a name + root, or the given dataset object unchanged."""
    if not isinstance(dataset, str):
        return dataset
    if root is None:
        raise ValueError(f"--root is required for dataset {dataset!r}")
    from clipforge.data import open_dataset

    return open_dataset(dataset, root, split, transform)


def dataset_classnames(name: str, dataset: Any) -> list[str]:
    """Names to put in prompts, in label order: OpenAI's edited names where they exist and
    the class count matches; the dataset's own names (underscores as spaces) otherwise."""
    from clipforge.zeroshot import clean_cub_classname, get_classnames

    own = [str(c) for c in dataset.classnames]
    key = name.lower()
    if key == "cub":
        return [clean_cub_classname(c) for c in own]
    if key in {"imagenet", "cifar10", "cifar100", "cars"}:
        published = get_classnames(key)
        if len(published) == len(own):
            return published
    return [c.replace("_", " ").strip() for c in own]


def default_templates(name: str) -> str:
    return _DEFAULT_TEMPLATES.get(name.lower(), "simple")


def report_header(task: str, device: torch.device) -> dict[str, Any]:
    return {"task": task, "date": now_iso(), "command": " ".join(sys.argv), "versions": versions(),
            "device": device_info(device)}
