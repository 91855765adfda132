"""The lock an embed run holds on its `--out` folder while it runs (`embed_lock`): a second run beside it is
refused in one line, never mixed in (audit 63: an ``--overwrite`` beside a running job left duplicated vectors,
lost photos and a manifest that disagreed with the job record, both exiting 0)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from clipforge.errors import UserError

__all__ = ["LOCK_FILE", "OutputInUse", "embed_lock"]

LOCK_FILE = ".clipforge-embed.lock"
"""In `out`, beside the job record: a dot-file no reader of the layout looks at (not a partition, not a temporary)."""


class OutputInUse(UserError, RuntimeError):
    """`--out` is being written by an embed job running now: a second writer (a resume, another job, an overwrite)
    would mix the two jobs' partitions, so it is refused before it loads a model or touches a file."""

    http_status = 409


@contextmanager
def embed_lock(out: str | os.PathLike[str], rank: int | None = None, world_size: int | None = None) -> Iterator[None]:
    """Hold `out` for this embed run, from before its model loads to its manifest, or raise `OutputInUse` at once.

    Without it an ``--overwrite`` (or a second resume) beside a running job cleared and rewrote the folder while
    the first kept writing: duplicated vectors, lost photos, a manifest and a job record that disagreed, both
    exiting 0. The lock is `clipforge.library.lock.hold_lock` on `LOCK_FILE` (dropped by the kernel when its holder
    dies, so nothing stale blocks a resume), recording the holder's pid and command words (`clipforge embed`: never its other arguments, which anyone who
    can read the folder reads) for the refusal to name.
    A one-process run (`world_size` 1) locks the whole file; rank r of a job of several ranks (RANK, WORLD_SIZE by
    default) locks only its part r, so the ranks of one job run together while each excludes any one-process run
    and the same rank of another; ranks that join torchrun's group also wait for each other before writing, so a
    rank refused here holds back its whole job."""
    from clipforge.atomic import NewFolders, folder_problem
    from clipforge.errors import UsageError
    from clipforge.library.dbfile import display_path
    from clipforge.library.lock import LockHeld, command_words, hold_lock

    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    folder, shown = Path(out), display_path(os.fspath(out))
    problem = folder_problem(folder)  # `--out afile` was "[Errno 17] File exists" once the lock made the folder
    if problem is not None:
        raise UsageError(f"--out {shown}: {problem}")
    made = NewFolders([folder])  # a run that fails before writing anything leaves no empty --out behind
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with ExitStack() as held:
            try:
                held.enter_context(hold_lock(folder / LOCK_FILE, command_words(), None if world_size <= 1 else rank))
            except LockHeld as exc:
                who = "pid unknown" if exc.pid is None else f"pid {exc.pid}"
                raise OutputInUse(f"{shown} is in use by a running embed job ({who}"
                                  f"{f': {exc.record}' if exc.record else ''}): wait for it to end, or use another "
                                  f"--out") from None
            yield
    except BaseException:
        made.remove_unused()  # after the lock file went with the lock: only folders left empty
        raise
