"""Mixed precision done the PyTorch way: fp32 master weights, autocast for the compute.

The OpenAI code converts the weights themselves to fp16 and back around each optimiser step;
autocast instead keeps every parameter and optimiser moment in fp32 and runs only the matmuls
and convolutions in low precision. On CPU that means bf16 where the CPU multiplies bf16 natively
(AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32 (a CIFAR recipe step:
0.51 s in bf16 vs 0.21 s in fp32 on an AVX-512 CPU without BF16), so `amp` stays fp32 there;
fp16 matmuls run at ~1 GFLOP/s on CPU and are refused. On CUDA, bf16 where the GPU supports it,
else fp16 with a GradScaler against gradient underflow.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("amp", "bf16", "fp16", "fp32")


@dataclass
class Precision:
    name: str
    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_precision(name: str, device: torch.device | str) -> Precision:
    """`amp` picks bf16 on CPU and on bf16-capable GPUs, fp16 + GradScaler on older GPUs."""
    device = torch.device(device)
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    kind = device.type
    if name == "fp32":
        return Precision(name, kind, None)
    if name == "amp":
        if kind == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            from clipforge.inference.cpu import bf16_supported

            if not bf16_supported():  # emulated bf16 is slower than fp32 (measured 2.5x on AVX-512 without BF16)
                return Precision("fp32", kind, None)
            name = "bf16"
    if name == "fp16":
        if kind != "cuda":
            raise ValueError("fp16 autocast is for CUDA; on CPU use bf16 (fp16 matmuls are ~100x slower there)")
        return Precision(name, kind, torch.float16, torch.amp.GradScaler("cuda"))
    return Precision(name, kind, torch.bfloat16)
