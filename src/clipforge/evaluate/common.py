"""Shared plumbing of the evaluation runners: model and dataset resolution, report skeleton."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipforge.evaluate.report import device_info, now_iso, paper_metric, versions

__all__ = ["EvalModel", "dataset_classnames", "default_split", "default_templates", "open_eval_dataset", "paper_metric",
           "report_header", "resolve_model"]

# Prompt sets the CLIP paper used per dataset; a folder of unknown classes gets the plain one.
_DEFAULT_TEMPLATES = {"imagenet": "imagenet", "cifar10": "cifar10", "cifar100": "cifar100", "cars": "cars",
                      "cub": "cub", "folder": "simple"}


@dataclass
class EvalModel:
    """The model an evaluation runs: on the fast path in `precision`, with its decode setting.

    `draft_decode` says whether big JPEGs were decoded at a reduced DCT scale before the exact
    resize (embedding cosine >= 0.99 to the exact decode); reports carry it so a number can be
    matched to a reference that decodes every pixel (``exact_decode=True``).
    """

    model: torch.nn.Module
    preprocess: Any
    name: str
    weights: str
    device: torch.device
    precision: str = "fp32"
    fingerprint: str | None = None

    @property
    def draft_decode(self) -> bool:
        return bool(getattr(self.preprocess, "draft", False))

    def describe(self, fingerprint: str | None = None) -> dict[str, Any]:
        fingerprint = fingerprint or self.fingerprint
        if fingerprint is None:
            from clipforge.weights import model_fingerprint

            fingerprint = self.fingerprint = str(model_fingerprint(self.model))
        return {"name": self.name, "weights": self.weights, "fingerprint": fingerprint,
                "embed_dim": int(getattr(self.model, "embed_dim", 0)),
                "image_resolution": int(self.model.visual.input_resolution),
                "parameters": int(sum(p.numel() for p in self.model.parameters())),
                "precision": self.precision, "draft_decode": self.draft_decode}


def resolve_model(model: str | torch.nn.Module, device: str | torch.device | None = None,
                  preprocess: Any = None, name: str | None = None, *, precision: str = "fp32",
                  exact_decode: bool = False) -> EvalModel:
    """Accept a `--model` string (through `clipforge.api.load_model`, the one loader) or an
    in-memory model, and put it on the fast path in `precision` ("fp32" or "bf16"; an in-memory
    model is copied before a bf16 cast). `exact_decode=True` decodes every JPEG pixel (no draft)
    when no `preprocess` is given. The fingerprint is taken from the fp32 weights."""
    from clipforge.api import load_model, resolve_device
    from clipforge.inference.encoder import fast_model
    from clipforge.inference.precision import resolve_precision

    if isinstance(model, EvalModel):  # resolved once by the caller (the suite), reused as is
        if preprocess is not None:
            model.preprocess = preprocess
        return model
    precision = resolve_precision(precision)
    if isinstance(model, str):
        loaded = load_model(model, device=device)
        net, weights, label, owned = loaded.model, loaded.weights, name or loaded.name, True
    else:
        net = model.to(resolve_device(device)).eval()
        weights, label, owned = "in-memory model", name or type(model).__name__, False
    fingerprint = None
    if precision != "fp32":
        from clipforge.weights import model_fingerprint

        fingerprint = str(model_fingerprint(net))
    if preprocess is None:  # the weights' own mean/std/resize mode when they record one (registry, saved files)
        from clipforge.weights.preprocessing import build_weights_preprocess

        preprocess = build_weights_preprocess(int(net.visual.input_resolution), getattr(net, "preprocess_cfg", None),
                                              draft=not exact_decode)
    net = fast_model(net, precision, copy_model=not owned)
    target = next(net.parameters()).device
    return EvalModel(net, preprocess, label, weights, target, precision, fingerprint)


def default_split(dataset: str | Any, split: str | None = None) -> str | None:
    """`split`, or when it is None the split a dataset is evaluated on: the catalogue's test split (``val`` for
    imagenet, clevr_counts and kinetics700's ``validate``; ``test`` for the rest), ``test`` for a name the catalogue
    does not list (``folder``). A dataset object keeps None (it is its own split).

    The one place this default lives: ``clipforge eval zeroshot/linear-probe`` without ``--split``, and
    `evaluate_zeroshot` / `evaluate_linear_probe` called from Python without a split, use it (the Python calls
    passed None down: "unsupported operand type(s) for /: 'PosixPath' and 'NoneType'" for CIFAR, "CUB split must
    be one of [...], got None"). A split the dataset lacks is the adapter's own one line, as before.
    """
    if split is not None or not isinstance(dataset, str):
        return split
    from clipforge.data.catalog import canonical, dataset_info

    return dataset_info(dataset).test_split if canonical(dataset) is not None else "test"


def open_eval_dataset(dataset: str | Any, root: str | Path | None, split: str | None, transform: Any) -> Any:
    """A `LabelledDataset` from a name + root (`split` None: `default_split`), or the given dataset object
    unchanged."""
    if not isinstance(dataset, str):
        return dataset
    split = default_split(dataset, split)
    if root is None:
        raise ValueError(f"--root is required for dataset {dataset!r}")
    from clipforge.data import open_dataset
    from clipforge.evaluate.roots import check_root

    check_root(dataset, root)  # one line naming the layout, not the adapter's "missing folder" and its layout

    return open_dataset(dataset, root, split, transform)


def _norm_name(name: str) -> str:
    """Spelling-insensitive key: "Allen's Hummingbird", "allens_hummingbird" and "Allens Hummingbird" agree."""
    return "".join(c for c in name.lower() if c.isalnum())


def _first(name: Any) -> str:
    return str(name[0]) if isinstance(name, (list, tuple)) else str(name)  # FER2013's synonym lists


def dataset_classnames(name: str, dataset: Any) -> list[str]:
    """Names to put in prompts, in label order.

    OpenAI's edited names where they exist: matched to the dataset's own names by spelling when
    every name matches (so a published list in another order is reordered), by position when the
    class counts agree (the label order is the published one: catalogue-checked); a catalogue list
    where the published order differs from the labels (EuroSAT, Pets, CLEVR); the dataset's own
    names (underscores as spaces) otherwise."""
    from clipforge.data.catalog import canonical, dataset_info
    from clipforge.zeroshot import clean_cub_classname, get_classnames

    own = [str(c) for c in dataset.classnames]
    key = name.lower()
    if key == "cub":
        return [clean_cub_classname(c) for c in own]
    published_key = {"imagenet": "imagenet", "cifar10": "cifar10", "cifar100": "cifar100", "cars": "cars"}.get(key)
    info = dataset_info(name) if canonical(name) else None
    if info is not None and info.prompt_names is not None and len(info.prompt_names) == len(own):
        return list(info.prompt_names)
    if published_key is None and info is not None and info.prompts and info.prompts != "imagenet":
        published_key = info.prompts
    if published_key is not None:
        try:
            published = [_first(n) for n in get_classnames(published_key)]
        except (KeyError, ValueError):
            published = []
        by_name = {_norm_name(n): n for n in published}
        if own and all(_norm_name(c) in by_name for c in own):
            return [by_name[_norm_name(c)] for c in own]
        if len(published) == len(own):
            return published
    if getattr(dataset, "prompt_classnames", None):  # subsets of ImageNet carry OpenAI's names for theirs
        return list(dataset.prompt_classnames)
    return [c.replace("_", " ").strip() for c in own]


def default_templates(name: str) -> str:
    """The dataset's OpenAI prompt set (catalogue), the CLIP paper's set for the old five, else simple."""
    if name.lower() in _DEFAULT_TEMPLATES:
        return _DEFAULT_TEMPLATES[name.lower()]
    from clipforge.data.catalog import canonical, dataset_info

    if canonical(name):
        return dataset_info(name).prompts or "simple"
    return "simple"


def report_header(task: str, device: torch.device) -> dict[str, Any]:
    return {"task": task, "date": now_iso(), "command": " ".join(sys.argv), "versions": versions(),
            "device": device_info(device)}
