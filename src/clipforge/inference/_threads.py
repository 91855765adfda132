"""A batch split across the cores, one single-threaded slice per core, instead of every operation split.

Measured on a 2-core AVX512-BF16 EPYC (ViT-B/32, batch 32): one thread runs the bf16 image tower
at 91-95% of the one-core bf16 matmul roof, but two intra-op threads on the whole batch reach
only 58-70% of the two-core roof (each of the tower's ~170 operations is split and joined, and
a core that waits at a join idles); two threads each running half the batch on one core reach
~95% (process time; wall clock under load +33%). fp32 gains less (+20%). So a tower's fast path
hands `split_batch` the batch: it runs in a small pool of worker threads whose own OpenMP team
is one thread (torch ops release the GIL), and concatenates the slices in order.

Each image's features are computed exactly as that image's slice alone would compute them; a
batch smaller than two images per thread is not split, and the workers never split again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from clipforge.inference.cpu import amx_supported

__all__ = ["AMX_SPLIT_MIN_MACS", "SPLIT_MIN_MACS", "split_batch", "worth_splitting"]

SPLIT_MIN_MACS: dict[torch.dtype, float] = {torch.bfloat16: 80e6, torch.float32: 40e6}
"""Smallest square matmul (rows x width x width multiply-adds) a slice must make for a split to pay.

Below it each core's matmuls are too short for their weights (read whole by both cores) and the
per-operation costs, and the whole batch on both threads is faster. Measured with OpenAI's ViT-B/32
text tower (width 512), batch 32, on a 2-core AVX512-BF16 EPYC, share of the roof in one process, split
vs whole: bf16 at 8 tokens (128 rows a slice) 73.5 vs 82.2%, 15 (240) 78.3 vs 81.5%, 25 (400) 83.8 vs
82.3%, 77 87.8 vs 84.4%; fp32 at 8 tokens 82.3 vs 84.5%, 15 87.5 vs 86.5%, 77 94.2 vs 90.9%."""

AMX_SPLIT_MIN_MACS: dict[torch.dtype, float] = {torch.bfloat16: 50e6}
"""`SPLIT_MIN_MACS` where the CPU has AMX tiles: bf16 matmuls of a few hundred rows are so fast there that
the per-operation costs, which a split halves, weigh more. Same tower, 2-core AMX Xeon, medians of 25
interleaved calls in one process, split vs whole, ms: 5 tokens 23.9 vs 18.3, 8 28.0 vs 23.8, 11 33.1 vs
31.7 (46 M a slice), 13 40.2 vs 49.3 (55 M), 15 33.4 vs 42.5 and 45.8 vs 59.9 (63 M), 30 65.5 vs 75.9,
77 144.7 vs 140.3."""

_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCAL = threading.local()


def _forget_pools_in_child() -> None:
    # a forked child (DataLoader workers, multiprocessing) inherits the pools but not their threads:
    # submitting to one would wait forever, so the child starts its own on first use
    global _LOCK
    _LOCK = threading.Lock()
    _POOLS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


def _init_worker() -> None:
    _LOCAL.worker = True
    # torch sets a thread's OpenMP team size lazily, from the process-wide count, on its first parallel
    # call: trigger that now, then make this thread's team itself (the pool's creator restores the count)
    torch.get_num_threads()
    torch.set_num_threads(1)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = ThreadPoolExecutor(threads, thread_name_prefix="clipforge-slice", initializer=_init_worker)
            # start every worker now, then give the caller's thread (and MKL's global count) back its threads:
            # `set_num_threads` in a worker also sets the process-wide defaults
            barrier = threading.Barrier(threads)
            list(pool.map(lambda _: barrier.wait(), range(threads)))
            torch.set_num_threads(threads)
            _POOLS[threads] = pool
        return pool


def worth_splitting(items: int, rows_per_item: int, width: int, dtype: torch.dtype) -> bool:
    """Whether `items` inputs of `rows_per_item` rows of `width` features each gain from `split_batch`
    (see `SPLIT_MIN_MACS`, and `AMX_SPLIT_MIN_MACS` on CPUs with AMX): one slice's rows x width^2 against
    the dtype's threshold."""
    threads = max(1, torch.get_num_threads())
    per_slice = -(-int(items) // threads) * int(rows_per_item)
    table = {**SPLIT_MIN_MACS, **AMX_SPLIT_MIN_MACS} if amx_supported() else SPLIT_MIN_MACS
    return per_slice * int(width) ** 2 >= table.get(dtype, table[torch.float32])


def split_batch(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, min_per_thread: int = 2) -> torch.Tensor:
    """``fn(x)``, computed as ``cat([fn(slice) for slice in x.tensor_split(threads)])`` on one core per slice.

    Only on the CPU, with more than one torch thread, outside autograd, and for batches of at least
    `min_per_thread` rows per thread; otherwise ``fn(x)`` as is.
    """
    threads = torch.get_num_threads()
    if (threads < 2 or x.device.type != "cpu" or getattr(_LOCAL, "worker", False) or x.shape[0] < threads * min_per_thread
            or (torch.is_grad_enabled() and x.requires_grad)):
        return fn(x)
    inference = torch.is_inference_mode_enabled()

    def run(part: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode() if inference else torch.no_grad():
            return fn(part)

    pool = _pool(threads)
    return torch.cat(list(pool.map(run, x.tensor_split(threads))))
