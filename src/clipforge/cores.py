"""How many CPU cores this process may run on: the one answer every default asks.

``os.cpu_count()`` counts the machine's cores, not the process's: in a container limited with
``--cpuset-cpus`` or under ``taskset`` it overstates them (a 2-core container on a 64-core host sees
64), and defaults sized from it start more decoding workers than there are cores to run them.
The scheduler's affinity mask is what the process can actually use. Torch-free, so the decoding
process forked before torch is imported (`clipforge.data.prefetch`) asks it too.
"""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """Cores this process may be scheduled on (its affinity mask; ``os.cpu_count()`` where there is none), >= 1."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)
