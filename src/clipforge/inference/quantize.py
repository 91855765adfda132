"""Dynamic int8 quantization of the Linear layers (`torch.ao.quantization.quantize_dynamic`).

Weights are stored as int8 with a per-tensor scale; activations are quantized on the fly per
batch. The Transformer blocks keep their query/key/value projection as a bare parameter
(`attn.in_proj_weight`, OpenAI's layout), which quantize_dynamic cannot see, so a quantized
copy first gives each attention an equivalent `nn.Linear` (same numbers) so that all four of
a block's matmuls are quantized. The original model is not touched; the copy is for
inference only and its state dict is not a CLIP checkpoint.

How much accuracy this costs depends on the weights (trained CLIP weights have outlier
channels that per-tensor int8 handles poorly), so measure it: `feature_cosine` compares
features of two models on the same inputs.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.models.layers import SelfAttention, attend

__all__ = ["QuantizableSelfAttention", "feature_cosine", "quantize_dynamic_int8"]


class QuantizableSelfAttention(nn.Module):
    """`SelfAttention` with its packed q/k/v projection held as an `nn.Linear`."""

    def __init__(self, source: SelfAttention) -> None:
        super().__init__()
        width = source.in_proj_weight.shape[1]
        self.heads = source.heads
        self.in_proj = nn.Linear(width, 3 * width)
        with torch.no_grad():
            self.in_proj.weight.copy_(source.in_proj_weight.float())
            self.in_proj.bias.copy_(source.in_proj_bias.float())
        self.out_proj = source.out_proj

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.in_proj(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        return self.out_proj(attend(qkv, causal, attn_mask).transpose(1, 2).reshape(batch, length, width))


def quantize_dynamic_int8(model: nn.Module, *, include_attention: bool = True) -> nn.Module:
    """An int8-dynamic copy of an fp32 `model` (eval mode); `model` itself is unchanged.

    `include_attention=False` leaves the q/k/v projections in fp32 (only `nn.Linear` modules
    already present get quantized).
    """
    if any(p.dtype != torch.float32 for p in model.parameters() if p.is_floating_point()):
        raise ValueError("quantize_dynamic_int8 needs an fp32 model (quantize before any bf16 prepare)")
    quantized = copy.deepcopy(model).float().eval()
    quantized.requires_grad_(False)
    if include_attention:
        for module in list(quantized.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, SelfAttention):
                    setattr(module, name, QuantizableSelfAttention(child))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(quantized, {nn.Linear}, dtype=torch.qint8)


@torch.inference_mode()
def feature_cosine(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Row-wise cosine similarity of two feature batches: min and mean."""
    cos = F.cosine_similarity(reference.float(), other.float(), dim=-1)
    return {"min": float(cos.min()), "mean": float(cos.mean())}
