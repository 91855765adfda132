"""One model space's share of an `index add` on a Milvus store: plan, embed, write.

The plan is the embedded store's (`indexer._plan`, over the space's rows instead of SQLite's): an
unchanged size and mtime is skipped without reading, bytes the space already holds are not embedded
again, a file that failed before is retried only when it changed (or `retry_failed`). What is left goes
through the one embedding loop (`clipforge.data.files.embed_files`) into `MilvusWriter`, one idempotent
upsert per batch, new photos tagged with the space's remembered vocabulary on the way. The report counts the
indexed photos of the folders named whose files are gone (`gone_under`), as the embedded store's does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from clipforge.data.files import default_workers
from clipforge.library.encoder import Encoder
from clipforge.library.indexer import AddReport, _plan, _Planned, count_unwalked, embed_planned
from clipforge.library.milvus_store import MilvusSpace, MilvusStore
from clipforge.library.milvus_tags import space_tagger
from clipforge.library.milvus_writer import MilvusWriter
from clipforge.library.scan import is_under
from clipforge.library.store import FileState

__all__ = ["add_to_space", "gone_under", "rank_done"]

Rejected = tuple[str, int, int, str]
"""A file the scan refused before reading it: (path, size, mtime_ns, reason)."""


def add_to_space(milvus: MilvusStore, space: MilvusSpace, encoder: Encoder, files: list[str], rejected: list[Rejected],
                 others: Callable[[], list[MilvusSpace]], cache_dir: Path, max_pixels: int, *, retry_failed: bool,
                 rehash: bool = False,
                 batch_size: int, workers: int | None, progress: bool, label: str,
                 folders: Sequence[str] = (), seen: Collection[str] = ()) -> tuple[AddReport, int]:
    """Index `files` into `space` (`rejected`: recorded as failures, or unchanged); the report and how many new
    photos were tagged. `others()`: the store's other model spaces (a moved file is relinked in each).
    `folders`: the normalised folders named, `seen`: every path their scan found (all ranks' share), for the
    report's count of photos gone from disk (`gone_under`)."""
    report = AddReport()
    known = file_states(space)
    held = {s.sha256 for s in known.values() if s.status == "ok" and s.sha256}
    todo, unstat = _plan(_States(known), files, held, retry_failed, report, rehash)  # rehash: unchanged stats too
    planned = {p.path: p for p in todo} | {p.path: p for p, _ in unstat}
    for path, size, mtime_ns, reason in rejected:
        state = known.get(path)
        if (state is not None and not retry_failed and state.status == "failed"
                and (state.size, state.mtime_ns) == (size, mtime_ns)):
            report.skip_failed()
        else:
            planned[path] = _Planned(path, size, mtime_ns)
            unstat.append((planned[path], reason))
    # New photos get the space's tags in the upsert that stores them, from the vocabulary named then (`space_tagger`).
    writer = MilvusWriter(space, report, planned, known, held, space_tagger(milvus, space, encoder, cache_dir),
                          others=others)
    embed_planned(todo, unstat, writer, encoder, held, report, max_pixels=max_pixels, batch_size=batch_size,
                  workers=default_workers() if workers is None else workers, progress=progress,
                  desc=f"indexing {label}")
    report.gone = gone_under(known, folders, seen)  # after the writes: `known` has followed each relinked file
    unseen = set(seen)
    count_unwalked(report, [p for p, state in known.items() if state.status == "ok" and p not in unseen], folders)
    return report, writer.tagged


def gone_under(known: dict[str, FileState], folders: Sequence[str], seen: Collection[str]) -> int:
    """How many 'ok' photos stored in `folders` (and below) the scan did not find (`seen`) and that are not on disk
    any more: `clipforge.library.library_writes`'s rule for the embedded store (kept, not removed; a link whose
    target was deleted is gone too). Read from the rows the plan reads anyway (`known`): no extra query."""
    if not folders:
        return 0
    seen = set(seen)
    return sum(1 for path, state in known.items() if state.status == "ok" and is_under(path, folders)
               and path not in seen and not os.path.exists(path))


def file_states(space: MilvusSpace) -> dict[str, FileState]:
    """path -> what the space stored of it (id, size, mtime, status, sha256)."""
    return {r["path"]: FileState(int(r["id"]), int(r["size"]), int(r["mtime_ns"]), r["status"], r["sha256"] or None)
            for r in space.iter_rows(fields=["path", "id", "size", "mtime_ns", "status", "sha256"])}


def rank_done(world_size: int) -> None:
    """Under torchrun: wait for every rank (gloo), so rank 0's exit means the whole collection is written."""
    from clipforge.library.export import _maybe_init_group

    if _maybe_init_group(world_size):
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


class _States:
    """`indexer._plan` reads `store.file_states()`; here they come from the space's rows."""

    def __init__(self, states: dict[str, FileState]) -> None:
        self.states = states

    def file_states(self) -> dict[str, FileState]:
        return self.states
