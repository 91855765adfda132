"""Embedding export in clip-retrieval's layout, shardable across processes and machines.

Output (what clip-retrieval writes and autofaiss / embedding-reader read):

    OUT/img_emb/img_emb_{i}.npy           [n_i, D] unit vectors (float16 by default, as clip-retrieval)
    OUT/metadata/metadata_{i}.parquet     n_i rows, aligned with the npy: image_path, sha256, width, height
    OUT/stats/stats_{i}.json              per partition: counts, model, the files that failed and why
    OUT/job.json                          what decides the partitions' contents (written before the first)
    OUT/manifest.json                     when every partition is written: the job and each rank's report

The sorted file list is cut into partitions of `shard_size` files; partition i belongs to
rank ``i % world_size``. So ranks never overlap, together they cover everything, and a rank
that dies can be re-run: partitions whose three files exist are skipped (each file is written
atomically, the stats file last) unless one of their files was edited since (size or modification time:
`clipforge.library.export_job.partition_state`), or their npy or parquet is no longer whole (emptied, cut short, not
the size the stats record: `clipforge.library.export_whole`), which writes that partition again. A partition an earlier
clipforge wrote without that stamp is kept (and stamped) when its records name exactly its files and each row's
recorded sha256 is that of its file's bytes now (times alone are fooled by a swapped folder), else written again
with that reason; the summary counts each reason apart. Entries named like images that
are not regular files (a FIFO, a device) are never opened: each is a failure of its partition with the reason
`clipforge.library.scan.scan_paths` gives, as `index add` records them. File names are written losslessly
(`clipforge.library.dbfile.path_text`: ``b64:`` + base64 for a name that is not UTF-8).

A resume may only continue the same job, or the folder would mix two jobs' vectors under one
manifest: ``OUT/job.json`` records what decides the partitions' contents, and a run of another job
is refused before any file is touched (`clipforge.library.export_job`).

Under ``torchrun --nproc_per_node N`` RANK and WORLD_SIZE
come from the environment; a gloo process group is joined only to wait for all ranks and let
rank 0 write ``manifest.json``; without torchrun's rendezvous variables each rank works alone.

This module runs the export (`export_embeddings`: ranks, partitions to do, the embedding loop, the
manifest) and holds its report; the checks made before anything is read are
`clipforge.library.export_checks`, the files and their layout `clipforge.library.export_layout`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforge.atomic import write_json_atomic
from clipforge.data.base import BadImage
from clipforge.data.files import ImageFileReader, embed_files, with_max_pixels
from clipforge.library.encoder import Encoder, resolve_encoder
from clipforge.library.export_checks import check_export_settings
from clipforge.library.export_checks import check_output_apart as check_output_apart
from clipforge.library.export_job import (
    CHANGED,
    DAMAGED,
    DONE,
    LEGACY_CHANGED,
    LEGACY_UNLISTED,
    STAMPED,
    UNREADABLE,
    claimed_output,
    files_stamp,
    job_identity,
    partition_state,
)
from clipforge.library.export_job import JOB_FILE as JOB_FILE
from clipforge.library.export_job import JOB_FORMAT as JOB_FORMAT
from clipforge.library.export_job import ExportMismatch as ExportMismatch
from clipforge.library.export_job import check_job as check_job
from clipforge.library.export_job import clear_job as clear_job

# `export_embeddings` reaches `_write_partition` and `_embed_partition` (below) through this module's names, so
# replacing `export._write_partition` (a writer killed mid-partition, in the resume tests) still takes effect.
from clipforge.library.export_layout import (
    PartitionWriter,
    _partition_count,
    _paths,
    _write_partition,
    partition_name,
    rank_partitions,
    writing,
)
from clipforge.library.export_layout import _int32s as _int32s
from clipforge.library.export_layout import _strings as _strings
from clipforge.library.export_layout import load_export_manifest as load_export_manifest
from clipforge.library.export_layout import read_export as read_export
from clipforge.library.export_lock import embed_lock
from clipforge.library.scan import scan_paths

__all__ = [
    "ExportMismatch",
    "ExportReport",
    "check_export_settings",
    "check_output_apart",
    "export_embeddings",
    "job_identity",
    "partition_name",
    "read_export",
    "rank_partitions",
]


@dataclass
class ExportReport:
    rank: int
    world_size: int
    partitions: int
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)  # written again: files in them edited since
    # partitions an earlier clipforge wrote without file stamps (`export_job._legacy_state`): kept and stamped now
    # (also in `skipped`), or written again as a file is newer than them or not the bytes they embedded, or as their
    # records name other files
    stamped: list[int] = field(default_factory=list)
    legacy_changed: list[int] = field(default_factory=list)
    legacy_unlisted: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)  # written again: their records could not be read
    # written again: their npy or parquet was empty, cut short or not as their stats record (`export_whole`); `damage`
    # says what, a phrase naming the file, in the same order
    damaged: list[int] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    images: int = 0
    failed: int = 0
    bad: list[BadImage] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of each failed file (read-only view of `bad`), as `AddReport.failures`: the lines people
        read show it with `display_path`, the JSON with `BadImage.to_dict`."""
        return [(b.path, b.reason) for b in self.bad]

    def summary_line(self) -> str:
        """One line for the terminal; "rank R/W: " first only when the job is one of several (torchrun)."""
        rank = f"rank {self.rank}/{self.world_size}: " if self.world_size > 1 else ""
        old = "written by an earlier clipforge without file stamps"
        again = "".join(
            f"; {len(parts)} written again, as {why}"
            for parts, why in (
                (self.changed, "files in them changed since (size or modification time)"),
                (self.legacy_changed, f"they were {old}, and files in them changed since"),
                (self.legacy_unlisted, f"they were {old}, and their records do not name exactly their files now"),
                (self.unreadable, "their stats or metadata files could not be read"),
                (self.damaged, "their vectors or metadata files were damaged (emptied, cut short, or not as their "
                 f"stats record){', e.g.' if len(self.damage) > 1 else ':'} {self.damage[0] if self.damage else ''}"),
            )
            if parts
        )
        stamped = f", {len(self.stamped)} of them {old}, checked and stamped now" if self.stamped else ""
        return (
            f"{rank}wrote {len(self.written)} of {self.partitions} partitions "
            f"({len(self.skipped)} already done{stamped}{again}), {self.images} embeddings, {self.failed} failed "
            f"in {self.seconds:.1f}s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "partitions": self.partitions,
            "written": self.written,
            "skipped": self.skipped,
            "changed": self.changed,
            "stamped": self.stamped,
            "legacy_changed": self.legacy_changed,
            "legacy_unlisted": self.legacy_unlisted,
            "unreadable": self.unreadable,
            "damaged": self.damaged,
            "damage": self.damage,
            "images": self.images,
            "failed": self.failed,
            "failures": [b.to_dict() for b in self.bad],
            "seconds": round(self.seconds, 3),
        }


def _env_rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _maybe_init_group(world_size: int) -> bool:
    """Join torchrun's gloo group when its rendezvous variables exist (we only need a barrier)."""
    import torch.distributed as dist

    if world_size <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
        return False
    dist.init_process_group("gloo")
    return True


def _embed_partition(
    encoder: Encoder,
    files: list[str],
    batch_size: int,
    workers: int | None,
    max_pixels: int | None,
    dtype: str,
    bar: Any,
    rejected: dict[str, str] | None = None,
) -> PartitionWriter:
    """One partition through the one loop (`clipforge.data.files.embed_files`); the entries of `rejected` (path:
    reason, not regular files) are never opened, only recorded as failed, as `index add` records them."""
    rejected = rejected or {}
    readable = [path for path in files if path not in rejected]
    reader = ImageFileReader(readable, with_max_pixels(encoder.preprocess, max_pixels), hash=True)
    writer = PartitionWriter(encoder.embed_dim, dtype)
    writer.bad += [BadImage(path, rejected[path]) for path in files if path in rejected]
    bar.update(len(files) - len(readable))
    embed_files(
        reader,
        encoder.encode_pixels,
        writer,
        dim=encoder.embed_dim,
        batch_size=batch_size,
        workers=workers,
        dedupe=False,
        on_batch=bar.update,
    )
    return writer


def export_embeddings(
    paths: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    model: Any,
    *,
    recursive: bool = True,
    shard_size: int = 100_000,
    batch_size: int = 64,
    workers: int | None = 0,
    rank: int | None = None,
    world_size: int | None = None,
    dtype: str = "float16",
    max_pixels: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    precision: str = "fp32",
    draft: bool = True,
    device: str | None = None,
) -> ExportReport:
    """Embed this rank's share of the images under `paths` into `out_dir` (see module docstring).

    `model` is anything `resolve_encoder` accepts; `precision` ("fp32", "bf16"), `draft` (False:
    exact JPEG decode) and `device` apply when it is not already an `Encoder`. `workers=None`
    uses `clipforge.data.files.default_workers()`. A setting out of range (`check_export_settings`) or an
    `out_dir` that would hide input photos (`check_output_apart`) is a `UsageError` before anything is written; a
    run of another process writing `out_dir` is `OutputInUse` (`embed_lock`), before the model loads.
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    check_export_settings(shard_size, batch_size, workers)
    paths = list(paths)
    check_output_apart(paths, out_dir, recursive)  # before the model loads or any file is written
    env_rank, env_world = _env_rank()
    rank = env_rank if rank is None else int(rank)
    world_size = env_world if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if not max_pixels:
        from clipforge.image import DEFAULT_MAX_PIXELS

        max_pixels = DEFAULT_MAX_PIXELS
    with embed_lock(out_dir, rank, world_size):  # before the model loads: a run beside it is refused (OutputInUse)
        return _export_held(paths, Path(out_dir), model, recursive=recursive, shard_size=shard_size,
                            batch_size=batch_size, workers=workers, rank=rank, world_size=world_size, dtype=dtype,
                            max_pixels=max_pixels, overwrite=overwrite, progress=progress, precision=precision,
                            draft=draft, device=device)


def _export_held(paths: list[str | os.PathLike[str]], out_dir: Path, model: Any, *, recursive: bool, shard_size: int,
                 batch_size: int, workers: int | None, rank: int, world_size: int, dtype: str, max_pixels: int,
                 overwrite: bool, progress: bool, precision: str, draft: bool, device: str | None) -> ExportReport:
    """`export_embeddings` once `out_dir` is held (`embed_lock`) and its settings are checked."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    joined = _maybe_init_group(world_size)
    out = Path(out_dir)
    found = scan_paths(paths, recursive=recursive, exclude=[out])
    rejected = {path: reason for path, _size, _mtime, reason in found.rejected}
    files = sorted([*found.files, *rejected])  # one cut for both: a FIFO's failure belongs to one partition
    count = _partition_count(len(files), shard_size)
    report = ExportReport(rank=rank, world_size=world_size, partitions=count)
    encoder = resolve_encoder(model, device=device, precision=precision, draft=draft, towers=("image",))
    job = job_identity(encoder, files, shard_size=shard_size, dtype=dtype, max_pixels=max_pixels)
    with claimed_output(out, job, overwrite, rank, world_size, joined):  # a run that writes nothing leaves no record
        mine = rank_partitions(count, rank, world_size)
        todo = []
        reasons = {STAMPED: report.stamped, CHANGED: report.changed, LEGACY_CHANGED: report.legacy_changed,
                   LEGACY_UNLISTED: report.legacy_unlisted, UNREADABLE: report.unreadable}
        for i in mine:
            state, damage = partition_state(out, partition_name(i, count), files[i * shard_size : (i + 1) * shard_size])
            (report.skipped if state in (DONE, STAMPED) else todo).append(i)
            if state in reasons:
                reasons[state].append(i)
            if state == DAMAGED:
                report.damaged.append(i)
                report.damage.append(str(damage))
        if todo:  # a manifest from before says every partition is written: not true until this run is done
            with writing(out / "manifest.json"):
                (out / "manifest.json").unlink(missing_ok=True)
        total = sum(len(files[i * shard_size : (i + 1) * shard_size]) for i in todo)
        with tqdm(
            total=total, unit="img", desc=f"embed rank {rank}", disable=not progress, dynamic_ncols=True
        ) as bar:
            for i in todo:
                part = files[i * shard_size : (i + 1) * shard_size]
                emb_file, meta_file, stats_file = _paths(out, partition_name(i, count))
                with writing(stats_file):
                    # the old partition is no longer done once its rewrite starts; its vectors and rows go too, stats
                    # first: killed between writing the new npy and parquet, a rewrite had left the new vectors beside
                    # the old rows, which readers of npy + parquet took as one partition
                    for old in (stats_file, meta_file, emb_file):
                        old.unlink(missing_ok=True)
                stamp = files_stamp(part)  # before the files are read: an edit while reading shows on the next run
                written = _embed_partition(encoder, part, batch_size, workers, max_pixels, dtype, bar, rejected)
                vectors, rows, bad = written.vectors(), written.rows, written.bad
                stats = {
                    "partition": i,
                    "partitions": count,
                    "rank": rank,
                    "world_size": world_size,
                    "files": len(part),
                    "embedded": len(vectors),
                    "failed": len(bad),
                    "failures": [b.to_dict() for b in bad],
                    "files_stamp": stamp,
                    "dtype": dtype,
                    "model": encoder.name,
                    "model_fingerprint": encoder.fingerprint,
                    "dim": encoder.embed_dim,
                    "precision": encoder.precision,
                    "draft_decode": bool(getattr(encoder.preprocess, "draft", False)),
                }
                _write_partition(out, partition_name(i, count), vectors, rows, stats)
                report.written.append(i)
                report.images += len(vectors)
                report.failed += len(bad)
                report.bad += bad
        report.seconds = time.perf_counter() - started
        if joined:
            _finish_group(out, report, job)
        elif world_size == 1:
            with writing(out / "manifest.json"):
                write_json_atomic(
                    out / "manifest.json",
                    {"partitions": count, "files": len(files), "job": job, "ranks": [report.to_dict()]},
                )
        return report


def _finish_group(out: Path, report: ExportReport, job: dict[str, Any]) -> None:
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, report.to_dict())
    if dist.get_rank() == 0:
        with writing(out / "manifest.json"):
            write_json_atomic(
                out / "manifest.json",
                {"partitions": job["partitions"], "files": job["files"], "job": job, "ranks": gathered},
            )
    dist.barrier()
    dist.destroy_process_group()
