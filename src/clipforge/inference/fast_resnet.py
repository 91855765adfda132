"""Inference forward passes for CLIP's ModifiedResNet image tower.

Swapped in by `prepare` like the Transformer classes (parameters and state dict untouched):

- every BatchNorm is folded into the convolution before it (eval mode: BN is a per-channel
  affine map, so ``bn(conv(x)) = conv'(x) + b'``), removing a full pass over each feature map;
- convolutions run on weights pre-packed for oneDNN with ReLU and the residual add fused in;
- activations are channels-last (NHWC), the layout oneDNN's convolutions want, so no reorders
  happen between layers; the attention pool reads NHWC as [N, HW, C] without a copy.

In training mode every class falls back to its parent's forward.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.inference._packing import (
    InferenceModule,
    autocast_off,
    autocast_output,
    fast_dtype,
    linear,
    pack_conv,
    pack_linear,
)
from clipforge.models.resnet import AttentionPool2d, Bottleneck, ModifiedResNet

__all__ = ["InferenceAttentionPool2d", "InferenceBottleneck", "InferenceModifiedResNet", "fold_batchnorm"]


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d,
                   read: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (weight, bias) of the convolution followed by the eval-mode BatchNorm."""
    scale = read(bn.weight) / torch.sqrt(read(bn.running_var) + bn.eps)
    weight = read(conv.weight) * scale.view(-1, 1, 1, 1)
    bias = read(bn.bias) - read(bn.running_mean) * scale
    if conv.bias is not None:
        bias = bias + read(conv.bias) * scale
    return weight, bias


def _bn_sources(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> list[torch.Tensor]:
    return [conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var]


# Packed convolution weights per input shape kept per layer (a batch size or two in practice).
_SHAPES_KEPT = 4


@dataclass
class _Conv:
    """A BN-folded convolution. oneDNN's packed weight layout depends on the input shape: a
    weight packed for batch 8 used at batch 1 (or packed without a shape) can cost 10x per
    call in a hidden reorder, so packs are made per input shape, on first use, a few kept."""

    weight: torch.Tensor  # dense, compute dtype
    bias: torch.Tensor
    padding: list[int]
    stride: list[int]
    fused: bool
    packs: OrderedDict = field(default_factory=OrderedDict)

    def packed(self, shape: torch.Size) -> torch.Tensor:
        key = tuple(shape)
        weight = self.packs.get(key)
        if weight is None:
            weight = pack_conv(self.weight, self.weight.dtype, True, self.padding, self.stride, list(key))
            self.packs[key] = weight
            while len(self.packs) > _SHAPES_KEPT:
                self.packs.popitem(last=False)
        return weight


def _make_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, read: Callable[[torch.Tensor], torch.Tensor],
               dtype: torch.dtype, fused: bool) -> _Conv:
    weight, bias = fold_batchnorm(conv, bn, read)
    padding, stride = [int(p) for p in conv.padding], [int(s) for s in conv.stride]
    return _Conv(weight.to(dtype).contiguous(), bias.to(dtype), padding, stride, fused)


def _conv(x: torch.Tensor, c: _Conv, fused: bool, relu: bool,
          residual: torch.Tensor | None = None) -> torch.Tensor:
    if fused:
        ops = torch.ops.mkldnn
        weight = c.packed(x.shape)
        if residual is not None:
            return ops._convolution_pointwise.binary(x, residual, weight, c.bias, c.padding, c.stride, [1, 1], 1,
                                                     "add", None, "relu" if relu else "none", [], "")
        return ops._convolution_pointwise(x, weight, c.bias, c.padding, c.stride, [1, 1], 1,
                                          "relu" if relu else "none", [], "")
    y = F.conv2d(x, c.weight, c.bias, c.stride, c.padding)
    if residual is not None:
        y = y + residual
    return F.relu_(y) if relu else y


class _Precision:
    compute_dtype: torch.dtype = torch.float32
    fused: bool = True
    cpu_only: bool = False


class InferenceBottleneck(_Precision, InferenceModule, Bottleneck):
    def _cf_sources(self) -> list[torch.Tensor]:
        sources = (_bn_sources(self.conv1, self.bn1) + _bn_sources(self.conv2, self.bn2)
                   + _bn_sources(self.conv3, self.bn3))
        if self.downsample is not None:
            sources += _bn_sources(self.downsample._modules["0"], self.downsample._modules["1"])
        return sources

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                  fused: bool) -> dict[str, _Conv]:
        convs = {name: _make_conv(getattr(self, f"conv{i}"), getattr(self, f"bn{i}"), read, dtype, fused)
                 for i, name in ((1, "c1"), (2, "c2"), (3, "c3"))}
        if self.downsample is not None:
            convs["down"] = _make_conv(self.downsample._modules["0"], self.downsample._modules["1"], read, dtype, fused)
        return convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = fast_dtype(self, x, self.conv1.weight, tower=False)
        if dtype is None:
            return super().forward(x)
        fused = self.fused and x.device.type == "cpu"
        with autocast_off(x):
            return self._forward(x.to(dtype), self._cf_packed(dtype, fused), fused)

    def _forward(self, x: torch.Tensor, c: dict[str, _Conv], fused: bool) -> torch.Tensor:
        identity = x
        if self.downsample is not None:
            identity = _conv(self.downsample._modules["-1"](x), c["down"], fused, relu=False)
        out = _conv(x, c["c1"], fused, relu=True)
        out = self.avgpool(_conv(out, c["c2"], fused, relu=True))
        return _conv(out, c["c3"], fused, relu=True, residual=identity)


class InferenceAttentionPool2d(_Precision, InferenceModule, AttentionPool2d):
    """Attention pooling with one packed matmul for keys+values and one for the mean query."""

    def _cf_sources(self) -> list[torch.Tensor]:
        return [self.q_proj.weight, self.q_proj.bias, self.k_proj.weight, self.k_proj.bias,
                self.v_proj.weight, self.v_proj.bias, self.c_proj.weight, self.c_proj.bias]

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                  fused: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        wq, bq, wk, bk, wv, bv, wc, bc = (read(p) for p in self._cf_sources())

        def pair(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return pack_linear(w, dtype, fused), b.to(dtype).contiguous()

        return {"q": pair(wq, bq), "kv": pair(torch.cat([wk, wv]), torch.cat([bk, bv])), "c": pair(wc, bc)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = fast_dtype(self, x, self.q_proj.weight, tower=False)
        if dtype is None:
            return super().forward(x)
        fused = self.fused and x.device.type == "cpu"
        with autocast_off(x):
            return self._forward(x.to(dtype), self._cf_packed(dtype, fused), fused)

    def _forward(self, x: torch.Tensor, w: dict[str, tuple[torch.Tensor, torch.Tensor]], fused: bool) -> torch.Tensor:
        batch, channels = x.shape[:2]
        heads = self.num_heads
        x = x.flatten(2).transpose(1, 2)  # [N, HW, C]; a free view for channels-last input
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        q = linear(x[:, 0], w["q"], fused).view(batch, heads, 1, channels // heads)
        kv = linear(x, w["kv"], fused).view(batch, x.shape[1], 2, heads, channels // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return linear(out.reshape(batch, channels), w["c"], fused)


class InferenceModifiedResNet(_Precision, InferenceModule, ModifiedResNet):
    """Stem with folded BN and fused ReLU, channels-last activations throughout."""

    def _cf_sources(self) -> list[torch.Tensor]:
        return (_bn_sources(self.conv1, self.bn1) + _bn_sources(self.conv2, self.bn2)
                + _bn_sources(self.conv3, self.bn3))

    def _cf_build(self, read: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype,
                  fused: bool) -> list[_Conv]:
        return [_make_conv(getattr(self, f"conv{i}"), getattr(self, f"bn{i}"), read, dtype, fused)
                for i in (1, 2, 3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = fast_dtype(self, x, self.conv1.weight, tower=True)
        if dtype is None:
            return super().forward(x)
        fused = self.fused and x.device.type == "cpu"
        device = x.device.type
        with autocast_off(x):
            x = x.to(dtype).contiguous(memory_format=torch.channels_last)
            for conv in self._cf_packed(dtype, fused):
                x = _conv(x, conv, fused, relu=True)
            x = self.avgpool(x)
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            out = self.attnpool(x)
        return autocast_output(out, device)
