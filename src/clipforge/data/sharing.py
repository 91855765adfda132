"""How a decoding worker's batch reaches the command, and the one line said when shared memory refuses it.

A DataLoader worker hands each batch to the main process through shared memory (a file in /dev/shm per
tensor, or one that torch opens and unlinks). Where that copy happens decides what a refusal does:

- **In the worker's own code** (the collate): the failure is an exception like any other, which torch sends
  to the main process and raises there. torch's `default_collate` builds its batches there for this reason.
- **In the worker's queue feeder thread** (pickling a batch whose tensors are still in ordinary memory): the
  failure was only printed (`multiprocessing.queues.Queue._on_queue_feeder_error`) and the batch was lost;
  the main process waited for it for ever. Seen (audit 61): `index add` and `embed` under `ulimit -f 150`
  (``unable to resize file </torch_...> to the right size: File too large (27)``), and a /dev/shm too small
  (Docker's 64 MB default: ``unable to allocate shared memory(shm) ... No space left on device (28)``).

So the batches the workers build are put in shared memory in the worker (`shared_stack`, `shared_tensor`),
and every worker that `make_loader` starts replaces its queue's feeder-error hook (`guard_feeder`, the hook
Python's own `concurrent.futures` overrides for the same reason): a batch that cannot be sent is answered
with the exception in its place, which the main process raises as it raises a worker's own. No batch can be
lost in silence, so no timeout is needed, and none refuses a slow batch on a loaded machine. `refused_batch`
turns torch's words for a shared-memory refusal into `SharedMemoryError`: one line saying what refused and
what to do, an OSError (the CLI's one-line error edge) with the errno torch reported; for want of room (ENOSPC,
EFBIG, EDQUOT) a `SharedMemoryFullError`, the project's one `DiskFullError` (`clipforge.disk_full`).
"""

from __future__ import annotations

import errno
import multiprocessing.queues
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate, get_worker_info

from clipforge.disk_full import DISK_FULL_ERRNOS, DiskFullError
from clipforge.errors import UserError

__all__ = ["SENDING", "SharedMemoryError", "SharedMemoryFullError", "guard_feeder", "refused_batch", "shared_stack",
           "shared_tensor"]

SENDING = "while sending its batch"
"""Part of `where` of a batch the feeder thread could not send (`guard_feeder`): a worker's own exceptions
say only "in DataLoader worker process N"."""

# torch's MapAllocator / libshm words for a shared-memory file (/torch_...) it could not make, size or map, and
# the errno; a file of the dataset's own that torch maps (`torch.load(mmap=True)`) is not one
_TORCH_SHM = re.compile(r"unable to (?:allocate shared memory\(shm\) for file|resize file|write to file"
                        r"|open shared memory object|mmap \d+ bytes from file) </torch_[^\n]*?: ([^\n]*?) \((\d+)\)")
_BUS_ERROR = re.compile(r"killed by signal: Bus error|bus error[^\n]*shared memory", re.IGNORECASE)
_ERRNO = re.compile(r"\[Errno (\d+)\] ([^\n]*)")
_TORCH_FDS = "Too many open files. Communication with the workers is no longer possible"


class SharedMemoryError(UserError, OSError):
    """Shared memory refused a batch on its way from a decoding worker: one sentence (not "[Errno 24] ...")."""

    http_status = 507

    def __str__(self) -> str:
        return str(self.strerror)


class SharedMemoryFullError(SharedMemoryError, DiskFullError):
    """...for want of room (a full /dev/shm, `ulimit -f`): a `DiskFullError` too, so `disk_full` knows it."""


def shared_stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """`torch.stack(tensors)`, straight into shared memory in a DataLoader worker (`default_collate`'s way: one
    copy instead of two, and a refusal raised here, in the worker's own code; see the module docstring)."""
    return default_collate(list(tensors)) if get_worker_info() is not None else torch.stack(list(tensors))


def shared_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` moved into shared memory when this is a DataLoader worker (a refusal raised here), else as it is."""
    if get_worker_info() is not None and tensor.numel() and not tensor.is_shared():
        tensor.share_memory_()
    return tensor


def _feeder_error(queue: Any, exc: Exception, obj: Any) -> None:
    """A worker's data queue could not send `obj`: answer its batch with `exc` in its place (the main process
    raises it), or, for anything but a ``(batch number, data)`` pair, do what Python does (print it)."""
    from torch._utils import ExceptionWrapper

    info = get_worker_info()
    if info is not None and isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], int):
        if isinstance(obj[1], ExceptionWrapper):  # the answer itself could not be sent: a builtin type always can
            exc = RuntimeError(f"{obj[1].exc_msg.rstrip()}\n(then, sending that: {type(exc).__name__}: {exc})")
        try:
            wrapped = ExceptionWrapper((type(exc), exc, exc.__traceback__),
                                       where=f"in DataLoader worker process {info.id} {SENDING}")
            queue.put((obj[0], wrapped))
            return
        except Exception:  # noqa: BLE001 - a closed queue: the main process is gone or going; say it below
            pass
    _PYTHONS_HOOK(exc, obj)


_PYTHONS_HOOK = multiprocessing.queues.Queue._on_queue_feeder_error


def guard_feeder() -> None:
    """In a DataLoader worker (`loader.worker_init`): its queues answer a batch they cannot send with the error.

    Set on the class, in the worker process only (its sole queue that sends is torch's data queue), before the
    worker's first batch starts its feeder thread, which takes the hook then (`Queue._start_thread`)."""
    multiprocessing.queues.Queue._on_queue_feeder_error = _feeder_error  # type: ignore[method-assign,assignment]


def _cause(text: str) -> tuple[int, str] | None:
    """(errno, torch's words) of a shared-memory refusal told in `text`, or None when `text` tells another."""
    found = _TORCH_SHM.search(text)
    if found:
        return int(found.group(2)), found.group(1)
    if _BUS_ERROR.search(text):  # a page of a /dev/shm file that had no room behind it, touched
        return errno.ENOSPC, "a worker was killed by a bus error"
    if _TORCH_FDS in text:  # the main process could not take a batch's shared-memory file from a worker
        return errno.EMFILE, "Too many open files"
    found = _ERRNO.search(text)
    if found and SENDING in text and int(found.group(1)) in (errno.EMFILE, errno.ENFILE, errno.ENOSPC):
        return int(found.group(1)), found.group(2)
    return None


def refused_batch(exc: BaseException) -> SharedMemoryError | None:
    """The one-line error for `exc` (raised by a DataLoader with workers) when shared memory refused a batch."""
    if isinstance(exc, SharedMemoryError):
        return exc
    cause = _cause(str(exc))
    if cause is None:
        return None
    code, words = cause
    if code == errno.EFBIG:
        why, fix = f"this process's file-size limit (`ulimit -f`) is below one batch ({words})", "raise the limit"
    elif code in (errno.EMFILE, errno.ENFILE):
        why, fix = f"this process may open no more files ({words}; `ulimit -n`)", "raise the open-file limit"
    elif code in DISK_FULL_ERRNOS:
        why, fix = f"/dev/shm is full ({words})", "free space in /dev/shm or make it larger (Docker: --shm-size)"
    else:  # no memory to map it, /dev/shm missing or not writable: torch's words say which
        why, fix = f"torch could not make its shared-memory file ({words})", "check /dev/shm (room, and this user's access)"
    fix += ", or decode in this process (--workers 0),"
    kind = SharedMemoryFullError if code in DISK_FULL_ERRNOS else SharedMemoryError
    error = kind(code, f"could not write a batch of decoded images to shared memory on its way from a decoding worker: "
                       f"{why}; {fix} and run the command again", "/dev/shm")
    if isinstance(error, SharedMemoryFullError):  # what `DiskFullError.advising` says again
        error.why, error.fix = why, fix
    return error
