"""What this CPU can do, asked once: instruction-set flags, bf16 support, thread count.

bf16 only pays off where the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere
oneDNN emulates it and it is slower than fp32. fp16 is never used on CPU: it has no fast
matmul path here (about 1 GFLOP/s measured), so the precision choices are fp32 and bf16.
"""

from __future__ import annotations

import functools
import os
import platform
import re

import torch

from clipforge.cores import usable_cores

__all__ = ["amx_supported", "bf16_supported", "cpu_flags", "cpu_summary", "no_bf16_reason", "onednn_available",
           "onednn_isa_cap"]

_INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                      "amx_bf16", "amx_int8", "amx_tile")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def onednn_available() -> bool:
    """True when torch ships the oneDNN (mkldnn) fused linear/convolution operators used by `prepare`."""
    ops = torch.ops.mkldnn
    return bool(torch.backends.mkldnn.is_available()) and all(
        hasattr(ops, name) for name in ("_linear_pointwise", "_reorder_linear_weight",
                                        "_convolution_pointwise", "_reorder_convolution_weight"))


_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_")
"""oneDNN's `ONEDNN_MAX_CPU_ISA` values (and their prefixes) whose kernels multiply bf16 natively."""
_KNOWN_ISAS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC", "AVX512_MIC_4OPS",
                         "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16",
                         "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16"})
_AVX10_ISA = re.compile(r"AVX10_\d+_512(?:_AMX(?:_[A-Z0-9]+)?)?")  # AVX10_1_512, AVX10_1_512_AMX_FP16, AVX10_2_512_AMX_2


def onednn_isa_cap() -> str | None:
    """The instruction set oneDNN is capped at by `ONEDNN_MAX_CPU_ISA` (or its old name `DNNL_MAX_CPU_ISA`),
    upper-cased, or None when neither is set (or set to ALL, DEFAULT or a value oneDNN does not know).

    The cap outranks the CPU's flags: under `ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16` an AMX Xeon's bf16 matmuls
    run on AVX512-BF16 dot products (2-core Xeon: 144 instead of ~2,250 GFLOP/s for 2048^2), and under
    `AVX512_CORE` or `AVX2` oneDNN emulates bf16 altogether, slower than fp32. The rules that pick kernels
    and precisions (`amx_supported`, `bf16_supported`) must read the machine oneDNN will actually drive."""
    setting = _isa_setting()
    value = setting[1].upper() if setting else ""
    # oneDNN matches the value whole (any case): ALL, DEFAULT, " AVX2" or a misspelt name caps nothing (measured
    # on an AMX Xeon: ONEDNN_MAX_CPU_ISA=" AVX2" and "AVX512_CORE_BF" ran AMX kernels, which the rules turned off)
    return value if value in _KNOWN_ISAS or _AVX10_ISA.fullmatch(value) else None


def _isa_setting() -> tuple[str, str] | None:
    """(variable, value) of the setting oneDNN reads: the first of `_ISA_VARIABLES` set to anything but ""."""
    return next(((name, os.environ[name]) for name in _ISA_VARIABLES if os.environ.get(name)), None)


@functools.lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """Native bf16 matmuls: AVX512-BF16 or AMX-BF16 in the flags (and not capped away by
    `ONEDNN_MAX_CPU_ISA`: see `onednn_isa_cap`), or oneDNN saying so."""
    flags = cpu_flags()
    cap = onednn_isa_cap()
    if cap is not None and not cap.startswith(_BF16_ISAS):
        return False
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    if flags:  # flags known and neither present: emulated bf16 would be slower than fp32
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def no_bf16_reason() -> str:
    """Why bf16 is not native here, for the one-line refusals of `--precision bf16`: the CPU, or the cap."""
    cap = onednn_isa_cap()
    if cap is not None and not cap.startswith(_BF16_ISAS):
        variable, value = _isa_setting() or ("", "")
        return f"{variable}={value} keeps oneDNN from native bf16 matmuls"
    return "this CPU has no native bf16 matmuls (AVX512-BF16 or AMX)"


@functools.lru_cache(maxsize=1)
def amx_supported() -> bool:
    """AMX bf16 tiles (Sapphire Rapids and later Xeons): oneDNN's bf16 matmuls run ~7x the fp32 roof there
    (2-core Xeon: 2,650 vs 350 GFLOP/s) instead of ~2x with AVX512-BF16 alone, which moves the best kernel
    for the work around the matmuls (see `clipforge.inference._attention`). A cap of oneDNN's instruction set
    below AMX (`ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`, see `onednn_isa_cap`) means no AMX."""
    flags = cpu_flags()
    cap = onednn_isa_cap()
    if cap is not None and "AMX" not in cap:
        return False
    return "amx_bf16" in flags and "amx_tile" in flags


def cpu_summary() -> dict[str, object]:
    """Machine facts a benchmark table needs to be read correctly."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = cpu_flags()
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cores(),
        "flags": [f for f in _INTERESTING_FLAGS if f in flags],
        "bf16_native": bf16_supported(),
        "amx": amx_supported(),
        "onednn_max_isa": onednn_isa_cap(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": onednn_available(),
        "python": platform.python_version(),
    }
