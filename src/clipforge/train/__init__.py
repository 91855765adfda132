"""Contrastive training: loss (single and distributed), optimiser groups, schedule, trainer,
checkpoints that resume exactly, recipes as data, and WiSE-FT weight interpolation.

Names are imported on first use, so `clipforge train` (its arguments live in `clipforge.cli.train`,
like every command's) registers without importing torch; torchrun runs the same command:
`torchrun --nproc_per_node N -m clipforge train ...`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "build_config": "config", "build_run_config": "checks", "list_recipes": "config",
    "load_recipe": "config", "describe_recipes": "config", "TrainConfigError": "config", "check_config": "checks",
    "ClipLoss": "loss", "clip_loss": "loss", "gather_with_grad": "loss", "unique_caption_loss": "loss",
}

__all__ = sorted([*_EXPORTS, "train", "wise_ft"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"clipforge.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'clipforge.train' has no attribute {name!r}")


def train(config: Any) -> dict:
    """Run the job `config` (a `TrainConfig`) describes; see `clipforge.train.trainer.Trainer`."""
    from clipforge.train.trainer import train as _train

    return _train(config)


def wise_ft(zeroshot: str, finetuned: str, alpha: float, out: str):
    from clipforge.train.wise_ft import wise_ft as _wise_ft

    return _wise_ft(zeroshot, finetuned, alpha, out)
