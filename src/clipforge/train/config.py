"""Training configuration as data: a dataclass, JSON recipes, and `key=value` overrides.

A recipe (`recipes/<name>.json`) is a partial config; the command line may name a recipe,
then override single fields (`--set lr=1e-5 --set lock_image=true`). Values are parsed as JSON
where possible, so numbers, booleans, lists and null work, and fall back to plain strings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    # model
    model: str = "ViT-B/32"                 # architecture config name (clipforge.models)
    pretrained: str | None = None           # weights to start from (path or name for clipforge.weights)
    # data: "labelled" (a registry dataset turned into captions), "csv", "folder", "webdataset"
    data: str = "labelled"
    dataset: str | None = None              # registry name for data=labelled (cub, cars, cifar10, ...)
    root: str | None = None                 # dataset root / csv file / caption folder / shard pattern
    split: str = "train"
    templates: list[str] = field(default_factory=lambda: ["A photo of a {}."])
    random_template: bool = False
    samples_per_epoch: int | None = None    # for resampled WebDataset streams
    crop_scale: list[float] = field(default_factory=lambda: [0.9, 1.0])
    hflip: bool = False
    workers: int = 0
    # optimisation
    batch_size: int = 64                    # global contrastive batch per rank
    micro_batch: int | None = None          # GradCache chunk size (None: whole batch at once)
    epochs: int = 1
    steps: int | None = None                # stop after this many optimiser steps (overrides epochs)
    lr: float = 1e-5
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 0
    precision: str = "amp"                  # amp | bf16 | fp16 | fp32
    grad_checkpointing: bool = False
    lock_image: bool = False
    lock_text: bool = False
    projections_only: bool = False
    local_loss: bool = False
    gather_with_grad: bool = True
    # evaluation, logging, checkpoints
    val_dataset: str | None = None          # zero-shot eval each epoch (registry name)
    val_root: str | None = None
    val_split: str = "test"
    val_templates: str | list[str] | None = None  # default: the training templates
    val_max_samples: int | None = None
    forget_dataset: str | None = None       # second zero-shot set, to watch forgetting
    forget_root: str | None = None
    forget_split: str = "test"
    forget_templates: str | list[str] | None = "imagenet"
    out_dir: str = "runs/train"
    save_every_steps: int = 0               # 0: only at epoch ends
    keep_last: int = 2
    log_every: int = 10
    tensorboard: bool = True                # also write TensorBoard events when tensorboard is installed
    seed: int = 0
    device: str = "auto"
    resume: str | None = None               # "latest", "best", or a checkpoint path
    stop_after_steps: int | None = None     # end this process after N steps (time-sliced jobs); schedule unchanged

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def list_recipes() -> list[str]:
    folder = resources.files("clipforge.train") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_recipe(name: str) -> dict[str, Any]:
    """A packaged recipe by name, or a JSON file by path."""
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        text, origin = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = resources.files("clipforge.train") / "recipes" / f"{name}.json"
        if not resource.is_file():
            raise KeyError(f"unknown recipe {name!r}; packaged recipes: {', '.join(list_recipes())}")
        text, origin = resource.read_text(encoding="utf-8"), f"recipe {name}"
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{origin} is not valid JSON: {err}") from err
    data.pop("description", None)
    data.pop("source", None)
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise ValueError(f"{origin}: unknown fields {sorted(unknown)}; known: {sorted(FIELDS)}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` -> (key, JSON-decoded value, or the raw string)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value")
    key, raw = item.split("=", 1)
    key = key.strip().replace("-", "_")
    if key not in FIELDS:
        raise ValueError(f"unknown config field {key!r}; known: {', '.join(sorted(FIELDS))}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if FIELDS[key].type in ("bool",) and isinstance(value, str):
        value = value.lower() in ("1", "true", "yes", "on")
    return key, value


def build_config(recipe: str | None = None, overrides: list[str] | None = None, **fields: Any) -> TrainConfig:
    """recipe < keyword fields (CLI flags) < `key=value` overrides."""
    data: dict[str, Any] = load_recipe(recipe) if recipe else {}
    data.update({k: v for k, v in fields.items() if v is not None})
    for item in overrides or []:
        key, value = parse_override(item)
        data[key] = value
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    return TrainConfig(**data)
