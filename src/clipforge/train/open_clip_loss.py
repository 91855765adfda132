"""open_clip's loss classes, for ``import clipforge as open_clip``: `ClipLoss` and `SigLipLoss` called as open_clip
calls them, computed by clipforge's own losses (`clipforge.train.loss`).

The one difference that matters is the scale: open_clip's losses take ``logit_scale`` as the model's forward
returns it, already exponentiated, while clipforge's take the log scale (its trainer passes the parameter).
Handing a `create_model` model's outputs to clipforge's `ClipLoss` would exponentiate twice, silently: these
classes take the exponentiated value and pass its log on, so the loss and its gradients (through the log of
an exp, the identity) are open_clip's. Distribution follows the default process group, as clipforge's losses
do: open_clip's `rank`/`world_size`/`use_horovod` arguments are accepted for the single-process case they
describe, and refused where they would claim another (horovod is not supported).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clipforge.train.loss import ClipLoss as _ClipLoss
from clipforge.train.loss import SigLipLoss as _SigLipLoss

__all__ = ["ClipLoss", "SigLipLoss"]


def _check_placement(rank: int, world_size: int, use_horovod: bool = False) -> None:
    import torch.distributed as dist

    if use_horovod:
        raise ValueError("use_horovod=True: clipforge's losses gather over torch.distributed, not horovod")
    group = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if int(world_size) not in (1, group) or (int(world_size) == 1 and int(rank) != 0):
        raise ValueError(f"rank={rank}, world_size={world_size}: clipforge's losses take the placement from "
                         f"the default process group (world size {group})")


class ClipLoss(nn.Module):
    """open_clip's `ClipLoss`: ``loss(image_features, text_features, logit_scale)`` with the exponentiated
    scale the model returns; ``output_dict=True`` gives ``{"contrastive_loss": loss}``."""

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = False, cache_labels: bool = False,
                 rank: int = 0, world_size: int = 1, use_horovod: bool = False) -> None:
        super().__init__()
        _check_placement(rank, world_size, use_horovod)
        self.loss = _ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, output_dict: bool = False) -> Any:
        if logit_bias is not None:
            raise ValueError("ClipLoss takes no logit_bias (a SigLIP model's bias goes to SigLipLoss)")
        loss = self.loss(image_features, text_features, torch.as_tensor(logit_scale).log())
        return {"contrastive_loss": loss} if output_dict else loss


class SigLipLoss(nn.Module):
    """open_clip's `SigLipLoss`: ``loss(image_features, text_features, logit_scale, logit_bias)`` with the
    exponentiated scale; ``output_dict=True`` gives ``{"contrastive_loss": loss}``."""

    def __init__(self, cache_labels: bool = False, rank: int = 0, world_size: int = 1,
                 dist_impl: str | None = None) -> None:
        super().__init__()
        _check_placement(rank, world_size)
        self.loss = _SigLipLoss()

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor, output_dict: bool = False) -> Any:
        loss = self.loss(image_features, text_features, torch.as_tensor(logit_scale).log(), bias=logit_bias)
        return {"contrastive_loss": loss} if output_dict else loss
