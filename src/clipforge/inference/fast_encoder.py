"""BERT-shaped text towers on the packed path: Chinese-CLIP's RoBERTa-wwm towers and open_clip's
(XLM-)RoBERTa towers.

These towers are transformers' own `BertModel` / `RobertaModel` / `XLMRobertaModel`, run as the
reference runs them: three separate q/k/v matmuls, the bias, GELU and residual add each as their
own pass, and every position of the context, pads included. Measured at batch 32 on a 2-core
AVX512-BF16 EPYC that put them at 71-81% of the fp32 matmul roof (goal 90%) and 74-80% of the bf16
roof. The fast path keeps transformers' embeddings (lookups, positions, LayerNorm) and runs the
encoder layers itself, on weights packed once for oneDNN (`_packing`), as `fast_transformer` does
for OpenAI's blocks:

- q, k and v are one packed matmul; the out-projection and the second MLP matmul add the residual
  inside the matmul; the first MLP matmul applies exact GELU inside it. A post-norm layer is then
  1 matmul, attention, 1 matmul+add, LayerNorm, 1 matmul+GELU, 1 matmul+add, LayerNorm.
- Trailing columns that are padding in every row are not computed: a pad key is masked for every
  query, so the kept positions' outputs do not depend on them (Chinese-CLIP's own `encode_text`
  already cuts them; open_clip's towers read whole 77-token rows).
- A tower read at its first position (Chinese-CLIP's ``[CLS]``) finishes only that row in the
  last layer; keys and values still come from every position.

Layers of any other shape (relative positions, decoders, other activations) keep the reference
forward, as does everything in training or when autograd needs the call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.inference._packing import (
    InferenceModule,
    autocast_off,
    autocast_output,
    fast_dtype,
    pack_linear,
)
from clipforge.inference._packing import linear as _linear
from clipforge.inference.fast_transformer import _attention, _linear_act, _linear_add
from clipforge.models.chinese_clip import ChineseCLIP
from clipforge.models.family_hf import HFTextTower

__all__ = ["InferenceChineseCLIP", "InferenceHFTextTower", "post_norm_layers"]

_ACTIVATIONS = {"gelu": "gelu"}  # transformers' hidden_act -> the fused epilogue (exact, erf GELU)


@dataclass
class _LayerWeights:
    qkv: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    fc: tuple[torch.Tensor, torch.Tensor]
    proj: tuple[torch.Tensor, torch.Tensor]


def post_norm_layers(hf_model: nn.Module) -> list[nn.Module] | None:
    """The encoder layers of a BERT-shaped transformers model, or None when the fast path cannot run it.

    BERT-shaped: absolute positions, an encoder (not a decoder), exact GELU, and layers with
    ``attention.self.{query,key,value}``, ``attention.output.{dense,LayerNorm}``,
    ``intermediate.dense`` and ``output.{dense,LayerNorm}``.
    """
    config = getattr(hf_model, "config", None)
    layers = getattr(getattr(hf_model, "encoder", None), "layer", None)
    if config is None or layers is None or getattr(hf_model, "embeddings", None) is None:
        return None
    if (getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False)
            or getattr(config, "position_embedding_type", "absolute") != "absolute"
            or _ACTIVATIONS.get(str(getattr(config, "hidden_act", ""))) is None):
        return None
    for layer in layers:
        attention = getattr(layer, "attention", None)
        parts = (getattr(attention, "self", None), getattr(attention, "output", None),
                 getattr(layer, "intermediate", None), getattr(layer, "output", None))
        if any(p is None for p in parts) or not all(
                isinstance(getattr(parts[0], n, None), nn.Linear) for n in ("query", "key", "value")):
            return None
        if not all(isinstance(getattr(p, "dense", None), nn.Linear) for p in parts[1:]):
            return None
        if not isinstance(getattr(parts[1], "LayerNorm", None), nn.LayerNorm) or not isinstance(
                getattr(parts[3], "LayerNorm", None), nn.LayerNorm):
            return None
    return list(layers)


def _layer_sources(layer: nn.Module) -> list[torch.Tensor]:
    self_attention = layer.attention.self
    return [self_attention.query.weight, self_attention.query.bias, self_attention.key.weight,
            self_attention.key.bias, self_attention.value.weight, self_attention.value.bias,
            layer.attention.output.dense.weight, layer.attention.output.dense.bias,
            layer.intermediate.dense.weight, layer.intermediate.dense.bias,
            layer.output.dense.weight, layer.output.dense.bias]


def _pack_layer(layer: nn.Module, dtype: torch.dtype, fused: bool) -> _LayerWeights:
    wq, bq, wk, bk, wv, bv, w_out, b_out, w_fc, b_fc, w_proj, b_proj = (p.detach() for p in _layer_sources(layer))

    def pair(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pack_linear(w, dtype, fused), b.to(dtype).contiguous()

    return _LayerWeights(pair(torch.cat([wq, wk, wv]), torch.cat([bq, bk, bv])), pair(w_out, b_out),
                         pair(w_fc, b_fc), pair(w_proj, b_proj))


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    # fp32 statistics and weights for bf16 activations, in one kernel (PyTorch's CPU layer_norm mixes them)
    weight = norm.weight if x.device.type == "cpu" else norm.weight.to(x.dtype)
    bias = norm.bias if norm.bias is None or x.device.type == "cpu" else norm.bias.to(x.dtype)
    return F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)


def _run_layer(layer: nn.Module, w: _LayerWeights, x: torch.Tensor, keep: torch.Tensor | None, fused: bool,
               row: int | None) -> torch.Tensor:
    """One post-norm layer on [N, L, width]; `keep` [N, 1, 1, L] marks the keys to attend to; with
    `row`, only that position is finished ([N, width])."""
    batch, length, width = x.shape
    heads = layer.attention.self.num_attention_heads
    qkv = _linear(x, w.qkv, fused).view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if row is not None:
        q, x = q[:, :, row:row + 1], x[:, row:row + 1]
    out = _attention(q, k, v, causal=False, keep=keep)
    out = out.transpose(1, 2).reshape(batch, -1, width)
    x = _layer_norm(layer.attention.output.LayerNorm, _linear_add(out, x, w.out, fused))
    h = _linear_add(_linear_act(x, w.fc, fused, "gelu"), x, w.proj, fused)
    x = _layer_norm(layer.output.LayerNorm, h)
    return x[:, 0] if row is not None else x


def encode_post_norm(hf_model: nn.Module, weights: Sequence[_LayerWeights], ids: torch.Tensor, pad_id: int,
                     dtype: torch.dtype, fused: bool, first_row_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states [N, L', width], the non-pad mask [N, L']) over the columns up to the last non-pad
    one; with `first_row_only`, the hidden state of position 0 alone ([N, width])."""
    present = ids.ne(pad_id)
    length = max(1, int(present.any(dim=0).nonzero().max().item()) + 1) if present.any() else 1
    ids, present = ids[:, :length], present[:, :length]
    x = hf_model.embeddings(input_ids=ids).to(dtype)
    keep = None if bool(present.all()) else present.view(ids.shape[0], 1, 1, length)
    layers = hf_model.encoder.layer
    for i, (layer, w) in enumerate(zip(layers, weights, strict=True)):
        last = i == len(layers) - 1
        x = _run_layer(layer, w, x, keep, fused, 0 if (last and first_row_only) else None)
    return x, present


class _PostNormTower(InferenceModule):
    """The packed weights of a BERT-shaped transformers model held by `_hf_model()`."""

    compute_dtype: torch.dtype = torch.float32
    fused: bool = True
    cpu_only: bool = False

    def _hf_model(self) -> nn.Module:
        raise NotImplementedError

    def _cf_sources(self) -> list[torch.Tensor]:  # none for towers of another shape (NLLB, mT5)
        return [p for layer in post_norm_layers(self._hf_model()) or () for p in _layer_sources(layer)]

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                  fused: bool) -> list[_LayerWeights]:
        return [_pack_layer(layer, dtype, fused) for layer in post_norm_layers(self._hf_model()) or ()]

    def _fast(self, ids: torch.Tensor, param: torch.Tensor) -> tuple[torch.dtype, bool] | None:
        """(dtype, fused) for this call's fast path, or None for the reference forward."""
        dtype = fast_dtype(self, ids, param, tower=True)
        if dtype is None or ids.numel() == 0 or post_norm_layers(self._hf_model()) is None:
            return None
        return dtype, bool(self.fused) and ids.device.type == "cpu"


class InferenceChineseCLIP(_PostNormTower, ChineseCLIP):
    """Chinese-CLIP whose BERT text tower runs the packed post-norm layers (read at ``[CLS]``)."""

    def _hf_model(self) -> nn.Module:
        return self.bert

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        fast = self._fast(text, self.text_projection)
        if fast is None:
            return super().encode_text(text)
        dtype, fused = fast
        with autocast_off(text):
            cls, _ = encode_post_norm(self.bert, self._cf_packed(dtype, fused), text, self.pad_id, dtype, fused,
                                      first_row_only=True)
            out = cls @ self.text_projection.to(dtype)
        return autocast_output(out, text.device.type)


class InferenceHFTextTower(_PostNormTower, HFTextTower):
    """open_clip's transformers text tower whose (XLM-)RoBERTa encoder runs the packed post-norm layers."""

    def _hf_model(self) -> nn.Module:
        return self.transformer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        first = next(iter(self.proj.parameters()))
        fast = self._fast(ids, first)
        if fast is None:
            return super().forward(ids)
        dtype, fused = fast
        with autocast_off(ids):
            hidden, present = encode_post_norm(self.transformer, self._cf_packed(dtype, fused), ids, self.pad_id,
                                               dtype, fused, first_row_only=self.pool == "cls")
            if self.pool == "cls":
                pooled = hidden
            else:
                weights = present.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / present.sum(-1, keepdim=True).to(hidden.dtype)
            out = self.proj(pooled.to(first.dtype)) if first.dtype != dtype else self.proj(pooled)
        return autocast_output(out, ids.device.type)
