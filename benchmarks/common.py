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

import torch

__all__ = ["Timing", "load_average", "machine_info", "matmul_kernels", "matmul_roof", "time_round_robin"]


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
