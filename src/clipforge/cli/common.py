"""Argument helpers shared by subcommands, so every command spells `--model` the same way."""

from __future__ import annotations

import argparse
from typing import Any

from clipforge.resolve import OFFLINE_DEFAULT, PREFERRED_DEFAULT


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help=f"model name ({PREFERRED_DEFAULT}, RN50, ...), a config name for random weights (test-vit-tiny, "
             f"random:ViT-B/32), or a checkpoint path; default: {PREFERRED_DEFAULT} when cached, "
             f"else the shipped {OFFLINE_DEFAULT}")


def default_model_name() -> str:
    """The `--model` default, announcing the offline fallback on stderr when it is taken."""
    import sys

    from clipforge.resolve import default_model

    name, notice = default_model()
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    return name


def load_model_for_cli(name: str | None, device: str | None = None) -> tuple[Any, Any]:
    """(model, preprocess) for a --model value; a bare test config name gives random weights."""
    from clipforge.resolve import load_model

    loaded = load_model(name or default_model_name(), device=device)
    return loaded.model, loaded.preprocess
