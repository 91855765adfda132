"""Training configuration as data: a dataclass, JSON recipes, and `key=value` overrides.

A recipe (`recipes/<name>.json`) is a partial config; the command line may name a recipe,
then override single fields (`--set lr=1e-5 --set lock_image=true`). Values are parsed as JSON
where possible, so numbers, booleans, lists and null work, and fall back to plain strings.

A recipe also says what it is for, beside its fields: ``description``, ``for`` (the model and data
its hyperparameters were chosen for, and the result to expect) and ``lr_by_size`` (learning rates
for models of other sizes: a fine-tuning lr of ViT-L/14 does not move a small model at all).
`--list-recipes` prints them; `recipe_advice` scales the lr, and says so, when `--model` is far
from the recipe's own model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from clipforge.errors import UserError


class TrainConfigError(UserError, ValueError):
    """A training config value, recipe or override that cannot be used (one line naming it)."""


@dataclass
class TrainConfig:
    # model
    model: str = "ViT-B/32"                 # any `--model` spec (ViT-B/32: OpenAI's weights); random:ARCH for random
    pretrained: str | None = None           # weights to start from (any spec clipforge.api.load_model takes)
    model_config: dict | None = None        # inline CLIP(**model_config) architecture, randomly initialised
    languages: list[str] | None = None      # what the trained model reads, recorded in its checkpoints (first:
                                            # eval's default prompt language); None: the starting model's, plus
                                            # the languages of the training templates (data=labelled)
    # data: "labelled" (a registry dataset turned into captions), "csv", "folder", "webdataset"
    data: str = "labelled"
    dataset: str | None = None              # registry name for data=labelled (cub, cars, cifar10, ...)
    root: str | None = None                 # dataset root / csv file / caption folder / shard pattern
    split: str = "train"
    templates: str | list[str] = field(default_factory=lambda: ["A photo of a {}."])  # a set name or a list
    random_template: bool = False
    samples_per_epoch: int | None = None    # resampled WebDataset streams: an epoch's samples, all ranks together
    crop_scale: list[float] = field(default_factory=lambda: [0.9, 1.0])
    hflip: bool = False
    workers: int = 0
    max_samples: int | None = None          # train on an evenly strided subset of this many samples
    # fast path for small labelled images (CIFAR-sized): see clipforge.train.fastdata
    in_memory: bool = False                 # decode the training set once into one uint8 tensor
    pad_crop: int = 0                       # in-memory augmentation: random crop after reflect padding (pixels)
    unique_captions: bool = False           # run the text tower once per distinct caption of a batch
    templates_per_batch: int = 0            # in-memory: each batch draws this many templates (0: one per sample)
    label_positives: bool = False           # captions of the same class (any template) are positives
    channels_last: bool = False             # channels_last memory format (faster convolutions on CPU)
    threads: int | None = None              # torch intra-op threads; 0: pick 1 or 2 by measured speed
    # optimisation
    batch_size: int = 64                    # global contrastive batch per rank
    micro_batch: int | None = None          # GradCache chunk size (None: whole batch at once)
    epochs: int = 1
    steps: int | None = None                # stop after this many optimiser steps (overrides epochs)
    lr: float = 1e-5
    lr_by_size: list[dict] | None = None     # [{"below_params": N, "lr": X}, ...]: the lr for smaller models
                                            # than the recipe's own (first match); dropped when lr is given
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 0
    time_budget_s: float | None = None      # train for this many seconds (evaluation excluded); the
                                            # schedule runs on elapsed training time
    budget_clock: str = "wall"              # wall: elapsed seconds; cpu: this process's CPU seconds (all
                                            # threads), the same on an idle or a crowded machine
    warmup_fraction: float = 0.0            # warmup as a fraction of the time budget
    ema_decay: float | None = None          # keep an EMA of the weights; evaluate and save the EMA
    precision: str = "amp"                  # amp | bf16 | fp16 | fp32
    grad_checkpointing: bool = False
    lock_image: bool = False
    lock_text: bool = False
    projections_only: bool = False
    loss: str = "clip"                      # clip (softmax contrastive) | siglip (pairwise sigmoid, needs logit_bias)
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


_RECIPE_INFO = ("description", "source", "for")


def list_recipes() -> list[str]:
    folder = resources.files("clipforge.train") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def _recipe_json(name: str) -> tuple[dict[str, Any], str]:
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        text, origin = path.read_text(encoding="utf-8"), str(path)
    elif path.suffix == ".json":  # it said "unknown recipe" of a mistyped file name
        raise TrainConfigError(f"--recipe {name}: {'is a folder' if path.is_dir() else 'no such file'}; expected a "
                               f"JSON recipe file or a packaged recipe ({', '.join(list_recipes())})")
    else:
        resource = resources.files("clipforge.train") / "recipes" / f"{name}.json"
        if not resource.is_file():
            raise TrainConfigError(f"unknown recipe {name!r}; packaged recipes: {', '.join(list_recipes())} "
                                   "(or the path of a .json file)")
        text, origin = resource.read_text(encoding="utf-8"), f"recipe {name}"
    try:
        data = json.loads(text)
    except ValueError as err:
        raise TrainConfigError(f"{origin} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise TrainConfigError(f"{origin} must be a JSON object of config fields")
    return data, origin


def recipe_info(name: str) -> dict[str, Any]:
    """What a recipe says about itself: description, what it is for, lr by model size."""
    data, _ = _recipe_json(name)
    return {key: data[key] for key in _RECIPE_INFO if key in data}


def describe_recipes() -> str:
    """`--list-recipes`: each recipe with the model and data it is for and the result to expect."""
    lines = []
    for name in list_recipes():
        info = recipe_info(name)
        target = info.get("for", {})
        lines.append(name)
        for key, label in (("model", "model"), ("data", "data"), ("expect", "expect")):
            if key in target:
                lines.append(f"  {label + ':':8s}{target[key]}")
        rules = _recipe_json(name)[0].get("lr_by_size") or []
        if rules:
            sizes = "; ".join(f"below {rule['below_params']:,} parameters lr {rule['lr']:g}" for rule in rules)
            lines.append(f"  {'others:':8s}the lr is scaled to the model's size ({sizes}; --lr sets it)")
    return "\n".join(lines)


def load_recipe(name: str) -> dict[str, Any]:
    """A packaged recipe by name, or a JSON file by path (its config fields only)."""
    data, origin = _recipe_json(name)
    for key in _RECIPE_INFO:
        data.pop(key, None)
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise TrainConfigError(f"{origin}: unknown fields {sorted(unknown)}; known: {sorted(FIELDS)}")
    return data


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` -> (key, JSON-decoded value, or the raw string)."""
    if "=" not in item:
        raise TrainConfigError(f"override {item!r} must look like key=value")
    key, raw = item.split("=", 1)
    key = key.strip().replace("-", "_")
    if key not in FIELDS:
        raise TrainConfigError(f"unknown config field {key!r}; known: {', '.join(sorted(FIELDS))}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if FIELDS[key].type in ("bool",) and isinstance(value, str | int) and str(value).lower() in _BOOLS:
        value = _BOOLS[str(value).lower()]
    return key, value


def build_config(recipe: str | None = None, overrides: list[str] | None = None, **fields: Any) -> TrainConfig:
    """recipe < keyword fields (CLI flags) < `key=value` overrides. A recipe's `workers` is a default written for
    some machine: it is cut to the cores this one has (`recipe_workers`); a number the user gave is kept."""
    data: dict[str, Any] = load_recipe(recipe) if recipe else {}
    given = {k: v for k, v in fields.items() if v is not None}
    data.update(given)
    for item in overrides or []:
        key, value = parse_override(item)
        data[key] = value
        given[key] = value
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise TrainConfigError(f"unknown config fields {sorted(unknown)}")
    checked = {key: check_value(key, value) for key, value in data.items()}
    if "workers" in checked and "workers" not in given:
        checked["workers"] = recipe_workers(checked["workers"])
    return TrainConfig(**checked)


def recipe_workers(workers: int) -> int:
    """A recipe's DataLoader workers, at most the cores this process may run on: the pretrain recipe's 4 on a
    2-core machine made torch print "This DataLoader will create 4 worker processes in total. Our suggested max
    number of worker in current system is 2" twice a run, for a number nobody on that machine asked for."""
    from clipforge.cores import usable_cores

    return min(workers, usable_cores())


_KINDS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,), "list": (list,)}
_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
          "dict": "a JSON object", "list": "a JSON list", "None": "null"}


def _matches(value: Any, kind: str) -> bool:
    if kind == "None":
        return value is None
    base, _, inner = kind.partition("[")
    if isinstance(value, bool) and base != "bool":
        return False
    if not isinstance(value, _KINDS[base]):
        return False
    return not inner or all(_matches(item, inner.rstrip("]")) for item in value)


def check_value(key: str, value: Any) -> Any:
    """`value` if it has the type field `key` declares (ints widen to floats), else a ValueError
    naming the field, what it expects and what it got, so `--set lr=abc` is one clear line."""
    kinds = [k.strip() for k in str(FIELDS[key].type).split("|")]
    for kind in kinds:
        if _matches(value, kind):
            return float(value) if kind == "float" else value
    expected = " or ".join(_NAMES[k.partition("[")[0]] + (f" of {k.partition('[')[2].rstrip(']')}"
                                                          if "[" in k else "") for k in kinds)
    raise TrainConfigError(f"config field {key!r} must be {expected}, got {value!r}")
