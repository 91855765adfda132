"""`eval_mode(model)`: run a block with the model in eval mode and give it back in the modes it had, module by module.

Why: a helper that is handed the caller's model (`ZeroShotClassifier`, `evaluate_zeroshot` and the other
`evaluate_*` functions) must encode in eval mode (a ResNet's BatchNorm in training mode normalises with the batch's
own statistics: 5 of 6 top-1 labels changed, and one image alone raised "Expected more than 1 value per channel"),
but must not leave a training loop's model in eval mode afterwards (BatchNorm frozen for the rest of the run).

Restored per module, not with ``model.train(was_training)``: a model with a locked tower (`train.freeze`) or
BatchNorm statistics frozen (`lock_image_tower(freeze_bn_stats=True)`) has submodules in eval mode inside a
training model, and a blanket ``.train()`` would turn them back on (`train.evalhook` learnt this first).

A model already entirely in eval mode (every loaded model, a `Library`'s) is not written to at all, so threads
sharing such a model never race here. Two threads running the same *training-mode* model through helpers at
once would: put it in eval mode yourself (``model.eval()``) for that.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from torch import nn

__all__ = ["eval_mode", "keeps_caller_mode"]

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block `model` is in eval mode; afterwards (also on an exception) every module's
    `training` flag is what it was before."""
    modes = {module: module.training for module in model.modules()}
    if not any(modes.values()):  # already in eval mode: nothing to switch or restore (no write, no race)
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def keeps_caller_mode(func: F) -> F:
    """Decorate a function whose first argument (or ``model=``) may be the caller's `nn.Module`: the call
    runs under `eval_mode` of that module, so the caller gets it back in the modes it had. Anything else
    (a model name, an already-resolved model of the caller's own) is passed through untouched."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        model = args[0] if args else kwargs.get("model")
        if not isinstance(model, nn.Module):
            return func(*args, **kwargs)
        with eval_mode(model):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
