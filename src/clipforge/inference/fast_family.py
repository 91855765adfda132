"""The families' ViTs on the fast path: the attention-pool one (SigLIP's image tower), and CLIPA's read by the
mean of its patch tokens.

Its blocks are `InferenceBlock`s already (`prepare` swaps every `ResidualAttentionBlock`); what the
tower adds:

1. `split_batch`, as `InferenceVisionTransformer` does for OpenAI's ViT: two intra-op threads over
   the whole batch wait at every one of the tower's joins, one single-threaded slice per core does
   not. Measured at batch 32 on a 2-core AVX512-BF16 EPYC (SigLIP 2 B/16, same run): bf16 3.30 ->
   3.02 s. The last block runs whole (the head reads every position).
2. The patch embedding as one packed matmul (`patch_features`), not oneDNN's strided convolution.
3. The head with its fixed query folded into its weights (`InferenceAttentionPoolHead`).

The families' own text towers (SigLIP's bidirectional one read at its last position, MetaCLIP 2's
causal one read at its first end token) get what `InferenceCLIP` gives OpenAI's: the last block
computes only the rows that are read (`InferenceFamilyCLIP`), and the batch is split across the cores
when its slices are large enough (`worth_splitting`).

Under `torch.autocast("cpu", torch.bfloat16)` (what `clipforge.load`'s plain model runs for bf16) the tower
turns autocast off, as OpenAI's fast ViT does, and computes in the dtype `fast_dtype` chose: autocast's
state is per thread, so the slices' worker threads would not see it, and the tower used to fall back to the
reference forward there, unsplit and with the convolution re-cast per call (measured in
`InferenceMapVisionTransformer`'s docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipforge.inference._packing import (
    InferenceModule,
    autocast_off,
    autocast_output,
    fast_dtype,
    pack_linear,
)
from clipforge.inference._packing import linear as packed_linear
from clipforge.inference._threads import split_batch, worth_splitting
from clipforge.inference.fast_transformer import (
    QUICK_GELU_ALPHA,
    InferenceBlock,
    InferenceTransformer,
    linear_act,
    linear_add,
    patch_features,
)
from clipforge.models.family import AttentionPoolHead, FamilyCLIP, MapVisionTransformer
from clipforge.models.family_clipa import AvgPoolVisionTransformer
from clipforge.models.tensor_checks import check_tokens_fit

__all__ = ["InferenceAttentionPoolHead", "InferenceAvgPoolVisionTransformer", "InferenceFamilyCLIP",
           "InferenceMapVisionTransformer"]


class _PatchTower(InferenceModule):
    """A family's ViT (`patch_embed` then `pool_patches`) whose batch is split across the cores and whose
    patches are one packed matmul; the class it is mixed into supplies both steps (the reference's own)."""

    compute_dtype: torch.dtype = torch.float32
    fused: bool = True
    cpu_only: bool = False

    def _cf_sources(self) -> list[torch.Tensor]:
        return [self.conv1.weight] + ([self.conv1.bias] if self.conv1.bias is not None else [])

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                  fused: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = read(self.conv1.weight).flatten(1)  # [width, 3 * P * P], (channel, row, col) order
        bias = self.conv1.bias
        return pack_linear(weight, dtype, fused), None if bias is None else read(bias).to(dtype).contiguous()

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        dtype = fast_dtype(self, x, self.conv1.weight, tower=True)
        if dtype is None or not self._fast_input(x):
            return super().patch_embed(x)  # the reference (and its own error for a wrong size)
        with autocast_off(x):
            out = self._patches(x, dtype)
        return autocast_output(out, x.device.type)

    def _fast_input(self, x: torch.Tensor) -> bool:
        """Images of the tower's grid (any other size gets the reference's own error); they are cast to the
        dtype `fast_dtype` chose, as OpenAI's fast ViT casts them."""
        grid = self.input_resolution // self.patch_size
        return x.dim() == 4 and all(side // self.patch_size == grid for side in x.shape[-2:])

    def _patches(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        fused = self.fused and x.device.type == "cpu"
        grid = self.input_resolution // self.patch_size
        return patch_features(x, self._cf_packed(dtype, fused), self.patch_size, grid, dtype, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = fast_dtype(self, x, self.conv1.weight, tower=True)
        if dtype is None or not self._fast_input(x):
            return super().forward(x)
        with autocast_off(x):  # the blocks and the head compute in their input's dtype: `dtype` from here on
            if x.shape[0] > 1 and x.device.type == "cpu":  # pack here, once, not in every slice's thread
                self._cf_packed(dtype, self.fused)
                for module in self.modules():
                    if isinstance(module, (InferenceBlock, InferenceAttentionPoolHead)):
                        module._cf_packed(dtype, module.fused)
            out = split_batch(lambda images: self._forward(images, dtype), x)
        return autocast_output(out, x.device.type)

    def _forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The reference forward in `dtype` with autocast off (one slice of `split_batch`)."""
        return self.pool_patches(self._patches(x, dtype))


class InferenceMapVisionTransformer(_PatchTower, MapVisionTransformer):
    """`MapVisionTransformer` (SigLIP's) on the fast path: `_PatchTower`.

    Under bf16 autocast too (see the module docstring). SigLIP 2 B/16 image tower, plain model under
    `torch.autocast("cpu", torch.bfloat16)`, batch 32, 2 threads, 2-core AMX Xeon (2026-12-06, load ~9 from
    other processes), medians of interleaved calls in one process, reference fallback -> split: 7,635 ->
    6,372 ms and 4,971 -> 4,568 ms in two runs (faster in 11 of 13 rounds); batch 1 unchanged (1,145 vs
    1,173 ms, within the noise).
    """


class InferenceAvgPoolVisionTransformer(_PatchTower, AvgPoolVisionTransformer):
    """CLIPA's image tower (`AvgPoolVisionTransformer`, read by the mean of its patch tokens) on the fast path:
    `_PatchTower`. Every block runs whole (the mean reads every row). Before, it ran its reference forward
    under `prepare` (packed blocks, but one batch on two intra-op threads and oneDNN's strided convolution)."""


@dataclass
class _HeadWeights:
    keys: torch.Tensor  # [heads, width]: the probe's query through each head's key projection, / sqrt(d)
    values: torch.Tensor  # [heads, width, d]: each head's value projection, transposed for a batched matmul
    value_bias: torch.Tensor  # [heads, d]
    out: tuple[torch.Tensor, torch.Tensor]
    fc: tuple[torch.Tensor, torch.Tensor]
    proj: tuple[torch.Tensor, torch.Tensor]
    fused: bool


class InferenceAttentionPoolHead(InferenceModule, AttentionPoolHead):
    """SigLIP's attention-pool head with its one fixed query folded into the key and value weights.

    The probe is a parameter, so its query ``q = W_q p + b_q`` is a constant of the model. Head h
    scores patch x_j as ``q_h . (W_kh x_j + b_kh) / sqrt(d) = a_h . x_j + c_h`` with
    ``a_h = W_kh^T q_h / sqrt(d)``, and the constant c_h drops out of the softmax. The values enter
    only through their weighted sum: ``sum_j p_hj (W_vh x_j + b_vh) = W_vh (sum_j p_hj x_j) + b_vh``
    (the p_hj sum to 1), so the patches are summed first and projected once per head. The
    [N, L, 2 * width] key/value projection of every patch (0.46 GFLOP an image for B/16; the reference
    head took 4.8 ms of a 176 ms batch-1 image on a 2-core AVX512 EPYC) becomes two products of
    N x heads x L x width. Same arithmetic in exact numbers; rounded differently (parity with the
    reference head within 1e-5 in fp32, `tests/families/test_family_fast_paths.py`).
    """

    compute_dtype: torch.dtype = torch.float32
    fused: bool = True
    cpu_only: bool = False

    def _cf_sources(self) -> list[torch.Tensor]:
        attn, mlp = self.attn, self.mlp
        return [self.probe, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias,
                mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight, mlp.c_proj.bias]

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                  fused: bool) -> _HeadWeights:
        probe, w_in, b_in, w_out, b_out, w_fc, b_fc, w_proj, b_proj = (read(p) for p in self._cf_sources())
        width = w_in.shape[1]
        heads = self.attn.heads
        d = width // heads
        q = (probe.reshape(width) @ w_in[:width].t() + b_in[:width]).view(heads, d, 1)
        keys = (w_in[width:2 * width].view(heads, d, width) * q).sum(dim=1) * d**-0.5
        values = w_in[2 * width:].view(heads, d, width).transpose(1, 2)
        if self.activation == "quick_gelu":  # silu(1.702 h) / 1.702, as the blocks pack it
            w_fc, b_fc, w_proj = w_fc * QUICK_GELU_ALPHA, b_fc * QUICK_GELU_ALPHA, w_proj / QUICK_GELU_ALPHA

        def pair(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return pack_linear(w, dtype, fused), b.to(dtype).contiguous()

        return _HeadWeights(keys.to(dtype).contiguous(), values.to(dtype).contiguous(),
                            b_in[2 * width:].view(heads, d).to(dtype), pair(w_out, b_out), pair(w_fc, b_fc),
                            pair(w_proj, b_proj), fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = fast_dtype(self, x, self.probe, tower=False) if hasattr(self, "activation") else None
        if dtype is None or x.dim() != 3:
            return super().forward(x)
        with autocast_off(x):
            out = self._forward(x.to(dtype), self._cf_packed(dtype, self.fused and x.device.type == "cpu"))
        return autocast_output(out, x.device.type)

    def _forward(self, x: torch.Tensor, w: _HeadWeights) -> torch.Tensor:
        batch, _, width = x.shape
        scores = torch.matmul(x, w.keys.t())  # [N, L, heads]
        weights = torch.softmax(scores, dim=1, dtype=torch.float32).to(x.dtype)
        pooled = torch.matmul(weights.transpose(1, 2), x)  # [N, heads, width]: each head's weighted patches
        values = torch.bmm(pooled.transpose(0, 1), w.values).transpose(0, 1) + w.value_bias  # [N, heads, d]
        y = packed_linear(values.reshape(batch, width), w.out, w.fused)
        return linear_add(linear_act(self.ln(y), w.fc, w.fused, self.activation), y, w.proj, w.fused)


class InferenceFamilyCLIP(FamilyCLIP):
    """`FamilyCLIP` whose own text tower finishes only the rows it reads, split across the cores.

    The last block computes one query per sequence (its pooling position; keys and values still come
    from every position), as `InferenceCLIP` does for OpenAI's tower: for SigLIP's 64-position
    bidirectional tower that is about 3/4 of a block of 12. A causal tower still stops at the batch's
    last pooling position. A transformers text tower (`self.text`) has its own fast class.
    """

    compute_dtype: torch.dtype = torch.float32
    cpu_only: bool = False

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if normalize:
            return F.normalize(self.encode_text(text), dim=-1)
        dtype = None if self.text is not None else fast_dtype(self, text, self.token_embedding.weight, tower=True)
        if dtype is None or not isinstance(self.transformer, InferenceTransformer) or text.shape[0] == 0:
            return super().encode_text(text)
        with autocast_off(text):
            length = int(self.text_pool_positions(text).max().item()) + 1 if self.transformer.causal else text.shape[1]
            check_tokens_fit(text, length, self.context_length, self.token_embedding.num_embeddings)
            if worth_splitting(text.shape[0], length, int(self.transformer.width), dtype):
                for block in self.transformer.resblocks:  # pack here, once, not in every slice's thread
                    if isinstance(block, InferenceBlock):
                        block._cf_packed(dtype, block.fused and text.device.type == "cpu")
                out = split_batch(lambda part: self._text_features(part, dtype), text)
            else:
                out = self._text_features(text, dtype)
        return autocast_output(out, text.device.type)

    def _text_features(self, text: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The projected features of `text` at its pooling positions (one slice of `split_batch`)."""
        pos = self.text_pool_positions(text)
        length = int(pos.max().item()) + 1 if self.transformer.causal else text.shape[1]
        x = self.token_embedding(text[:, :length]).to(dtype) + self.positional_embedding[:length].to(dtype)
        return self._project_text(self.ln_final(self.transformer(x, rows=pos)))
