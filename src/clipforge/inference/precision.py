"""`prepare(model, precision)`: turn a CLIP into a fast inference model, fp32 or bf16, in place.

Why a separate step instead of faster model classes: the fast path needs things training must
not have (weights pre-packed in oneDNN's layout, BatchNorm folded into convolutions, the last
block computing only the rows that are read), so `prepare` swaps in inference subclasses of the
model's modules (`fast_transformer`, `fast_resnet`). Parameters, their names and the state
dict are untouched, so fingerprints, `load_state_dict` and saving keep working; packed copies
rebuild themselves when a parameter changes.

bf16: matmul and convolution weights are stored in bf16 (cast once here, not per call as
autocast does); `logit_scale`, LayerNorm weights on the CPU (on CUDA they are bf16: see
`_keeps_fp32`) and all accumulation (oneDNN and cuBLAS matmuls, LayerNorm statistics, attention
softmax) stay fp32. Activations between layers are bf16.
It is offered only on CPUs with native bf16 (AVX512-BF16/AMX): elsewhere it is emulated and
slower than fp32. fp16 is never used on CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from clipforge.errors import UserError
from clipforge.inference.cpu import bf16_supported, no_bf16_reason, onednn_available
from clipforge.inference.fast_encoder import InferenceChineseCLIP, InferenceHFTextTower
from clipforge.inference.fast_family import (
    InferenceAttentionPoolHead,
    InferenceAvgPoolVisionTransformer,
    InferenceFamilyCLIP,
    InferenceMapVisionTransformer,
)
from clipforge.inference.fast_resnet import (
    InferenceAttentionPool2d,
    InferenceBottleneck,
    InferenceModifiedResNet,
)
from clipforge.inference.fast_transformer import (
    InferenceBlock,
    InferenceCLIP,
    InferenceLayerNorm,
    InferenceTransformer,
    InferenceVisionTransformer,
)
from clipforge.models.chinese_clip import ChineseCLIP
from clipforge.models.clip import CLIP
from clipforge.models.family import AttentionPoolHead, FamilyCLIP, MapVisionTransformer
from clipforge.models.family_clipa import AvgPoolVisionTransformer
from clipforge.models.family_hf import HFTextTower
from clipforge.models.layers import LayerNorm, ResidualAttentionBlock, Transformer
from clipforge.models.resnet import AttentionPool2d, Bottleneck, ModifiedResNet
from clipforge.models.vit import VisionTransformer

__all__ = ["DTYPES", "PRECISIONS", "Bf16UnsupportedError", "enable_fast_forward", "has_fast_forward", "is_prepared",
           "precision_of", "prepare", "resolve_precision"]

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}

_SWAPS: dict[type, type] = {
    CLIP: InferenceCLIP,
    VisionTransformer: InferenceVisionTransformer,
    Transformer: InferenceTransformer,
    ResidualAttentionBlock: InferenceBlock,
    LayerNorm: InferenceLayerNorm,
    ModifiedResNet: InferenceModifiedResNet,
    Bottleneck: InferenceBottleneck,
    AttentionPool2d: InferenceAttentionPool2d,
    MapVisionTransformer: InferenceMapVisionTransformer,
    AvgPoolVisionTransformer: InferenceAvgPoolVisionTransformer,
    AttentionPoolHead: InferenceAttentionPoolHead,
    FamilyCLIP: InferenceFamilyCLIP,
    ChineseCLIP: InferenceChineseCLIP,
    HFTextTower: InferenceHFTextTower,
}
_PACKED = (InferenceBlock, InferenceVisionTransformer, InferenceModifiedResNet, InferenceBottleneck,
           InferenceAttentionPool2d, InferenceChineseCLIP, InferenceHFTextTower, InferenceMapVisionTransformer,
           InferenceAttentionPoolHead, InferenceAvgPoolVisionTransformer)
_CONFIGURED = (*_PACKED, InferenceCLIP, InferenceFamilyCLIP)
_ATTR = "_cf_precision"


class Bf16UnsupportedError(UserError, RuntimeError):
    """bf16 was asked for on a CPU without native bf16 matmuls."""


def resolve_precision(precision: str) -> str:
    """Validate a precision name ("fp32", "bf16"; "float32"/"bfloat16" accepted); fp16 is refused."""
    name = {"float32": "fp32", "bfloat16": "bf16", "float": "fp32"}.get(str(precision).lower(), str(precision).lower())
    if name in ("fp16", "float16", "half"):
        raise ValueError("fp16 is not supported on CPU (no fast fp16 matmul: ~1 GFLOP/s); use 'bf16' or 'fp32'")
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return name


def is_prepared(model: nn.Module) -> bool:
    return getattr(model, _ATTR, None) is not None


def precision_of(model: nn.Module) -> str | None:
    """The precision `prepare` gave this model, or None for an unprepared model."""
    return getattr(model, _ATTR, None)


def _keeps_fp32(module: nn.Module, param: torch.Tensor) -> bool:
    # 0-dim scalars (logit_scale) are not matmul operands and a bf16 exp(logit_scale) would shift every
    # probability. LayerNorm affine weights stay fp32 on the CPU, whose layer_norm takes bf16 input with
    # fp32 weights in one kernel; CUDA's layer_norm wants one dtype (bf16 input with fp32 weights is an
    # error there, as in transformers' embedding LayerNorms), so on a GPU they are cast with the rest:
    # its bf16 kernel still keeps the statistics in fp32, and one kernel instead of the fp32 round trip
    # is 2.8x faster (H200, [256 x 197, 768]: 113 vs 312 us).
    return param.dim() == 0 or (isinstance(module, nn.LayerNorm) and param.device.type == "cpu")


def prepare(model: nn.Module, precision: str = "fp32", *, fused: bool | None = None,
            require_native_bf16: bool = True, pack: bool = True) -> nn.Module:
    """Make `model` an inference model in `precision` ("fp32" or "bf16"), in place; returns it.

    The model is put in eval mode with gradients off. `fused=None` uses oneDNN's packed, fused
    kernels when torch has them and the model is on the CPU (False: same forward structure
    with plain torch ops). bf16 raises `Bf16UnsupportedError` on CPUs without native bf16
    unless `require_native_bf16=False`. Copy the model first (`copy.deepcopy`) to keep an
    unprepared one; a prepared model cannot be re-prepared to another precision. `pack=False`
    leaves the packing to each tower's first call (what `BatchEncoder` does: `clipforge embed`
    never runs the text tower, so it never pays for packing it).
    """
    precision = resolve_precision(precision)
    previous = precision_of(model)
    if previous is not None and previous != precision:
        raise ValueError(f"model was already prepared for {previous}; prepare a fresh copy for {precision}")
    params = list(model.parameters())
    on_cpu = all(p.device.type == "cpu" for p in params)
    if precision == "bf16" and require_native_bf16 and on_cpu and not bf16_supported():
        raise Bf16UnsupportedError(
            f"{no_bf16_reason()}; bf16 would be emulated and slower than fp32 - use precision='fp32'")
    dtype = DTYPES[precision]
    use_fused = (onednn_available() and on_cpu) if fused is None else bool(fused and onednn_available())
    model.eval()
    model.requires_grad_(False)

    unread = _unread_tensors(model)  # a tower `load_model(towers=...)` did not read: garbage, never cast
    for module in model.modules():
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if (tensor.is_floating_point() and tensor.dtype != dtype and not _keeps_fp32(module, tensor)
                    and id(tensor) not in unread):
                tensor.data = tensor.data.to(dtype)

    _swap_classes(model, dtype, use_fused, cpu_only=False)
    for module in model.modules() if pack else ():  # pack now, not on the first call
        if isinstance(module, _PACKED) and not any(id(p) in unread for p in module._cf_sources()):
            module._cf_packed()
    setattr(model, _ATTR, precision)
    return model


def _unread_tensors(model: nn.Module) -> set[int]:
    """ids of the tensors of the towers `clipforge.api.load_model(..., towers=...)` left unread."""
    from clipforge.weights.towers import TOWER_TENSORS, missing_towers

    missing = missing_towers(model)
    return {id(t) for name, t in (*model.named_parameters(), *model.named_buffers())
            if any(TOWER_TENSORS[tower](name) for tower in missing)}


def _swap_classes(model: nn.Module, dtype: torch.dtype, fused: bool, cpu_only: bool) -> None:
    for module in model.modules():
        swap = _SWAPS.get(type(module))
        if swap is not None:
            module.__class__ = swap
        if isinstance(module, _CONFIGURED):
            module.compute_dtype = dtype
            module.cpu_only = cpu_only
            if isinstance(module, _PACKED):
                module.fused = fused


def has_fast_forward(model: nn.Module) -> bool:
    """True when `model`'s modules carry the inference forward passes (`enable_fast_forward` or `prepare`)."""
    return any(isinstance(m, _CONFIGURED) for m in model.modules())


def enable_fast_forward(model: nn.Module) -> nn.Module:
    """Give a plain fp32 model the fast inference forward passes, changing nothing else; returns it.

    What `clipforge.load` returns has this: batch-1 and autocast speed without a `prepare` call.
    Unlike `prepare` it keeps the parameters (dtype, `requires_grad`, values, state dict), the
    train/eval mode, and autograd: the fast path runs only in eval mode when autograd does not
    need the call (`torch.no_grad`/`inference_mode`, or nothing requiring a gradient), on the
    CPU; otherwise each module runs its reference forward. Packed weights are built on the
    first fast call (fp32; bf16 too once the model runs under `torch.autocast("cpu",
    torch.bfloat16)`, whose per-call weight casts this replaces) and rebuilt whenever a
    parameter changes, e.g. after an optimizer step. They cost memory: about one extra copy of
    the weights per precision used.
    """
    if is_prepared(model):
        return model
    _swap_classes(model, torch.float32, onednn_available(), cpu_only=True)
    return model
