"""What each field of a training state (`<name>.state.pt`) must hold for `Trainer.resume` to use it.

`CheckpointManager.save` writes plain values and tensors; a state another program wrote, or one edited by hand,
with the right keys but other values crashed `Trainer.resume` mid-way with a traceback (`int(state["step"])` of a
list: TypeError), after the model's weights had been loaded. `load_train_state` asks `wrong_state_field` first
and refuses such a file in one line naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["wrong_state_field"]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rng(value: Any) -> bool:
    python, numpy_state = (value.get("python"), value.get("numpy")) if isinstance(value, dict) else (None, None)
    return (isinstance(value, dict) and isinstance(value.get("torch"), torch.Tensor)
            and isinstance(python, (list, tuple)) and len(python) == 3 and isinstance(python[1], (list, tuple))
            and isinstance(numpy_state, (list, tuple)) and len(numpy_state) == 5
            and isinstance(numpy_state[1], torch.Tensor))


def _optimizer(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("state"), dict) and isinstance(value.get("param_groups"),
                                                                                           list)


def _ema(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _count(value.get("updates"))
                             and isinstance(value.get("raw_model"), dict)
                             and all(isinstance(v, torch.Tensor) for v in value["raw_model"].values()))


def _log_window(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _number(value.get("loss", 0.0)) and _count(value.get("n", 0)))


_FIELD_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("step", _count, "a whole number >= 0"),
    ("epoch", _count, "a whole number >= 0"),
    ("batch_in_epoch", _count, "a whole number >= 0"),
    ("optimizer", _optimizer, "an optimizer state (a dict with 'state' and 'param_groups')"),
    ("scheduler", lambda v: isinstance(v, dict), "a scheduler state (a dict)"),
    ("rng", _rng, "the random generators' states torch, python and numpy"),
    ("ema", _ema, "None or a dict with 'updates' and the 'raw_model' tensors"),
    ("budget", lambda v: v is None or isinstance(v, dict), "None or a dict"),
    ("scaler", lambda v: v is None or isinstance(v, dict), "None or a dict"),
    ("elapsed_s", _number, "a number of seconds"),
    ("log_window", _log_window, "None or a dict with 'loss' and 'n'"),
    ("stream_epoch_batches", lambda v: v is None or (_count(v) and v > 0), "None or a whole number > 0"),
)
"""(field, check, what it must be) for what `CheckpointManager.save` writes; optional fields (ema, budget,
scaler, elapsed_s, log_window) are checked only when present."""


def wrong_state_field(state: dict[str, Any]) -> str | None:
    """The first field of a training state that is not what `save` writes, said as "'step' is a list, expected
    a whole number >= 0"; None when every field present is."""
    for key, check, expected in _FIELD_CHECKS:
        if key in state and not check(state[key]):
            return f"{key!r} is {type(state[key]).__name__ if state[key] is not None else 'None'}, expected {expected}"
    return None
