"""A short, stable identity for a set of weights, used to key caches of computed embeddings.

Two state dicts get the same fingerprint exactly when they hold the same tensor names, dtypes,
shapes and bytes, whatever their key order or device. Tensors are hashed through zero-copy
byte views, so fingerprinting ViT-L costs one pass over its memory and no extra copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)  # no copy when already contiguous
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy())


def fingerprint_state_dict(state_dict: Mapping[str, torch.Tensor], length: int = 16) -> str:
    """Hex sha256 (first `length` chars) over sorted names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {name!r} is a {type(value).__name__}, not a tensor")
        header = f"{name}\0{str(value.dtype).removeprefix('torch.')}\0{tuple(value.shape)}\0{value.numel()}\0"
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header.encode("utf-8"))
        digest.update(_tensor_bytes(value))
    return digest.hexdigest()[:length]


def model_fingerprint(model: torch.nn.Module, length: int = 16) -> str:
    """Fingerprint of a module's parameters and buffers (its ``state_dict()``)."""
    return fingerprint_state_dict(model.state_dict(), length=length)
