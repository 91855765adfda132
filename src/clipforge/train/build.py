"""What a training run trains and evaluates: the model from its spec, the zero-shot eval sets.

`build_model` is where `clipforge train --model` meets the project's one model loader
(`clipforge.api.load_model`): a checkpoint file, `clipforge-tiny` or `ARCH:TAG` is loaded with
its architecture inferred from the tensors, exactly as `clipforge.load` does, and fine-tuned;
a bare architecture name (or an inline `model_config`) starts from random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from clipforge.train.config import TrainConfig


def build_model(config: TrainConfig) -> nn.Module:
    """The model to train: `pretrained` weights (any spec `clipforge.api.load_model` takes), else
    `model_config` (an inline architecture, random init), else `model`: an architecture name is
    randomly initialised (seeded by the trainer), anything else (a checkpoint file, `clipforge-tiny`,
    `ARCH:TAG`, `random:ARCH`) is loaded by the one loader and fine-tuned."""
    from clipforge.models import create_model_from_config

    if config.model_config is not None and config.pretrained is None:
        return create_model_from_config(dict(config.model_config))
    arch = _architecture(config.model)
    if config.pretrained is None:
        return create_model_from_config(arch) if arch is not None else _load(config.model)
    model = _load(config.pretrained)
    expected = create_model_from_config(dict(config.model_config)) if config.model_config is not None else None
    if expected is None and arch is not None:
        expected = create_model_from_config(arch)
    if expected is not None and {k: v.shape for k, v in model.state_dict().items()} != \
            {k: v.shape for k, v in expected.state_dict().items()}:
        raise ValueError(f"pretrained weights {config.pretrained!r} do not fit architecture "
                         f"{'model_config' if config.model_config is not None else repr(config.model)}")
    return model


def _architecture(spec: str) -> dict | None:
    """The config of an architecture name (not a file of that name), else None."""
    from clipforge.models import get_config

    if Path(spec).expanduser().exists():
        return None
    try:
        return get_config(spec)
    except KeyError:
        return None


def _load(spec: str) -> nn.Module:
    """Weights through the project's one model loader (architecture inferred from the tensors)."""
    from clipforge.api import load_model

    return load_model(spec, device="cpu").model.train()


def build_eval_hooks(config: TrainConfig, image_size: int) -> list[Any]:
    from clipforge.data import open_dataset
    from clipforge.image import build_preprocess
    from clipforge.train.data import strided_subset
    from clipforge.train.evalhook import ZeroShotEval
    from clipforge.zeroshot import get_templates

    hooks = []
    specs = [("val", config.val_dataset, config.val_root or config.root, config.val_split,
              config.val_templates or config.templates),
             ("forget", config.forget_dataset, config.forget_root, config.forget_split, config.forget_templates)]
    for name, dataset, root, split, templates in specs:
        if not dataset:
            continue
        if name == "val" and config.val_root is None and root is not None:
            root = _sibling_split(root, config.split, split)
        if root is None:
            raise ValueError(f"{name}_dataset={dataset!r} needs {name}_root")
        ds = open_dataset(dataset, root, split, transform=build_preprocess(image_size))
        if name == "val":  # every class keeps its share of a capped evaluation set
            ds = strided_subset(ds, config.val_max_samples)
        if config.in_memory:  # decode once; each epoch's evaluation then only preprocesses pixels
            from clipforge.data.inmemory import decode_all

            ds = decode_all(ds, progress=False)
        hooks.append(ZeroShotEval(name, ds, ds.classnames, get_templates(templates),
                                  max_samples=config.val_max_samples if name == "val" else None))
    return hooks


def _sibling_split(root: str, train_split: str, split: str) -> str:
    """`.../train_jpeg.zip` as the training root evaluates on `.../test_jpeg.zip` beside it."""
    path = Path(root)
    for pattern in ("{}_jpeg.zip", "{}.zip"):
        if path.is_file() and path.name == pattern.format(train_split):
            sibling = path.with_name(pattern.format(split))
            if sibling.is_file():
                return str(sibling)
    return root
