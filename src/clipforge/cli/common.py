"""Argument helpers shared by subcommands, so every command spells `--model` the same way."""

from __future__ import annotations

import argparse

DEFAULT_MODEL = "ViT-B/32"
OFFLINE_MODEL = "clipforge-tiny"


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help=f"model name ({DEFAULT_MODEL}, RN50, ...), a config name for random weights (test-vit-tiny), "
             f"or a checkpoint path; default: {DEFAULT_MODEL} when cached, else the shipped {OFFLINE_MODEL}")


def default_model_name() -> str:
    """ViT-B/32 when its weights are already here, the shipped offline model otherwise."""
    from clipforge.api import available_models
    from clipforge.weights import is_cached

    if is_cached(DEFAULT_MODEL) or OFFLINE_MODEL not in available_models():
        return DEFAULT_MODEL
    return OFFLINE_MODEL


def load_model_for_cli(name: str | None, device: str | None = None):
    """(model, preprocess) for a --model value; a bare config name gives random weights."""
    import sys

    from clipforge.api import load
    from clipforge.image import build_preprocess
    from clipforge.models import ARCH_CONFIGS, create_model_from_config, get_config

    name = name or default_model_name()
    if name == OFFLINE_MODEL and name != DEFAULT_MODEL:
        print(f"note: using the offline model {OFFLINE_MODEL} (tiny, trained on CIFAR-10); "
              f"real use wants {DEFAULT_MODEL} or larger", file=sys.stderr)
    if name.startswith("test-") and name in ARCH_CONFIGS:
        model = create_model_from_config(get_config(name)).eval()
        return model, build_preprocess(model.image_size)
    return load(name, device=device)
