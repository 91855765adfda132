"""Contrastive training: loss (single and distributed), optimiser groups, schedule, trainer,
checkpoints that resume exactly, recipes as data, and WiSE-FT weight interpolation.

Names are imported on first use, so `clipforge train` (its arguments live in `clipforge.cli.train`,
like every command's) registers without importing torch; torchrun runs the same command:
`torchrun --nproc_per_node N -m clipforge train ...`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
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


def wise_ft(zeroshot: str | os.PathLike[str], finetuned: str | os.PathLike[str], alpha: float,
            out: str | os.PathLike[str]) -> Path:
    """WiSE-FT (Wortsman et al. 2022): write ``(1 - alpha) * zeroshot + alpha * finetuned`` as a safetensors file
    at `out` and return its path.

    `zeroshot` and `finetuned`: two checkpoints of one architecture, anything `clipforge.load` reads (their names
    and shapes are checked first); `alpha` in [0, 1] (0: the zero-shot weights, 1: the fine-tuned ones; about 0.5
    keeps most of the fine-tune's gain and the zero-shot model's robustness). The file keeps the zero-shot
    model's config, preprocessing, tokenizer and scoring, and the languages of both. See
    `clipforge.train.weight_interpolation.wise_ft`, which this calls (imported on first use, so the package imports
    no torch; the module is not named `wise_ft`: importing it bound that name in this package over this function).
    """
    from clipforge.train.weight_interpolation import wise_ft as _wise_ft

    return _wise_ft(zeroshot, finetuned, alpha, out)
