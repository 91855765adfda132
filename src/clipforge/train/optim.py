"""Optimiser construction: AdamW as CLIP was trained, with decay only where it regularises.

Decoupled weight decay pulls weights towards zero. That is a prior on matrices (conv kernels,
linear layers), but on gains and biases it fights normalisation, on embeddings it shrinks rows
that are rarely updated, and on `logit_scale` it would drag the temperature back to 1; the
CLIP paper and open_clip therefore exempt them: every parameter with fewer than 2 dimensions,
plus anything named like an embedding or the logit scale.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

CLIP_BETAS = (0.9, 0.98)
CLIP_EPS = 1e-6


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """True for gains, biases, embeddings and `logit_scale`."""
    return param.ndim < 2 or "embedding" in name or name.rsplit(".", 1)[-1] in ("logit_scale", "bias")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices and the exempt rest (frozen parameters left out)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if is_no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.2,
                    betas: Iterable[float] = CLIP_BETAS, eps: float = CLIP_EPS) -> torch.optim.AdamW:
    """AdamW with CLIP's betas (0.9, 0.98) and eps 1e-6; fused kernels when available."""
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("no trainable parameters: every parameter is frozen")
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
