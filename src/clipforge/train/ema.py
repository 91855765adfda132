"""An exponential moving average of the weights, evaluated and saved instead of the raw weights.

Late in a short run the raw weights still jitter with every AdamW step; their running average
sits nearer the centre of the basin and usually scores higher (Polyak averaging, as timm and
open_clip's `--model-ema` use). The decay ramps up as (1 + n) / (10 + n) so the average does not
drag the random initialisation along for thousands of steps. Buffers (BatchNorm running
statistics) are averaged like parameters; integer buffers are copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        floats_ema, floats_new = [], []
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                floats_ema.append(self.shadow[key])
                floats_new.append(value.detach())
            else:
                self.shadow[key].copy_(value)
        torch._foreach_lerp_(floats_ema, floats_new, 1.0 - decay)

    def state_dict(self) -> dict[str, int]:
        return {"updates": self.updates}

    def load(self, shadow: dict[str, torch.Tensor], updates: int) -> None:
        """Restore from a checkpoint: `shadow` is the saved (averaged) weights."""
        for key, value in shadow.items():
            self.shadow[key].copy_(value)
        self.updates = updates

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Swap the averaged weights into `model` for the block; yields the raw weights."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield raw
        finally:
            model.load_state_dict(raw)
