"""Inference forward passes for the Transformer towers (ViT image tower, causal text tower).

`prepare` swaps these classes in for the model's own (`module.__class__ = ...`): parameters,
names and the state dict stay exactly as they were; only `forward` changes. Three savings:

1. Weights pre-packed for oneDNN once (see `_packing`), with bias, activation and the residual
   add fused into the matmul: a block is LN, 1 matmul, attention, 1 matmul+add, LN,
   1 matmul+act, 1 matmul+add; no separate elementwise passes over the activations.
   QuickGELU is ``h * sigmoid(1.702 h)`` = ``silu(1.702 h) / 1.702``, and oneDNN fuses Swish
   (silu), so `c_fc` is packed pre-scaled by 1.702 and `c_proj` by 1/1.702.
2. Only the rows that are read leave the last block: the class token of the ViT, each prompt's
   EOT token of the text tower. Keys and values still come from every position, so this is the
   same arithmetic for the rows that matter and none for the rest (about 6% of a tower).
3. (text) The tower already stops at the batch's longest prompt (`CLIP.encode_text`); the
   last block's single query per prompt then needs an explicit "keys up to my EOT" mask.

In training mode every class falls back to its parent's forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipforge.inference._attention import attention
from clipforge.inference._packing import (
    InferenceModule,
    autocast_off,
    autocast_output,
    fast_dtype,
    pack_linear,
)
from clipforge.inference._packing import linear as _linear
from clipforge.inference._threads import split_batch, worth_splitting
from clipforge.models.clip import CLIP
from clipforge.models.layers import LayerNorm, ResidualAttentionBlock, Transformer
from clipforge.models.vit import VisionTransformer

__all__ = ["InferenceBlock", "InferenceCLIP", "InferenceLayerNorm", "InferenceTransformer",
           "InferenceVisionTransformer", "linear_act", "linear_add", "patch_features"]

QUICK_GELU_ALPHA = 1.702


class InferenceLayerNorm(LayerNorm):
    """LayerNorm on bf16 activations with fp32 weights in one kernel.

    PyTorch's CPU layer_norm accumulates in fp32 and takes fp32 weights with bf16 input, so this
    equals the parent's ``float() -> layer_norm -> to(bf16)`` without the two extra casts. CUDA's
    wants one dtype: there `prepare` casts the weights to bf16 and the same single kernel runs (its
    statistics are fp32 too); a weight of another dtype than the input takes the parent's path. The
    parent's forward runs when training, when autograd must see the call, and under autocast
    (the fast towers switch autocast off around their own LayerNorms).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.weight is None or x.dtype not in (torch.float32, torch.bfloat16) or self.training
                or torch.is_autocast_enabled(x.device.type)
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                or (x.dtype != self.weight.dtype and x.device.type != "cpu")):
            return super().forward(x)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


@dataclass
class _BlockWeights:
    dtype: torch.dtype
    fused: bool
    qkv: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    fc: tuple[torch.Tensor, torch.Tensor]
    proj: tuple[torch.Tensor, torch.Tensor]


def linear_add(x: torch.Tensor, residual: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor],
                fused: bool) -> torch.Tensor:
    if fused:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, wb[0], wb[1], "add")
    return residual + F.linear(x, wb[0], wb[1])


def linear_act(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor], fused: bool, activation: str) -> torch.Tensor:
    """c_fc + the block's activation: QuickGELU (OpenAI), exact GELU (open_clip's GELU models, BERT) or
    ReLU (NLLB's encoder)."""
    if activation == "relu":
        if fused:
            return torch.ops.mkldnn._linear_pointwise(x, wb[0], wb[1], "relu", [], "")
        return F.relu(F.linear(x, wb[0], wb[1]))
    if activation in ("gelu", "gelu_tanh"):  # exact GELU, or SigLIP's tanh approximation
        approximate = "tanh" if activation == "gelu_tanh" else "none"
        if fused:
            return torch.ops.mkldnn._linear_pointwise(x, wb[0], wb[1], "gelu", [], approximate)
        return F.gelu(F.linear(x, wb[0], wb[1]), approximate=approximate)
    return _linear_quick_gelu(x, wb, fused)


def _linear_quick_gelu(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor], fused: bool) -> torch.Tensor:
    """c_fc packed pre-scaled by 1.702 (`InferenceBlock._cf_build`): silu(1.702 h) = 1.702 * quick_gelu(h),
    and c_proj by 1/1.702. oneDNN fuses the silu into the matmul; elsewhere (CUDA) it is one elementwise
    kernel instead of quick_gelu's three (H200, [256 x 197, 3072] bf16: 162 vs 580 us)."""
    if fused:
        return torch.ops.mkldnn._linear_pointwise(x, wb[0], wb[1], "swish", [], "")
    return F.silu(F.linear(x, wb[0], wb[1]))


def _scaled_pair(w_fc: torch.Tensor, w_proj: torch.Tensor, dtype: torch.dtype,
                 fused: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """fp32 `c_fc` x 1.702 and `c_proj` x (1 / 1.702), packed first and scaled in place in oneDNN's layout.

    Scaling the packed copy instead of the parameter saves one fresh copy of the block's two largest
    matrices: packing ViT-B/32's twelve image blocks, 148 -> 122 ms, paid by every command's first
    batch. Elementwise products are the same in any layout (the layout's zero padding stays zero).
    (None, None) unless both copies are oneDNN's own tensors, never the parameters themselves.
    """
    if w_fc.dtype != torch.float32 or w_proj.dtype != torch.float32:
        return None, None
    fc, proj = pack_linear(w_fc, dtype, fused), pack_linear(w_proj, dtype, fused)
    if not (fc.is_mkldnn and proj.is_mkldnn):
        return None, None
    return fc.mul_(QUICK_GELU_ALPHA), proj.mul_(1.0 / QUICK_GELU_ALPHA)


class InferenceBlock(InferenceModule, ResidualAttentionBlock):
    """A residual attention block running on packed, fused weights (see module docstring)."""

    compute_dtype: torch.dtype = torch.float32
    fused: bool = True
    cpu_only: bool = False

    def _cf_sources(self) -> list[torch.Tensor]:
        attn, mlp = self.attn, self.mlp
        return [attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias,
                mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight, mlp.c_proj.bias]

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                  fused: bool) -> _BlockWeights:
        # Unscaled weights are packed straight from the parameters (`pack_linear` casts once when the
        # dtype differs), not through their fp32 value: same numbers, two fewer copies of each.
        w_qkv, b_qkv, w_out, b_out, w_fc, b_fc, w_proj, b_proj = (p.detach() for p in self._cf_sources())

        def pair(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return pack_linear(w, dtype, fused), b.to(dtype).contiguous()

        if getattr(self, "activation", "quick_gelu") != "quick_gelu":
            return _BlockWeights(dtype, fused, pair(w_qkv, b_qkv), pair(w_out, b_out), pair(w_fc, b_fc),
                                 pair(w_proj, b_proj))
        b_fc = read(b_fc) * QUICK_GELU_ALPHA
        fc, proj = _scaled_pair(w_fc, w_proj, dtype, fused) if dtype == torch.float32 and fused else (None, None)
        if fc is None or proj is None:
            # Scaled in the parameter's own dtype when that is fp32 or the packing dtype: bf16 * scalar is
            # computed in fp32 and rounded once, exactly `read(w) * a` then `.to(bf16)`, without two fp32
            # copies of the block's two largest matrices (hundreds of MB of fresh pages for ViT-B/32).
            own = w_fc.dtype in (torch.float32, dtype) and w_proj.dtype in (torch.float32, dtype)
            fc = pack_linear((w_fc if own else read(w_fc)) * QUICK_GELU_ALPHA, dtype, fused)
            proj = pack_linear((w_proj if own else read(w_proj)) / QUICK_GELU_ALPHA, dtype, fused)
        return _BlockWeights(dtype, fused, pair(w_qkv, b_qkv), pair(w_out, b_out),
                             (fc, b_fc.to(dtype).contiguous()), (proj, b_proj.to(dtype).contiguous()))

    def _weights(self, x: torch.Tensor) -> _BlockWeights | None:
        dtype = fast_dtype(self, x, self.attn.in_proj_weight, tower=False)
        if dtype is None:
            return None
        return self._cf_packed(dtype, self.fused and x.device.type == "cpu")

    def forward(self, x: torch.Tensor, causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        w = None if attn_mask is not None else self._weights(x)  # a caller's own mask: the reference computes it
        if w is None:
            return super().forward(x, causal=causal, attn_mask=attn_mask)
        with autocast_off(x):
            return self._forward(x.to(w.dtype), w, causal)

    def _forward(self, x: torch.Tensor, w: _BlockWeights, causal: bool) -> torch.Tensor:
        batch, length, width = x.shape
        heads = self.attn.heads
        qkv = _linear(self.ln_1(x), w.qkv, w.fused)
        qkv = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        out = attention(qkv[0], qkv[1], qkv[2], causal)
        out = out.transpose(1, 2).reshape(batch, length, width)
        x = linear_add(out, x, w.out, w.fused)
        act = getattr(self, "activation", "quick_gelu")
        return linear_add(linear_act(self.ln_2(x), w.fc, w.fused, act), x, w.proj, w.fused)

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """The block's output at one position per sequence (`rows`: LongTensor [N]) -> [N, width].

        Keys and values come from every position; with `causal`, row i attends to positions
        <= rows[i], which is what the full causal pass gives that row.
        """
        w = self._weights(x)
        if w is None:
            full = super().forward(x, causal=causal)
            return full[torch.arange(x.shape[0], device=x.device), rows]
        with autocast_off(x):
            return self._forward_rows(x.to(w.dtype), rows, w, causal)

    def _forward_rows(self, x: torch.Tensor, rows: torch.Tensor, w: _BlockWeights, causal: bool) -> torch.Tensor:
        batch, length, width = x.shape
        heads = self.attn.heads
        pick = torch.arange(batch, device=x.device)
        qkv = _linear(self.ln_1(x), w.qkv, w.fused).view(batch, length, 3, heads, width // heads)
        q = qkv[pick, rows, 0].unsqueeze(2)  # [N, heads, 1, head_dim]
        k, v = qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        mask = None
        if causal:
            mask = (torch.arange(length, device=x.device) <= rows.unsqueeze(1)).view(batch, 1, 1, length)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).reshape(batch, width)
        y = linear_add(out, x[pick, rows], w.out, w.fused)
        act = getattr(self, "activation", "quick_gelu")
        return linear_add(linear_act(self.ln_2(y), w.fc, w.fused, act), y, w.proj, w.fused)


def patch_features(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor | None], patch: int, grid: int,
                   dtype: torch.dtype, fused: bool) -> torch.Tensor:
    """A stride-`patch` patch convolution as one packed matmul: images [N, C, H, W] -> [N, grid*grid, out].

    `wb`: the convolution's weight flattened to [out, C * patch * patch] ((channel, row, col) order) and
    packed, and its bias or None. Only the top-left grid x grid patches are read, as the strided
    convolution reads them when the side is not a multiple of the patch (SO400M/14 at 384 px).
    """
    batch, channels = x.shape[:2]
    x = x[:, :, :grid * patch, :grid * patch].to(dtype)
    x = x.reshape(batch, channels, grid, patch, grid, patch).permute(0, 2, 4, 1, 3, 5)
    return _linear(x.reshape(batch, grid * grid, channels * patch * patch), wb, fused)


class InferenceTransformer(Transformer):
    """`forward(x, rows=None)`: with `rows`, the last block returns only those positions."""

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attn_mask is not None:  # open_clip's call with its own mask: every block computes it as the reference
            out = super().forward(x, attn_mask=attn_mask)
            return out if rows is None else out[torch.arange(x.shape[0], device=x.device), rows]
        if rows is None:
            return super().forward(x)
        if self.training:
            return super().forward(x)[torch.arange(x.shape[0], device=x.device), rows]
        blocks = list(self.resblocks)
        for block in blocks[:-1]:
            x = block(x, causal=self.causal)
        last = blocks[-1]
        if isinstance(last, InferenceBlock):
            return last.forward_rows(x, rows, causal=self.causal)
        return last(x, causal=self.causal)[torch.arange(x.shape[0], device=x.device), rows]


class InferenceVisionTransformer(InferenceModule, VisionTransformer):
    """ViT with the patch embedding as one packed matmul and a class-token-only last block.

    A stride-P PxP convolution is a matmul over non-overlapping patches; oneDNN's direct
    convolution handles this shape poorly (~10% of a batch-1 forward), a reshape plus a
    packed matmul does not.
    """

    compute_dtype: torch.dtype = torch.float32
    fused: bool = True
    cpu_only: bool = False

    def _cf_sources(self) -> list[torch.Tensor]:
        return [self.conv1.weight]

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                  fused: bool) -> tuple[torch.Tensor, None]:
        weight = read(self.conv1.weight).flatten(1)  # [width, 3 * P * P], (channel, row, col) order
        return pack_linear(weight, dtype, fused), None

    def _patches(self, x: torch.Tensor, dtype: torch.dtype, fused: bool) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height != self.input_resolution or width != self.input_resolution:
            raise ValueError(f"expected images of {self.input_resolution}x{self.input_resolution}, got {height}x{width}")
        p = self.patch_size
        return patch_features(x, self._cf_packed(dtype, fused), p, height // p, dtype, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = fast_dtype(self, x, self.conv1.weight, tower=True)
        if dtype is None:
            return super().forward(x)
        device = x.device.type
        fused = self.fused and device == "cpu"
        with autocast_off(x):
            if x.shape[0] > 1:  # pack here, once, not in every slice's thread
                self._cf_packed(dtype, fused)
                for block in self.transformer.resblocks:
                    if isinstance(block, InferenceBlock):
                        block._cf_packed(dtype, block.fused and device == "cpu")
            out = split_batch(lambda images: self._forward(images, dtype, fused), x)
        return autocast_output(out, device)

    def _forward(self, x: torch.Tensor, dtype: torch.dtype, fused: bool) -> torch.Tensor:
        x = self._patches(x, dtype, fused)  # [N, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        x = self.transformer(self.ln_pre(x), rows=rows)
        return self.ln_post(x) @ self.proj.to(x.dtype)


class InferenceCLIP(CLIP):
    """CLIP whose text tower stops at the longest prompt and finishes only the EOT rows.

    Its batch is split across the cores (`split_batch`), as the image towers' are, when a slice's
    matmuls are large enough to pay (`worth_splitting`): at batch 32 on a 2-core AVX512-BF16 EPYC, medians
    of interleaved calls in one process, ViT-B/32 at 77 tokens went from 89.3% to 93.9% of the fp32 roof
    and from 85.5% to 86.7% of the bf16 roof, while short bf16 prompts (15 tokens) ran faster whole. Each
    slice stops at its own longest prompt.
    """

    compute_dtype: torch.dtype = torch.float32
    cpu_only: bool = False

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if normalize:  # open_clip's keyword
            return F.normalize(self.encode_text(text), dim=-1)
        dtype = fast_dtype(self, text, self.token_embedding.weight, tower=True)
        if dtype is None or not isinstance(self.transformer, InferenceTransformer):
            return super().encode_text(text)
        if text.numel() == 0:
            return torch.zeros(text.shape[0], self.embed_dim, dtype=dtype, device=text.device)
        with autocast_off(text):
            longest = self.text_length(text)  # checked: ids from another tokenizer are one clear error
            if worth_splitting(text.shape[0], longest, int(self.transformer.width), dtype):
                for block in self.transformer.resblocks:  # pack here, once, not in every slice's thread
                    if isinstance(block, InferenceBlock):
                        block._cf_packed(dtype, block.fused and text.device.type == "cpu")
                out = split_batch(lambda prompts: self._text_features(prompts, dtype), text)
            else:  # short prompts: the whole batch on every thread is faster (`SPLIT_MIN_MACS`)
                out = self._text_features(text, dtype)
        return autocast_output(out, text.device.type)

    def _text_features(self, text: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The projected EOT features of `text`, through its own longest prompt (one slice of `split_batch`:
        each prompt's features are what the whole batch gives it, within the truncation's 1e-5)."""
        eot = text.argmax(dim=-1)
        length = int(eot.max().item()) + 1
        x = self.token_embedding(text[:, :length]).to(dtype)
        x = x + self.positional_embedding[:length].to(dtype)
        x = self.ln_final(self.transformer(x, rows=eot))
        return x @ self.text_projection.to(x.dtype)
