"""Pre-packed weights that follow the parameters they were made from.

oneDNN multiplies fastest with weights reordered once into its blocked layout; plain `F.linear`
re-packs the weight on every call, which at batch 1 costs about as much as the multiply. The
packed copies are derived data, so they must never go stale or leak into a state dict: each
cache remembers the storage pointer and version counter of every source parameter and is rebuilt
when any of them changes (`load_state_dict`, `.to()`, in-place edits), and `InferenceModule`
drops it when the module is copied or pickled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from clipforge.inference._memory import retain_freed_memory
from clipforge.inference.cpu import bf16_supported

__all__ = ["InferenceModule", "autocast_off", "autocast_output", "fast_dtype", "linear", "pack_conv",
           "pack_linear", "probe_views", "source_key"]

_CACHE = "_cf_cache"


def source_key(params: Sequence[torch.Tensor]) -> tuple[tuple[int, int, torch.dtype], ...]:
    """Identity of the parameters' current values: storage, in-place version and dtype.

    Tensors created under `torch.inference_mode` have no version counter; their storage and
    dtype still identify them (`load_state_dict` outside inference mode replaces them).
    """
    return tuple((p.data_ptr(), 0 if p.is_inference() else p._version, p.dtype) for p in params)


_PROBES = 8


def probe_views(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Views of a few values (~8, spread over it) of each weight matrix or kernel among `params`: what
    `source_key` cannot see, read again on every call (`torch.cat` of them: ~1 us per matrix).

    An update through `.data` (``p.data.copy_(new)``, an EMA's ``p.data.mul_(d).add_(q.data, ...)``, a LoRA merge
    ``w.data += b @ a``, written that way in many training scripts) moves no version counter and keeps the
    storage, so the packed copies were kept: measured, `encode_image` off by 143.8 after a model soup, and a
    zero-shot classifier cached the old weights' class embeddings under the new ones' fingerprint. Such an
    update changes these values. Not seen: one that changes only elements between them, or only biases and
    norms (vectors are left out: they are updated with their matrices), or a non-contiguous parameter's."""
    views = []
    for p in params:
        if p.dim() >= 2 and p.is_contiguous() and p.numel():
            views.append(p.detach().view(-1)[:: max(1, p.numel() // _PROBES)])
    return views


def _probe(views: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(views) if views else torch.empty(0)


def _mark_fused_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """After any optimizer's step: a fused step (``fused=True``: one kernel per group, clipforge's own trainer
    uses it) updates parameters in place without moving their version counters, which `source_key` (and
    autograd's saved-tensor check) rely on; move them, as every other in-place update does. Measured: after
    fused AdamW steps, a model's per-epoch check kept scoring its packed copy of the old weights (a
    checkpoint named 2.8% scored 9.6%)."""
    if any(group.get("fused") for group in optimizer.param_groups):
        torch.autograd.graph.increment_version([p for group in optimizer.param_groups for p in group["params"]])


register_optimizer_step_post_hook(_mark_fused_step)  # process-wide, once (module import)

_FAST_DTYPES = (torch.float32, torch.bfloat16)


def fast_dtype(module: nn.Module, x: torch.Tensor, param: torch.Tensor, *, tower: bool) -> torch.dtype | None:
    """The dtype one call of `module`'s fast path computes in, or None to run the reference forward.

    None when training, when autograd must see the call (grad enabled and the input or `param`
    needs a gradient: the packed weights are detached copies), under an autocast other than
    bf16 on the CPU, and off the CPU for modules whose fast path is CPU-only (`cpu_only`: the
    plain model from `clipforge.load`). Under `torch.autocast("cpu", torch.bfloat16)` it is
    bf16 (weights cast once and cached, not per call as autocast does). Otherwise a tower
    (`tower=True`) computes in its `compute_dtype` and a block follows its input's dtype.
    """
    if not isinstance(x, torch.Tensor):  # a list of strings, a PIL image: the reference path names the mistake
        return None
    if module.training or (torch.is_grad_enabled() and (x.requires_grad or param.requires_grad)):
        return None
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None  # oneDNN's packed ops cannot be traced or compiled; the reference forward can
    device = x.device.type
    if (param.dtype not in (torch.float32, getattr(module, "compute_dtype", torch.float32))
            and not torch.is_autocast_enabled(device)):
        return None  # `.half()`, `.to(torch.bfloat16)`, `.double()` of a loaded model: the reference computes in
        # the weights' dtype (a model `prepare` cast to bf16 computes in bf16: its `compute_dtype`)
    if device != "cpu" and getattr(module, "cpu_only", False):
        return None
    if torch.is_autocast_enabled(device):
        if device != "cpu" or torch.get_autocast_dtype("cpu") != torch.bfloat16:
            return None
        # Without native bf16 matmuls (AVX512-BF16/AMX) oneDNN emulates them, several times slower
        # than fp32: compute in fp32 there (closer to the fp32 numbers, never further); the
        # towers still hand back autocast's dtype (`autocast_output`).
        return torch.bfloat16 if bf16_supported() else torch.float32
    if tower:
        return getattr(module, "compute_dtype", torch.float32)
    return x.dtype if x.dtype in _FAST_DTYPES else None


def autocast_output(x: torch.Tensor, device_type: str) -> torch.Tensor:
    """A tower's output in the dtype the reference gives under the active autocast (bf16)."""
    if torch.is_autocast_enabled(device_type) and x.is_floating_point():
        return x.to(torch.get_autocast_dtype(device_type))
    return x


@contextlib.contextmanager
def autocast_off(x: torch.Tensor) -> Iterator[None]:
    """Run a fast path with autocast off (it chose its dtype already; autocast would re-cast per call)."""
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            yield
    else:
        yield


def pack_linear(weight: torch.Tensor, dtype: torch.dtype, fused: bool) -> torch.Tensor:
    """`weight` [out, in] in `dtype`, reordered for oneDNN when `fused`."""
    weight = weight.detach().to(dtype).contiguous()
    return torch.ops.mkldnn._reorder_linear_weight(weight) if fused else weight


def pack_conv(weight: torch.Tensor, dtype: torch.dtype, fused: bool, padding: list[int], stride: list[int],
              input_size: list[int] | None = None) -> torch.Tensor:
    """A convolution weight in `dtype`, reordered for oneDNN (for inputs of `input_size`) when `fused`."""
    weight = weight.detach().to(dtype).contiguous()
    if not fused:
        return weight
    return torch.ops.mkldnn._reorder_convolution_weight(weight, padding, stride, [1, 1], 1, input_size)


def linear(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor], fused: bool) -> torch.Tensor:
    """``x @ w.T + b`` with a weight from `pack_linear`."""
    if fused:
        return torch.ops.mkldnn._linear_pointwise(x, wb[0], wb[1], "none", [], "")
    return torch.nn.functional.linear(x, wb[0], wb[1])


class InferenceModule(nn.Module):
    """Mixin for the inference classes `prepare` swaps in: a self-invalidating packed cache.

    Subclasses implement `_cf_sources()` (the parameters the cache derives from) and
    `_cf_build(read, dtype, fused)` (build the cache in `dtype` from ``read(p)``, the fp32 value
    of parameter `p`).
    Packing always starts from the parameters as they are, so a copy of a prepared model
    computes exactly what the original does.
    """

    def _cf_sources(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype, fused: bool) -> Any:
        raise NotImplementedError

    def _cf_packed(self, dtype: torch.dtype | None = None, fused: bool | None = None) -> Any:
        """The packed weights for `dtype` (default `compute_dtype`) and `fused` (default `self.fused`).

        One cache entry per (dtype, fused): the plain model keeps fp32 and, once used under
        autocast, bf16 copies; each is rebuilt when a source parameter changes.
        """
        dtype = getattr(self, "compute_dtype", torch.float32) if dtype is None else dtype
        fused = bool(getattr(self, "fused", False)) if fused is None else fused
        cache = self.__dict__.setdefault(_CACHE, {})
        entry = cache.get((dtype, fused))
        sources = self._cf_sources()
        key = source_key(sources)
        # the views read the parameters' storage, which an equal key says is the one they were made on
        if entry is None or entry[0] != key or not torch.equal(_probe(entry[2]), entry[3]):  # NaN: rebuilt per call
            if fused:  # the oneDNN path runs on the CPU: its activations reuse freed memory from now on
                retain_freed_memory()
            views = probe_views(sources)
            entry = (key, self._cf_build(lambda p: p.detach().float(), dtype, fused), views, _probe(views).clone())
            cache[(dtype, fused)] = entry
        return entry[1]

    def _cf_clear(self) -> None:
        self.__dict__.pop(_CACHE, None)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Any:
        """`.half()`, `.to(...)`, `.cuda()`, ...: parameters given new storage leave entries no call uses again,
        which (with their probe views, holding the old storage) stayed for the module's life: dropped here. A
        conversion that changes nothing (``model.to("cpu")`` before every batch, a common habit) keeps them: clearing
        it made each call repack (encode_image 3.9 -> 16.7 ms on one image)."""
        if _CACHE not in self.__dict__:
            return super()._apply(fn, recurse)
        before = source_key(self._cf_sources())
        result = super()._apply(fn, recurse)
        if source_key(self._cf_sources()) != before:
            self._cf_clear()
        return result

    def __getstate__(self) -> dict[str, Any]:
        # oneDNN's opaque tensors cannot be copied or pickled; they are rebuilt on first use.
        state = self.__dict__.copy()
        state.pop(_CACHE, None)
        return state
