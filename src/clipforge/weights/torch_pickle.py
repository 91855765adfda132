"""``torch.load(weights_only=True)`` with refusals turned into `UnsafeCheckpointError`.

Its own module because both the generic reader (`clipforge.weights.loading`) and the Hugging
Face folder reader (`clipforge.weights.hf`) use it, and they must not import each other.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from clipforge.weights.errors import CheckpointFormatError, UnsafeCheckpointError

_UNSAFE_HINT = ("only plain state dicts of tensors are loaded from pickles; save weights with "
                "torch.save(model.state_dict(), path) or clipforge.weights.save_safetensors")


def _forbidden_global(path: Path, err: Exception) -> str | None:
    """The global a weights_only torch.load refused, or None when the failure was something else."""
    message = str(err)
    if "Weights only load failed" not in message and "weights_only" not in message:
        return None
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        if found:
            return str(found[0])
    except Exception:  # legacy (non-zip) files are not supported by that helper
        pass
    match = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"global[: ]+'?([\w.]+)", message)
    return match.group(1) if match else "an unsupported global"


def torch_load_safely(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)``, with refusals turned into `UnsafeCheckpointError`."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        forbidden = _forbidden_global(path, err)
        if forbidden is not None:
            raise UnsafeCheckpointError(path, forbidden, _UNSAFE_HINT) from None
        raise CheckpointFormatError(f"cannot read {path} as a PyTorch checkpoint: {err}") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointFormatError(f"cannot read {path} as a PyTorch checkpoint: {err}") from err
