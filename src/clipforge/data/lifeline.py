"""A decoding worker started from a forkserver ends with the command that asked for it, even after a `kill -9`.

While a Milvus store's gRPC client is open, decoding workers start from a multiprocessing forkserver
(`files.worker_context`): the command's child, whose children the workers are. A `kill -9` of `index add --store
milvus-lite:...` left the forkserver, its worker and the resource tracker (~415 MB) running for good (audit 63), as
each waited for another:

- **The worker watched the forkserver.** torch's watchdog compares `os.getppid()` with the parent it started with,
  and `PR_SET_PDEATHSIG` (`cores.die_with_parent`) fires when the forking thread ends: both see the forkserver,
  never the command.
- **The forkserver waited for the worker.** It ends at EOF of its "alive" pipe, whose write end the command holds;
  but CPython hands that write end to every process the forkserver starts (`connect_to_new_process`), so the EOF
  came only when the worker ended too.
- **The resource tracker** ends when no process holds its pipe: the worker did.

`hold` (run in each worker by `loader.worker_init`) breaks both waits:

- The worker closes its copy of the alive pipe, so the forkserver ends when the command does; the death signal
  of a worker the main thread's loader started then ends it with the forkserver (the kernel's signal: also for a
  worker that cannot run, stopped or stuck in a call).
- A daemon thread waits on the worker's sentinel of the command (the standard library's `parent_process()`: a
  pipe whose write end only the command holds) and ends the worker at its EOF. That covers a worker no signal ties
  (a loader built outside the main thread) while it is busy in an item (torch's watchdog looks only between
  items), and a command killed before the worker set its death signal (set too late, it never fires). Blocked in
  `poll`, the thread costs nothing while it waits.

Workers the command forked itself (its direct children) need neither: the death signal and torch's watchdog see
the command. What the command's `kill -9` leaves is its own /tmp/pymp-* folder (`loader._share_temp_folder`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from typing import Any

__all__ = ["hold"]


def hold() -> None:
    """In a DataLoader worker: end with the command that started it, when that command is not the worker's parent
    (a forkserver's worker). Nothing for a worker the command forked."""
    command = multiprocessing.parent_process()
    if command is None or command.pid == os.getppid():
        return
    _release_forkserver()
    threading.Thread(target=_end_with, args=(command,), name="clipforge-lifeline", daemon=True).start()


def _release_forkserver() -> None:
    """Close this worker's copy of the forkserver's "alive" pipe (see module doc): the forkserver then ends when the
    command does, not when its last worker does. A decoding worker never asks the forkserver for processes."""
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server: Any = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is None or getattr(server, "_forkserver_pid", None) is not None:
        return  # not a forkserver's child: a process that started a forkserver holds its own pipe's end
    with contextlib.suppress(OSError):
        os.close(alive)
    server._forkserver_alive_fd = None


def _end_with(command: Any) -> None:
    """Wait for the command's end (EOF of the sentinel only it writes), then end this worker at once: no cleanup
    that could wait on the dead command (its queues)."""
    try:
        command.join()
    except (OSError, ValueError):
        return  # a sentinel that cannot be watched: torch's watchdog and the death signal remain
    os._exit(0)
