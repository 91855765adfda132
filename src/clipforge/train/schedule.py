"""Learning-rate schedules: linear warmup then cosine decay.

Warmup matters for AdamW on a fresh model: its second-moment estimates are poor for the first
steps, and a full-size step then can blow up the attention logits. Cosine decay to zero lets
the last steps settle instead of bouncing around at a high rate.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(progress: float, warmup: float, final_ratio: float = 0.0) -> float:
    """LR multiplier at `progress` in [0, 1] (fraction of training done), warmup as a fraction too."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    span = max(1.0 - warmup, 1e-12)
    cosine = 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / span))
    return final_ratio + (1.0 - final_ratio) * cosine


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                       final_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (so its state dict checkpoints like any scheduler) stepping once per optimiser step."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = min(max(warmup_steps, 0), total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TimeBudget:
    """A training-time clock with a budget; the learning rate is a function of elapsed time.

    On a shared machine the step rate changes with other people's load, so a step-count
    schedule either stops early or overruns. Scheduling on elapsed *training* seconds
    (evaluation excluded) anneals to zero exactly when the budget is spent, however busy the
    machine was. Its state (the seconds spent) checkpoints, so a resumed run continues the curve.
    """

    def __init__(self, budget_s: float, warmup_fraction: float = 0.0) -> None:
        if budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive, got {budget_s}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        self.budget_s, self.warmup_fraction, self.elapsed_s = budget_s, warmup_fraction, 0.0

    def factor(self) -> float:
        return warmup_cosine(self.elapsed_s / self.budget_s, self.warmup_fraction)

    def spent(self) -> bool:
        return self.elapsed_s >= self.budget_s

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed_s}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.elapsed_s = float(state["elapsed_s"])
