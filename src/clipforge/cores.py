"""How many CPU cores this process may run on (the one answer every default asks), and the decoding processes' tie
to their parent.

``os.cpu_count()`` counts the machine's cores, not the process's: in a container limited with
``--cpuset-cpus`` or under ``taskset`` it overstates them (a 2-core container on a 64-core host sees
64), and defaults sized from it start more decoding workers than there are cores to run them.
The scheduler's affinity mask is what the process can actually use. Torch-free, so the decoding
process forked before torch is imported (`clipforge.data.prefetch`) asks it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import weakref
from typing import Any

__all__ = ["die_with_parent", "fork_is_unsafe", "fork_unsafe", "usable_cores"]

_FORK_UNSAFE: weakref.WeakSet[Any] = weakref.WeakSet()


def fork_unsafe(owner: Any, unsafe: bool = True) -> None:
    """Mark this process, while `owner` lives (until it says `unsafe=False`, closed), as one whose threads a fork
    must not copy: a Milvus store's gRPC client (`library.milvus_store`), whose fork handlers can leave a forked
    child stuck for ever. Decoding workers then start from a forkserver (`data.files.worker_context`)."""
    if unsafe:
        _FORK_UNSAFE.add(owner)
    else:
        _FORK_UNSAFE.discard(owner)


def fork_is_unsafe() -> bool:
    """Whether an object marked by `fork_unsafe` is alive in this process."""
    return len(_FORK_UNSAFE) > 0


def usable_cores() -> int:
    """Cores this process may be scheduled on (its affinity mask; ``os.cpu_count()`` where there is none), >= 1."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def die_with_parent() -> None:
    """Make this (forked) process end when the thread that forked it does (Linux `PR_SET_PDEATHSIG`; nothing
    elsewhere). A decoding process outliving a `kill -9` of its command holds what it inherited: a milvus-lite
    store's lock (the next command was refused as "in use by another process" for ~5 s), the library's files."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
