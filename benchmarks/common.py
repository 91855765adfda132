"""Timing and machine facts shared by every benchmark section.

Rules that make the ratios trustworthy on a small shared machine:
- candidates of one comparison are timed round-robin (A B C A B C ...), so a burst of load
  from another process hits all of them, not just whichever ran during it;
- each gets warm-up calls first (allocator, oneDNN primitive caches, lazy packing);
- the headline is the median of the timed calls; the minimum is kept beside it;
- the load average is recorded before and after, so a reader can judge the noise.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["BENCH_IMAGES", "Timing", "count_flops", "load_average", "machine_info", "matmul_kernels", "matmul_roof",
           "time_round_robin"]

BENCH_IMAGES = Path(os.environ.get("CLIPFORGE_BENCH_IMAGES",
                                   Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_sample" / "images"))
"""The photos every section that reads photos uses (commands, startup, pipeline, the decode rows): the ImageNet
sample in ../shared/data beside the checkout, or the folder $CLIPFORGE_BENCH_IMAGES names."""


@dataclass
class Timing:
    median_s: float
    min_s: float
    calls: int

    def per_second(self, items: int) -> float:
        return items / self.median_s

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compile_sources() -> None:
    """Write the package's bytecode (.pyc) before whole commands are timed, as `pip install` does.

    An editable install compiles each module on its first import and caches it; with
    PYTHONDONTWRITEBYTECODE set (some CI images set it) nothing is cached and every command pays
    ~0.15 s of compiling, while `import torch`, the anchor, loads torch's pip-compiled bytecode.
    Timing both from bytecode measures what an installed clipforge costs a user.
    """
    import compileall
    from pathlib import Path

    import clipforge

    compileall.compile_dir(str(Path(clipforge.__file__).parent), quiet=1)


def _attention_flops(query_shape: tuple[int, ...], key_shape: tuple[int, ...], value_shape: tuple[int, ...],
                     *args: object, out_shape: object = None, **kwargs: object) -> int:
    """FLOPs of one scaled-dot-product attention, q k^T and the weighted sum of v (torch's own `sdpa_flop_count`:
    2 per multiply-add, a mask or causality not subtracted), for any leading dimensions and grouped key heads."""
    *lead, length, dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    batch, heads = (int(torch.Size(lead[:-1]).numel()), lead[-1]) if lead else (1, 1)
    try:
        from torch.utils.flop_counter import sdpa_flop_count
    except ImportError:  # an older torch: the same two products by hand
        return 2 * batch * heads * length * keys * (dim + value_dim)
    return int(sdpa_flop_count((batch, heads, length, dim), (batch, heads, keys, dim), (batch, heads, keys, value_dim)))


def _cpu_attention_ops() -> dict[object, Callable[..., int]]:
    """torch's CPU attention kernel, which `FlopCounterMode` leaves at 0 FLOPs (torch 2.13 registers the CUDA ones
    only): `F.scaled_dot_product_attention` and `nn.MultiheadAttention` on CPU tensors of 4 dimensions end there
    (3-dimensional ones run batched matmuls, which it counts)."""
    cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {cpu: _attention_flops} if cpu is not None else {}


def count_flops(fn: Callable[[], object], *, autograd: bool = False) -> float:
    """FLOPs of one call of `fn` as torch's `FlopCounterMode` counts them (2 per multiply-add, as the roof counts
    them), attention products included: the only FLOP count the sections use, so every share of the roof is
    counted the same way. Results before 2026-12-07 counted no CPU attention (shares 1-5% low).

    `autograd=True` runs `fn` with autograd on: a clipforge model with the fast forward then runs its reference
    modules, the work that is counted everywhere (the fast path's fused kernels are invisible to the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    mode = torch.enable_grad() if autograd else torch.inference_mode()
    with mode, FlopCounterMode(display=False, custom_mapping=_cpu_attention_ops()) as counter:
        fn()
    return float(counter.get_total_flops())


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def time_round_robin(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     min_seconds: float = 0.0, max_calls: int = 200) -> dict[str, Timing]:
    """Time each zero-argument callable at least `repeats` times, interleaved; median/min per name.

    `min_seconds`: a candidate keeps being timed (in later rounds, still interleaved with the
    others that need more) until its calls add up to this long, so fast calls get enough
    samples for a stable median without making the slow ones repeat too.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}

    def needs_more(name: str) -> bool:
        taken = samples[name]
        return len(taken) < repeats or (sum(taken) < min_seconds and len(taken) < max_calls)

    while True:
        pending = [name for name in candidates if needs_more(name)]
        if not pending:
            break
        for name in pending:
            start = time.perf_counter()
            candidates[name]()
            samples[name].append(time.perf_counter() - start)
    gc.collect()
    return {name: Timing(statistics.median(v), min(v), len(v)) for name, v in samples.items()}


def matmul_kernels(dtype: torch.dtype, size: int = 2048) -> dict[str, Callable[[], object]]:
    """Square `size` matmuls two ways: torch.mm (MKL for fp32) and oneDNN with a pre-packed weight."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    kernels: dict[str, Callable[[], object]] = {"torch.mm": lambda: torch.mm(a, b)}
    ops = torch.ops.mkldnn
    if torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight"):
        packed = ops._reorder_linear_weight(b.t().contiguous())
        kernels["onednn"] = lambda: ops._linear_pointwise(a, packed, None, "none", [], "")
    return kernels


def matmul_roof(dtype: torch.dtype, size: int = 2048, seconds: float = 1.5) -> float:
    """Best GFLOP/s of square `size` matmuls in `dtype` on this machine with torch's threads.

    This is the ceiling the model figures are compared against: the CPU's practical peak for
    the precision, as measured now (under whatever load the machine has), taking the faster
    of MKL and oneDNN so that a tower using oneDNN cannot look better than the roof.
    """
    flops = 2.0 * size**3
    best = 0.0
    for kernel in matmul_kernels(dtype, size).values():
        for _ in range(2):
            kernel()
        spent = 0.0
        while spent < seconds / 2:
            start = time.perf_counter()
            kernel()
            elapsed = time.perf_counter() - start
            spent += elapsed
            best = max(best, flops / elapsed / 1e9)
    return best


def machine_info() -> dict[str, object]:
    from clipforge.inference.cpu import cpu_summary

    info = cpu_summary()
    info["load_average_start"] = load_average()
    with contextlib.suppress(ValueError, OSError, AttributeError):
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return info
