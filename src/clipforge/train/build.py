"""What a training run trains and evaluates: the model from its spec, the zero-shot eval sets.

`build_model` is where `clipforge train --model` meets the project's one model loader
(`clipforge.api.load_model`), so a spec means in training what it means in every command:
``ViT-B/32`` is OpenAI's weights (downloaded and verified; offline the run fails before it starts,
it never trains from noise), a checkpoint file, `clipforge-tiny` or ``ARCH:TAG`` is fine-tuned, and
random weights are asked for as ``random:ARCH`` (or an inline `model_config`). The model carries the
preprocessing its weights need (`preprocess_cfg`): training normalises with it, evaluation
preprocesses with it, and every saved checkpoint records it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from clipforge.train.config import TrainConfig, TrainConfigError


def build_model(config: TrainConfig) -> nn.Module:
    """The model to train, with `preprocess_cfg` set: `pretrained` weights (any spec
    `clipforge.api.load_model` takes, checked against `model_config` / the architecture `model`
    names), else `model_config` (random init, seeded by the trainer), else `model` (any spec)."""
    from clipforge.models import create_model_from_config
    from clipforge.train.checks import check_model_config
    from clipforge.weights.preprocess_cfg import validate_preprocess

    start: Any = None  # what the run starts from, for its languages: a LoadedModel (None: random weights)
    if config.model_config is not None and config.pretrained is None:
        model = create_model_from_config(check_model_config(config.model_config))
    elif config.pretrained is None:
        start = _load(config.model, config.seed)
        model = start.model.train()
    else:
        start = _load(config.pretrained, config.seed)
        model = start.model.train()
        expected = check_model_config(config.model_config) if config.model_config is not None \
            else _architecture(config.model)
        if expected is not None and _shapes(model) != _meta_shapes(expected):
            raise TrainConfigError(f"pretrained weights {config.pretrained!r} do not fit architecture "
                                   f"{'model_config' if config.model_config is not None else repr(config.model)}")
    model.preprocess_cfg = validate_preprocess(dict(getattr(model, "preprocess_cfg", None) or {}))
    from clipforge.train.languages import trained_languages

    model.languages = trained_languages(config, model, start)  # every checkpoint records them (`weights.save`)
    return model


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _meta_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    import torch

    from clipforge.models import create_model_from_config

    with torch.device("meta"):
        return _shapes(create_model_from_config(dict(config)))


def _architecture(spec: str) -> dict | None:
    """The config of an architecture name or ``random:ARCH`` (not a file of that name), else None."""
    from clipforge.api import RANDOM_PREFIX
    from clipforge.models import get_config

    name = spec.removeprefix(RANDOM_PREFIX)
    if Path(spec).expanduser().exists():
        return None
    try:
        return get_config(name)
    except KeyError:
        return None


def _load(spec: str, seed: int) -> Any:
    """Any spec through the project's one model loader (its `LoadedModel`); random weights are seeded by
    `seed` and first checked to fit this machine's memory with their gradients and optimiser state."""
    from clipforge.api import RANDOM_PREFIX, load_model

    if spec.startswith(RANDOM_PREFIX) or spec.startswith("test-"):
        from clipforge.train.checks import check_model_config

        arch = _architecture(spec)
        if arch is not None:
            check_model_config(arch)
    return load_model(spec, device="cpu", seed=seed)


def preprocess_of(model: nn.Module) -> dict[str, Any]:
    """The mean/std/interpolation/resize the model's weights need (OpenAI's for random weights)."""
    from clipforge.weights.preprocess_cfg import validate_preprocess

    return validate_preprocess(dict(getattr(model, "preprocess_cfg", None) or {}))


def build_eval_hooks(config: TrainConfig, image_size: int, preprocess: dict[str, Any] | None = None) -> list[Any]:
    """Zero-shot evaluation sets, preprocessed as the weights need (`preprocess`: `preprocess_of(model)`)."""
    from clipforge.train.data import open_split, strided_subset
    from clipforge.train.evalhook import ZeroShotEval
    from clipforge.train.skipped import known_bad
    from clipforge.weights.preprocessing import build_weights_preprocess
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
        ds = open_split(dataset, root, split, transform=build_weights_preprocess(image_size, preprocess))
        if name == "val":  # every class keeps its share of a capped evaluation set
            ds = strided_subset(ds, config.val_max_samples)
        bad = known_bad(ds)  # the files its metadata lists but the disk lacks
        if config.in_memory:  # decode once; each epoch's evaluation then only preprocesses pixels
            from clipforge.data.inmemory import decode_all

            ds = decode_all(ds, progress=False)
            bad += known_bad(ds)  # ... and those that failed to decode
        hooks.append(ZeroShotEval(name, ds, ds.classnames, get_templates(templates),
                                  max_samples=config.val_max_samples if name == "val" else None, known_bad=bad))
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


def prepare_for_training(model: nn.Module, config: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """(the model as the run trains it, what was frozen): the loss checked against the model, channels-last
    memory, the locked towers (`freeze.apply_freezing`) and gradient checkpointing as `config` asks."""
    import torch

    from clipforge.train.freeze import apply_freezing

    if config.loss not in ("clip", "siglip"):
        raise ValueError(f"loss must be 'clip' or 'siglip', got {config.loss!r}")
    if config.loss == "siglip" and getattr(model, "logit_bias", None) is None:
        raise ValueError("loss 'siglip' needs a model with a logit_bias (a SigLIP family model)")
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = apply_freezing(model, config.lock_image, config.lock_text, config.projections_only)
    if config.grad_checkpointing:  # every family's towers, each its own way (a Chinese-CLIP's BERT included)
        import warnings

        import torch.distributed as dist

        from clipforge.errors import Notice
        from clipforge.train.grad_checkpointing import enable_grad_checkpointing

        notices = enable_grad_checkpointing(model, f"--model {config.pretrained or config.model}")
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:  # once per job
            for notice in notices:
                warnings.warn(notice, Notice, stacklevel=2)
    return model, frozen


def scale_lr_to_model(config: TrainConfig, model: nn.Module) -> float:
    """Apply the recipe's `lr_by_size` (the first rule whose `below_params` the model is under) and
    say so: a recipe's lr is chosen for its own model (finetune-cub's 1e-6 is ViT-L/14's, and moves a
    small model not at all). Returns the lr used."""
    import warnings

    rules = sorted(config.lr_by_size or [], key=lambda rule: rule.get("below_params", 0))
    count = sum(p.numel() for p in model.parameters())
    for rule in rules:
        if not isinstance(rule, dict) or not {"below_params", "lr"} <= set(rule):
            raise TrainConfigError(f"config field 'lr_by_size' needs {{\"below_params\": N, \"lr\": X}} items, "
                                   f"got {rule!r}")
        if count < rule["below_params"]:
            if rule["lr"] != config.lr:
                warnings.warn(f"this recipe's lr {config.lr:g} is for larger models; this one has {count:,} "
                              f"parameters, so lr {rule['lr']:g} is used (--lr sets it)", stacklevel=2)
                config.lr = float(rule["lr"])
            break
    return config.lr


def family_tokenizer(model: nn.Module) -> Any:
    """A model family's own tokenizer for the captions (None: CLIP's BPE, the data default): the one its
    config names (`tokenizer_cfg`) or the one it carries (Chinese-CLIP's WordPiece, `model.tokenizer`; before,
    that one was passed over and `random:cn-RN50` fed BPE ids past its 21,128-word vocabulary: an IndexError
    traceback at the first step)."""
    carried = getattr(model, "tokenizer", None)
    if getattr(model, "tokenizer_cfg", None) is None and not callable(carried):
        return None
    from clipforge.text import tokenizer_of

    return tokenizer_of(model)


def caption_tokenizer(model: nn.Module, config: TrainConfig) -> Any:
    """`family_tokenizer`, tried once before any data is read: a family whose tokenizer file is absent
    (SigLIP's `spiece.model` with random weights) failed inside the first batch, in a DataLoader worker
    when workers > 0. TrainConfigError naming `--model` and the ways on."""
    from clipforge.text.families import TokenizerUnavailableError

    tokenizer = family_tokenizer(model)
    try:
        if tokenizer is not None:
            tokenizer(["a photo"])
    except TokenizerUnavailableError as err:
        spec = config.pretrained or config.model
        hint = ""
        if config.pretrained is None and spec.startswith(("random:", "test-")):
            hint = ("; or, from random weights, train with CLIP's tokenizer through an inline model_config "
                    "(\"scoring\": \"sigmoid\" gives loss=siglip its logit_bias)")
        why = " ".join(str(err).split())  # one line: a backend's own message (transformers') may span several
        raise TrainConfigError(f"--model {spec}: its captions cannot be tokenized: {why}{hint}") from None
    return tokenizer
