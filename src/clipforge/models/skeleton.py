"""A model of the right shape whose weights are about to be replaced: built without initialising them.

Loading a checkpoint builds the module tree and then assigns the file's tensors, so random
initialisation (seconds for ViT-B/32) is thrown away. The meta device avoids it too, but any
arithmetic on meta tensors runs Python meta kernels that import `torch._dynamo` and sympy: over a
second of every CLI start. `skeleton` builds on the CPU instead, with the initialisers turned into
no-ops (a thread-local `TorchFunctionMode`, so nothing outside this call is affected): memory is
allocated but never touched (the pages stay unmapped), and the values are garbage, to be
overwritten by ``load_state_dict(..., assign=True)`` or only read for names and shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["skeleton"]

# Only random fills are skipped: deterministic ones (ones_, zeros_, copy_, arange...) are cheap and may
# build a buffer that no state dict carries, which must keep its real value.
_FILLS = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.exponential_, torch.Tensor.log_normal_,
          torch.Tensor.geometric_, torch.Tensor.cauchy_, torch.Tensor.random_, torch.Tensor.bernoulli_,
          # nn.init's functions dispatch on the mode themselves, and the mode is off inside its own handler
          *(getattr(torch.nn.init, name) for name in (
              "normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
              "xavier_normal_", "orthogonal_", "sparse_"))}


class _NoInit(TorchFunctionMode):
    """In-place fills become no-ops and random factories allocate without filling."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _FILLS:
            return args[0] if args else next(iter(kwargs.values()))
        if func in (torch.randn, torch.rand):
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


def skeleton(factory: Callable[..., torch.nn.Module], /, **kwargs: Any) -> torch.nn.Module:
    """``factory(**kwargs)`` (e.g. ``CLIP(**config)``) on the CPU with uninitialised parameters (see module docstring)."""
    with _NoInit(), torch.no_grad():
        return factory(**kwargs)
