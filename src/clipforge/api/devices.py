"""The device a model runs on: decided here once, so every command's default is the same.

`clipforge.api` imports both names back, and that is where callers take them from.
"""

from __future__ import annotations

import os

import torch

__all__ = ["default_device", "resolve_device"]


def default_device() -> torch.device:
    """The device used when none is given: this rank's GPU under torchrun, any GPU, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = os.environ.get("LOCAL_RANK")
    return torch.device(f"cuda:{int(local_rank)}" if local_rank and local_rank.isdigit() else "cuda")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device (None -> `default_device`); ValueError for names this machine lacks."""
    if device is None or device == "":
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}: expected cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        # worded for both callers: a Python caller never typed --device (the CLI shows the message as is)
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available here; use --device cpu "
                         "(device='cpu' in Python)")
    return resolved
