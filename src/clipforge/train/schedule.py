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


SHORT_RUN_WARMUP = 0.1
"""The share of a run its warmup takes when the recipe's `warmup_steps` is not shorter than the run."""


def effective_warmup(warmup_steps: int, total_steps: int) -> int:
    """The warmup steps a run of `total_steps` uses: `warmup_steps`, unless that leaves no step to decay in
    (the pretrain recipe's 2,000 warmup steps in a 20-step smoke run); then the first 10% of the run (at least
    one step), so a short run still warms up and decays. It was cut to the run's length: the lr rose for the
    whole run and its last steps trained at the peak rate, without a word (`warmup_notice` says it now)."""
    warmup_steps = max(int(warmup_steps), 0)
    if warmup_steps < total_steps:
        return warmup_steps
    # at least 2 steps: the factor of step 0 is 1 / warmup, so a 1-step warmup trains at the peak rate at once
    return max(math.ceil(SHORT_RUN_WARMUP * total_steps), 2) if total_steps > 2 else 0


def warmup_notice(warmup_steps: int, total_steps: int) -> str | None:
    """One line when `effective_warmup` changes the warmup (None when it keeps it)."""
    used = effective_warmup(warmup_steps, total_steps)
    if used == warmup_steps or total_steps <= 2:  # two steps or one: no room to warm up and decay
        return None
    steps = "step" if used == 1 else "steps"
    return (f"warmup_steps {warmup_steps} is not shorter than this run's {total_steps} steps: the learning rate "
            f"warms up over the first {used} {steps} ({SHORT_RUN_WARMUP:.0%} of the run, at least 2) and then decays (cosine) "
            f"to 0 instead of rising for the whole run; set warmup_steps below {total_steps} to choose")


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                       final_ratio: float = 0.0, as_given: bool = False) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (so its state dict checkpoints like any scheduler) stepping once per optimiser step; a
    warmup not shorter than the run is `effective_warmup`'s 10% of it (`as_given`: `warmup_steps` as it is, the
    warmup a checkpoint's run used). The warmup used is the scheduler's `warmup_steps` attribute."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = max(int(warmup_steps), 0) if as_given else effective_warmup(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    scheduler.warmup_steps = warmup_steps  # type: ignore[attr-defined]  (kept in checkpoints: `Trainer.state`)
    return scheduler


def resumed_warmup(state: dict, warmup_steps: int, total_steps: int) -> int:
    """The warmup a checkpoint's run used: recorded in its state, or, for a checkpoint written before it was
    recorded, the rule of then (a warmup longer than the run cut to the run's length). Resuming such a run under
    the 10% rule changed its schedule mid-run (its rate fell by half at once and the losses parted)."""
    used = state.get("warmup_steps_used")
    if isinstance(used, int) and not isinstance(used, bool) and used >= 0:
        return used
    return min(max(int(warmup_steps), 0), int(total_steps))


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
