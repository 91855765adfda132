"""One way to build a DataLoader for every clipforge job.

Choices made once here instead of at every call site: worker processes decode images (the GIL
would serialise decoding in threads); each worker runs torch with one thread (N workers x M
intra-op threads oversubscribes small CPUs badly); persistent workers are off so that
`dataset.set_epoch()` reaches the workers, which are re-forked each epoch; pin_memory only when
CUDA exists; map-style datasets are wrapped so each batch carries the dataset indices of its
samples, which evaluation needs to map predictions back to files. A batch shared memory refuses on its way from
a worker (a full /dev/shm, `ulimit -f`) is one line, `sharing.SharedMemoryError`, never a batch lost and waited
for (`sharing`'s docstring says how). Workers end with their command, a forkserver's too (`lifeline`), and put
their sockets in the command's temporary folder (`_share_temp_folder`).
"""

from __future__ import annotations

import functools
import multiprocessing.util
import random
import threading
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from clipforge.cores import die_with_parent

from . import lifeline
from .collate import Indexed, skip_bad_collate
from .sharing import guard_feeder, refused_batch

__all__ = ["RampBatches", "WithIndex", "make_loader", "worker_init"]


class WithIndex(Dataset):
    """Map-style dataset wrapper yielding `Indexed(index, dataset[index])`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Indexed:
        return Indexed(index, self.dataset[index])

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def worker_init(worker_id: int, tied: bool = False) -> None:
    """Give every worker one torch thread, distinct, reproducible python/numpy seeds, and a data queue that answers a
    batch it cannot send with the error (`sharing.guard_feeder`); `tied`: end it with its
    parent (`cores.die_with_parent`), for workers forked by the main thread (the signal follows the thread that
    forked, and a pool thread ending while its process goes on would take them along). A worker whose parent is
    not the command (a forkserver's) ends with the command all the same (`lifeline.hold`)."""
    lifeline.hold()
    if tied:
        die_with_parent()
    guard_feeder()  # a batch that cannot be sent is raised in the command, not lost (`sharing`)
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32  # DataLoader sets base_seed + worker_id per worker
    random.seed(seed)
    np.random.seed(seed)


def _share_temp_folder() -> None:
    """Make this process's multiprocessing temporary folder (/tmp/pymp-*) before its workers start: they inherit its
    name and put their sockets there (each hands its batches' shared memory over one). A worker's own folder was left
    behind whenever the worker ended by a signal (a service manager's SIGTERM to the group, torch's terminate of a
    late worker); the command removes its folder, with what its workers put there, when it exits."""
    multiprocessing.util.get_temp_dir()


class RampBatches(Sampler[list[int]]):
    """Indices 0..n-1 in order, in batches of `batch_size` after a first batch of `first` (the rest
    of the first `batch_size` follows as the second batch, so later batches keep their boundaries)."""

    def __init__(self, n: int, first: int, batch_size: int) -> None:
        self.n, self.first, self.batch_size = int(n), max(1, min(int(first), int(batch_size))), int(batch_size)

    def _bounds(self) -> list[int]:
        if self.n <= 0:
            return [0]
        cuts = [0, min(self.first, self.n)]
        cuts += [c for c in range(self.batch_size, self.n, self.batch_size) if c > cuts[-1]]
        return [*cuts, self.n] if cuts[-1] < self.n else cuts

    def __iter__(self):  # type: ignore[override]
        bounds = self._bounds()
        for start, stop in zip(bounds, bounds[1:], strict=False):
            yield list(range(start, stop))

    def __len__(self) -> int:
        return len(self._bounds()) - 1


class _Batches:
    """A DataLoader's iterator whose shared-memory refusals are `sharing.SharedMemoryError` (one line).

    An exception from a worker ends the iteration (every job here stops on one): its workers are told to stop
    before it is raised. Left to the garbage collector (torch's `reraise` holds the iterator in a traceback
    cycle), torch's shutdown found the index queue's pipe already closed, waited 5 s for workers that never
    heard it, then killed them, in whichever thread happened to collect."""

    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except StopIteration:
            raise
        except Exception as exc:
            self._end_workers()
            error = refused_batch(exc)
            if error is None or error is exc:
                raise
            cause = exc
        try:
            raise error from cause
        finally:
            del error, cause  # no cycle through this frame: the error's traceback would hold it

    def _end_workers(self) -> None:
        shutdown = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name: str) -> Any:
        if name == "_iterator":  # not yet set
            raise AttributeError(name)
        return getattr(self._iterator, name)


class _Loader(DataLoader):
    """`DataLoader` whose iterators say a refused batch in one line (`_Batches`)."""

    def __iter__(self) -> Any:  # type: ignore[override]
        iterator = super().__iter__()
        return _Batches(iterator) if self.num_workers > 0 else iterator


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    collate_fn=skip_bad_collate,
    prefetch_factor: int | None = None,
    sampler: Sampler | None = None,
    first_batch: int | None = None,
    context: Any = None,
) -> DataLoader:
    """DataLoader yielding `Batch(images, labels, indices, errors)`; see module doc for the choices.

    `sampler` (e.g. `DistributedSampler(dataset, num_replicas, rank, shuffle=True, seed=seed)` for
    map-style data under DDP; call its `set_epoch`) replaces `shuffle`. `first_batch` (map-style data
    read in order): a shorter first batch (`RampBatches`), so the consumer starts after that many
    items instead of a whole batch while the workers go on decoding. `context`: the multiprocessing
    context the workers start in (None: the platform's default, fork on Linux).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    iterable = isinstance(dataset, IterableDataset)
    if sampler is not None and (shuffle or iterable):
        raise ValueError("pass either sampler= or shuffle=True, and no sampler for a streamed dataset")
    if iterable and shuffle:
        raise ValueError("shuffle=True does not apply to a streamed (iterable) dataset; it shuffles itself")
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        _share_temp_folder()
        # started by the main thread (the commands): a `kill -9` of the command takes its workers along
        kwargs["worker_init_fn"] = functools.partial(worker_init, tied=threading.current_thread() is threading.main_thread())
        kwargs["persistent_workers"] = False
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
        if context is not None:  # how workers start (`files.worker_context`); default: fork
            kwargs["multiprocessing_context"] = context
    if first_batch is not None and not (iterable or shuffle or sampler is not None or drop_last):
        batching: dict[str, Any] = {"batch_sampler": RampBatches(len(dataset), first_batch, batch_size)}  # type: ignore[arg-type]
    else:
        batching = {"batch_size": batch_size, "shuffle": shuffle, "sampler": sampler, "drop_last": drop_last}
    return _Loader(
        dataset if iterable else WithIndex(dataset),
        **batching,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        **kwargs,
    )
