"""Contrastive training: loss (single and distributed), optimiser groups, schedule, trainer,
checkpoints that resume exactly, recipes as data, and WiSE-FT weight interpolation."""

from clipforge.train.config import TrainConfig, build_config, list_recipes, load_recipe
from clipforge.train.loss import ClipLoss, clip_loss, gather_with_grad, unique_caption_loss

__all__ = ["ClipLoss", "TrainConfig", "build_config", "clip_loss", "gather_with_grad", "list_recipes",
           "load_recipe", "train", "unique_caption_loss", "wise_ft"]


def train(config: TrainConfig) -> dict:
    """Run the job `config` describes; see `clipforge.train.trainer.Trainer`."""
    from clipforge.train.trainer import train as _train

    return _train(config)


def wise_ft(zeroshot: str, finetuned: str, alpha: float, out: str):
    from clipforge.train.wise_ft import wise_ft as _wise_ft

    return _wise_ft(zeroshot, finetuned, alpha, out)
