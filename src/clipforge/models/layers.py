"""Transformer building blocks shared by the text tower and the ViT image tower.

Parameter names (`attn.in_proj_weight`, `mlp.c_fc`, `ln_1`, ...) follow OpenAI's checkpoints
so their state dicts load with `strict=True`. Attention goes through
`F.scaled_dot_product_attention` (fused kernels, flash/efficient paths on GPU) instead of
`nn.MultiheadAttention`, and activations are batch-first, which SDPA wants.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the activation dtype, as in the originals.

    Half-precision LayerNorm loses too much on the variance; the result is cast back so the
    next matmul still runs in the low-precision dtype.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        out = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid GELU approximation the OpenAI checkpoints were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with `nn.MultiheadAttention`'s parameter layout."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, *key_value: torch.Tensor, causal: bool = False,
                attn_mask: torch.Tensor | None = None, need_weights: bool | None = None,
                key_padding_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> Any:
        """The towers' call, ``attn(x, causal=..., attn_mask=...)`` -> [N, L, D]. `attn_mask`: open_clip's mask
        (additive float, -inf where a query must not look, or bool, True where it may), [L, L] or broadcastable
        to [N, heads, L, L]; given, it is the whole mask and `causal` is not applied (open_clip passes its causal
        mask this way).

        Called as `nn.MultiheadAttention` (batch first) is, ``attn(query, key, value, need_weights=True, ...)``,
        as open_clip's blocks and attention-map code call it: ``(output, weights)`` with torch's meaning of every
        argument (see `multihead_attention`)."""
        if key_value or need_weights is not None or key_padding_mask is not None:
            if len(key_value) != 2:
                raise TypeError("attn(query, key, value, ...): nn.MultiheadAttention's call takes query, key and "
                                "value; the towers' call is attn(x, causal=..., attn_mask=...)")
            if is_causal and attn_mask is None:  # torch's hint, taken at its word
                attn_mask = torch.ones(x.shape[1], key_value[0].shape[1], dtype=torch.bool, device=x.device).triu_(1)
            return multihead_attention(self, x, *key_value, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                       need_weights=True if need_weights is None else need_weights,
                                       average_attn_weights=average_attn_weights)
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        return self.out_proj(attend(qkv, causal, attn_mask).transpose(1, 2).reshape(batch, length, width))


def multihead_attention(attn: SelfAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
                        attn_mask: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
                        need_weights: bool = True, average_attn_weights: bool = True,
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`nn.MultiheadAttention(batch_first=True)`'s forward on `attn`'s weights (the same parameter names):
    queries [N, L, D], keys and values [N, S, D] -> ([N, L, D], weights [N, L, S] averaged over heads, or
    [N, heads, L, S], or None). Masks mean what they mean there: a bool `attn_mask` ([L, S] or [N * heads,
    L, S]) and `key_padding_mask` ([N, S]) are True where a key is NOT attended; float ones are added to the
    scores. The probabilities are computed explicitly (what attention maps are made of), so this is the
    slower path; the towers' own call runs torch's fused kernel."""
    batch, length, width = query.shape
    heads, sources = attn.heads, key.shape[1]
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)

    def split(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, bias).view(batch, x.shape[1], heads, width // heads).transpose(1, 2)

    q, k, v = split(query, w_q, b_q), split(key, w_k, b_k), split(value, w_v, b_v)
    scores = (q * (width // heads) ** -0.5) @ k.transpose(-1, -2)
    for mask in (attn_mask, None if key_padding_mask is None else key_padding_mask.view(batch, 1, 1, sources)):
        if mask is None:
            continue
        if mask.dim() == 3:  # [N * heads, L, S]
            mask = mask.view(batch, heads, length, sources)
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(scores.dtype)
    weights = scores.softmax(dim=-1)
    out = attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, width))
    if not need_weights:
        return out, None
    return out, weights.mean(dim=1) if average_attn_weights else weights


def grid_rows(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] feature map -> [N, H * W, C] rows, sizes written out: ``flatten(2)`` exports to ONNX as a
    reshape to [N, C, -1], which onnxruntime cannot infer for an empty batch (0 elements)."""
    batch, channels, height, width = x.shape
    return x.reshape(batch, channels, height * width).transpose(1, 2)


def attend(qkv: torch.Tensor, causal: bool, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention over stacked [3, N, heads, L, d] queries, keys and values -> [N, heads, L, d]: the tower's
    causal flag, or the caller's `attn_mask` instead of it (see `SelfAttention.forward`). Shared by every
    attention module that keeps the reference's arithmetic (`SelfAttention`, the int8 copy's)."""
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(qkv.dtype)
        return F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
    return F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=causal)


def make_activation(name: str) -> nn.Module:
    """``"quick_gelu"`` (OpenAI's checkpoints), ``"gelu"`` (exact erf GELU, open_clip's default)
    or ``"gelu_tanh"`` (the tanh approximation SigLIP was trained with)."""
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    raise ValueError(f"unknown activation {name!r}; expected quick_gelu, gelu or gelu_tanh")


class ResidualAttentionBlock(nn.Module):
    """`activation` names the MLP's nonlinearity (kept as an attribute so fast paths can read it);
    `mlp_width` defaults to 4 x width."""

    def __init__(self, width: int, heads: int, mlp_width: int | None = None,
                 activation: str = "quick_gelu", norm_eps: float = 1e-5) -> None:
        super().__init__()
        hidden = mlp_width or width * 4
        self.activation = activation
        self.attn = SelfAttention(width, heads)
        self.ln_1 = LayerNorm(width, eps=norm_eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", make_activation(activation))
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))
        self.ln_2 = LayerNorm(width, eps=norm_eps)

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal, attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks over batch-first activations [N, L, D].

    `causal=True` is the text tower's mask; `grad_checkpointing` trades compute for memory
    during training (recomputing each block in the backward pass).
    """

    def __init__(self, width: int, layers: int, heads: int, causal: bool = False, *,
                 mlp_width: int | None = None, activation: str = "quick_gelu", norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.causal = causal
        self.grad_checkpointing = False
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, mlp_width, activation, norm_eps)
                                         for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`attn_mask` (open_clip's call, ``transformer(x, attn_mask=model.attn_mask)``) replaces the tower's own
        causal flag for this call (see `SelfAttention.forward`)."""
        for block in self.resblocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, self.causal, attn_mask, use_reentrant=False)
            else:
                x = block(x, causal=self.causal, attn_mask=attn_mask)
        return x

    def init_weights(self) -> None:
        """OpenAI's scheme: projections scaled down with depth so the residual stream stays O(1)."""
        proj_std = (self.width**-0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


def check_image_grid(images: torch.Tensor, resolution: int, patch_size: int) -> None:
    """Refuse images whose patch grid is not the tower's, in one line: past the convolution they failed deep inside
    ("The size of tensor a (65) must match the size of tensor b (17)"). A few extra pixels pass, as the strided
    convolution of the reference (open_clip's, timm's) leaves them unread."""
    if images.dim() != 4:
        raise ValueError(
            f"expected a batch of images [N, 3, {resolution}, {resolution}], got {tuple(images.shape)}"
        )
    height, width = (int(side) for side in images.shape[-2:])
    if height // patch_size != resolution // patch_size or width // patch_size != resolution // patch_size:
        raise ValueError(f"expected images of {resolution}x{resolution}, got {height}x{width}")
