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
atomically, the stats file last).

A resume may only continue the same job, or the folder would mix two jobs' vectors under one
manifest. ``OUT/job.json`` records what decides the partitions' contents (`job_identity`: the model
fingerprint, the precision and decode settings, the pixel limit, the stored dtype, the partition
size and the ordered file list, by count and hash) and is written before the first partition, so a
run killed at any point leaves a folder its rerun can check. A run whose identity differs, or a
folder holding partitions with no record, is refused in one line before any file is touched
(`ExportMismatch`); ``overwrite=True`` clears the old job first, its record before its partitions,
so an overwrite killed while clearing leaves a folder that is refused, one killed later a resumable
folder of the new job: never a mix that passes for either.

Under ``torchrun --nproc_per_node N`` RANK and WORLD_SIZE
come from the environment; a gloo process group is joined only to wait for all ranks and let
rank 0 write ``manifest.json``; without torchrun's rendezvous variables each rank works alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.atomic import atomic_path, remove_stale_temps, write_json_atomic
from clipforge.data.base import BadImage
from clipforge.data.files import EmbeddedBatch, ImageFileReader, embed_files, with_max_pixels
from clipforge.errors import UsageError, UserError
from clipforge.library.dbfile import display_path
from clipforge.library.encoder import Encoder, resolve_encoder
from clipforge.library.scan import discover_files, is_under, normalise_path

__all__ = ["ExportMismatch", "ExportReport", "check_export_settings", "check_output_apart", "export_embeddings",
           "job_identity", "partition_name", "read_export", "rank_partitions"]

JOB_FILE = "job.json"
JOB_FORMAT = 1
_PARTITION_GLOBS = (("img_emb", "img_emb_*.npy"), ("metadata", "metadata_*.parquet"), ("stats", "stats_*.json"))


class ExportMismatch(UserError, ValueError):
    """`--out` holds another job's embeddings (or partitions of no recorded job): resuming would mix them."""


@dataclass
class ExportReport:
    rank: int
    world_size: int
    partitions: int
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    images: int = 0
    failed: int = 0
    bad: list[BadImage] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(printable path, reason) of each failed file (read-only view of `bad`)."""
        return [(b.to_dict()["path"], b.reason) for b in self.bad]

    def summary_line(self) -> str:
        """One line for the terminal; "rank R/W: " first only when the job is one of several (torchrun)."""
        rank = f"rank {self.rank}/{self.world_size}: " if self.world_size > 1 else ""
        return (f"{rank}wrote {len(self.written)} of {self.partitions} partitions "
                f"({len(self.skipped)} already done), {self.images} embeddings, {self.failed} failed "
                f"in {self.seconds:.1f}s")

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "partitions": self.partitions,
                "written": self.written, "skipped": self.skipped, "images": self.images, "failed": self.failed,
                "failures": [b.to_dict() for b in self.bad], "seconds": round(self.seconds, 3)}


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_export_settings(shard_size: Any, batch_size: Any = 64, workers: Any = None) -> None:
    """`UsageError` (a ValueError) naming the first unusable setting. A shard size below 1 used to drop
    files (a negative slice) or divide by zero; a batch size below 1 became 1 and workers below 0 became
    0, silently (`clipforge embed` says the same of its flags first: `clipforge.cli.embed`)."""
    if not _whole(shard_size) or shard_size < 1:
        raise UsageError(f"shard_size must be at least 1 (images per output partition), got {shard_size!r}")
    if not _whole(batch_size) or batch_size < 1:
        raise UsageError(f"batch_size must be at least 1 (images per model batch), got {batch_size!r}")
    if workers is not None and (not _whole(workers) or workers < 0):
        raise UsageError(f"workers must be 0 (decode in this process) or more, got {workers!r}")


def check_output_apart(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                       recursive: bool = True) -> None:
    """`UsageError`, before anything is read or written, when `out_dir` would hide photos the `paths` name.

    The scan never walks into the output folder (`discover_files(exclude=[out])`: an export must not
    embed its own files), so an input folder that is `out_dir` or lies inside it would contribute nothing,
    and image files inside an `out_dir` that an input folder's walk reaches would be left out: both were
    a silent "wrote 0 of 0 partitions" (or fewer embeddings than photos), exit status 0. An `out_dir`
    inside an input folder is fine while it holds no photos (its own npy, parquet and json are not
    images); a file named explicitly is always read, wherever it lies.
    """
    out = normalise_path(out_dir)
    inputs = [(raw, normalise_path(raw)) for raw in paths]
    for raw, path in inputs:
        if os.path.isdir(path) and (path == out or is_under(path, [out])):
            where = "is the input folder" if path == out else "holds the input folder"
            raise UsageError(f"--out {display_path(os.fspath(out_dir))} {where} {display_path(os.fspath(raw))}: "
                             f"embed never reads the folder it writes to, so those photos would not be embedded; "
                             f"choose an --out outside the input folders")
    if not recursive or not os.path.isdir(out):
        return
    for raw, path in inputs:
        if not (os.path.isdir(path) and is_under(out, [path])):
            continue
        if any(part.startswith(".") for part in Path(os.path.relpath(out, path)).parts):
            continue  # the walk skips hidden folders: it never reaches this --out
        hidden = discover_files([out], recursive=True)
        if hidden:
            raise UsageError(f"--out {display_path(os.fspath(out_dir))} is inside the input folder "
                             f"{display_path(os.fspath(raw))} and holds {len(hidden)} image file(s) "
                             f"(e.g. {display_path(hidden[0])}) that embed would leave out, as it never reads "
                             f"the folder it writes to; move them, or choose an --out that holds no photos")


def partition_name(index: int, count: int) -> str:
    """Zero-padded like clip-retrieval, so lexical order is numeric order."""
    return str(index).zfill(int(math.log10(max(1, count))) + 1)


def rank_partitions(count: int, rank: int, world_size: int) -> list[int]:
    return [i for i in range(count) if i % world_size == rank]


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


def _paths(out: Path, name: str) -> tuple[Path, Path, Path]:
    return (out / "img_emb" / f"img_emb_{name}.npy", out / "metadata" / f"metadata_{name}.parquet",
            out / "stats" / f"stats_{name}.json")


# The metadata columns are built from buffers, not with `pa.array(list)`: that call imports pandas, where it is
# installed, to check its argument for pandas objects (0.24 s of an `embed` on a 2-core machine, for nothing).
def _strings(values: list[str]) -> Any:
    import pyarrow as pa

    data = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    kind, width = (pa.string(), np.int32) if offsets[-1] < 2**31 else (pa.large_string(), np.int64)
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(offsets.astype(width)), pa.py_buffer(b"".join(data))])


def _int32s(values: list[int]) -> Any:
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(np.asarray(values, dtype=np.int32))])


def _write_partition(out: Path, name: str, vectors: np.ndarray, rows: dict[str, list[Any]],
                     stats: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb_path, meta_path, stats_path = _paths(out, name)
    with atomic_path(emb_path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, vectors)
    table = pa.Table.from_arrays([_strings(rows["image_path"]), _strings(rows["sha256"]), _int32s(rows["width"]),
                                  _int32s(rows["height"])], names=["image_path", "sha256", "width", "height"])
    with atomic_path(meta_path, suffix=".parquet") as tmp:
        pq.write_table(table, str(tmp))
    write_json_atomic(stats_path, stats)  # last: its presence marks the partition complete


class PartitionWriter:
    """clip-retrieval's writer for `embed_files`: one partition's vectors and metadata rows, in reading
    order (every file its own row, repeated bytes included), written atomically by `_write_partition`."""

    def __init__(self, dim: int, dtype: str) -> None:
        self.dim, self.dtype = dim, dtype
        self.chunks: list[np.ndarray] = []
        self.rows: dict[str, list[Any]] = {"image_path": [], "sha256": [], "width": [], "height": []}
        self.bad: list[BadImage] = []

    def write(self, batch: EmbeddedBatch) -> None:
        if batch.rows:
            self.chunks.append(batch.vectors.astype(self.dtype))
        for k in batch.rows:
            item = batch.files[k]
            self.rows["image_path"].append(display_path(item.path))  # parquet/JSON need UTF-8: \xNN escapes
            self.rows["sha256"].append(item.sha256)
            self.rows["width"].append(item.width)
            self.rows["height"].append(item.height)
        self.bad += batch.bad

    def vectors(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, self.dim), dtype=self.dtype)


def _embed_partition(encoder: Encoder, files: list[str], batch_size: int, workers: int | None,
                     max_pixels: int | None, dtype: str, bar: Any) -> PartitionWriter:
    """One partition through the one loop (`clipforge.data.files.embed_files`)."""
    reader = ImageFileReader(files, with_max_pixels(encoder.preprocess, max_pixels), hash=True)
    writer = PartitionWriter(encoder.embed_dim, dtype)
    embed_files(reader, encoder.encode_pixels, writer, dim=encoder.embed_dim, batch_size=batch_size,
                workers=workers, dedupe=False, on_batch=bar.update)
    return writer


def job_identity(encoder: Encoder, files: list[str], *, shard_size: int, dtype: str,
                 max_pixels: int | None) -> dict[str, Any]:
    """What decides the contents of every partition of an export, recorded in ``OUT/job.json``.

    The model by fingerprint (its name is kept for messages: one name may hold other weights), the settings
    that change the numbers (precision, draft or exact decode) or which files fail (the pixel limit), the
    stored dtype, and the cut into partitions: the partition size and the ordered file list. The list is
    kept as a count and a sha256 of its paths (a million paths would make a record of tens of MB).
    Batch size, workers, device and the rank split are left out: they change neither which file lands in
    which partition nor, beyond float rounding, its vector, so a resume may change them.
    """
    check_export_settings(shard_size)
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.fsencode(path) + b"\0")
    return {"format": JOB_FORMAT, "model": encoder.name, "model_fingerprint": encoder.fingerprint,
            "dim": encoder.embed_dim, "precision": encoder.precision,
            "draft_decode": bool(getattr(encoder.preprocess, "draft", False)), "max_pixels": max_pixels,
            "dtype": dtype, "shard_size": shard_size, "partitions": _partition_count(len(files), shard_size),
            "files": len(files), "files_sha256": digest.hexdigest()}


def _partition_count(files: int, shard_size: int) -> int:
    return max(1, math.ceil(files / shard_size)) if files else 0


def _model_words(job: dict[str, Any]) -> str:
    return f"{job.get('model') or 'an unnamed model'} (fingerprint {str(job.get('model_fingerprint'))[:12]})"


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How the recorded job `old` differs from this run's `new`, each as "<old> there, <new> now"."""
    said: list[str] = []
    if old.get("model_fingerprint") != new["model_fingerprint"] or old.get("dim") != new["dim"]:
        said.append(f"model {_model_words(old)} there, {_model_words(new)} now")
    if old.get("precision") != new["precision"]:
        said.append(f"--precision {old.get('precision')} there, {new['precision']} now")
    if old.get("draft_decode") != new["draft_decode"]:
        decode = {True: "draft decode", False: "--exact-decode"}
        said.append(f"{decode.get(old.get('draft_decode'), old.get('draft_decode'))} there, "
                    f"{decode[new['draft_decode']]} now")
    if old.get("max_pixels") != new["max_pixels"]:
        said.append(f"max_pixels {old.get('max_pixels')} there, {new['max_pixels']} now")
    if old.get("dtype") != new["dtype"]:
        said.append(f"{old.get('dtype')} vectors there, {new['dtype']} now (--float32)")
    if old.get("shard_size") != new["shard_size"]:
        said.append(f"--shard-size {old.get('shard_size')} there, {new['shard_size']} now")
    if old.get("files") != new["files"] or old.get("files_sha256") != new["files_sha256"]:
        other = "" if old.get("files") != new["files"] else "other "
        said.append(f"a list of {old.get('files')} files there, {other}{new['files']} files now (files added, "
                    f"removed or renamed, or other PATH arguments)")
    return said


def _existing_partitions(out: Path) -> list[Path]:
    """The partition files (and manifest) in `out`; temporaries of killed writers are dot-files, not matched."""
    found = [p for folder, pattern in _PARTITION_GLOBS for p in sorted((out / folder).glob(pattern))]
    manifest = out / "manifest.json"
    return found + ([manifest] if manifest.exists() else [])


def _read_job(out: Path) -> dict[str, Any] | None:
    path = out / JOB_FILE
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ExportMismatch(f"{path} is not a readable embed job record ({exc}): use --overwrite to replace "
                             f"what {out} holds, or another --out") from exc
    if not isinstance(job, dict) or job.get("format") != JOB_FORMAT:
        raise ExportMismatch(f"{path} is not an embed job record of format {JOB_FORMAT}: use --overwrite to "
                             f"replace what {out} holds, or another --out")
    return job


def check_job(out: Path, job: dict[str, Any]) -> bool:
    """Whether `out` may take this job's partitions; False when it holds no record yet (a fresh folder).

    Raises `ExportMismatch`, touching nothing, when `out` holds another job or partitions of no recorded
    job. The partitions are looked for before the record is read: every writer writes the record before
    its first partition, so a partition seen without a record is not another rank's run just starting.
    """
    partitions = _existing_partitions(out)
    old = _read_job(out)
    if old is None:
        if partitions:
            raise ExportMismatch(
                f"{out} holds embed partitions with no {JOB_FILE} saying which job wrote them (an older "
                f"clipforge, or an interrupted --overwrite), e.g. {partitions[0]}: use --overwrite to replace "
                f"them, or another --out")
        return False
    said = _differences(old, job)
    if said:
        raise ExportMismatch(f"{out} holds another embed job ({'; '.join(said)}): use --overwrite to replace "
                             f"it, or another --out")
    return True


def clear_job(out: Path) -> None:
    """Remove an export's own files from `out` (nothing else in it), in the order that keeps a kill safe.

    The job record goes first, so from then on the folder claims no job and a plain rerun refuses it;
    then the manifest and the stats files (each marks a partition complete), then the vectors and rows.
    """
    (out / JOB_FILE).unlink(missing_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    for folder, pattern in reversed(_PARTITION_GLOBS):
        for path in sorted((out / folder).glob(pattern)):
            path.unlink(missing_ok=True)


def _claim_output(out: Path, job: dict[str, Any], overwrite: bool, rank: int, world_size: int,
                  joined: bool) -> None:
    """Make `out` this job's folder before any partition is written: refuse, resume, start or replace."""
    if overwrite and world_size > 1 and not joined:
        raise ExportMismatch(f"--overwrite with WORLD_SIZE={world_size} needs torchrun's rendezvous "
                             f"(MASTER_ADDR, MASTER_PORT), so that one rank clears {out} before the others "
                             f"write; run under torchrun, or clear {out} first")
    if overwrite and rank == 0:
        clear_job(out)
    if overwrite and joined:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has cleared the old job; every rank now finds none, or rank 0's record
    for folder in (out, *(out / name for name, _ in _PARTITION_GLOBS)):
        remove_stale_temps(folder)  # what killed writers left; a live writer's temporaries stay
    if not check_job(out, job):
        write_json_atomic(out / JOB_FILE, job)  # before the first partition: a killed run stays resumable


def export_embeddings(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], model: Any, *,
                      recursive: bool = True, shard_size: int = 100_000, batch_size: int = 64, workers: int | None = 0,
                      rank: int | None = None, world_size: int | None = None, dtype: str = "float16",
                      max_pixels: int | None = None, overwrite: bool = False, progress: bool = True,
                      precision: str = "fp32", draft: bool = True,
                      device: str | None = None) -> ExportReport:
    """Embed this rank's share of the images under `paths` into `out_dir` (see module docstring).

    `model` is anything `resolve_encoder` accepts; `precision` ("fp32", "bf16"), `draft` (False:
    exact JPEG decode) and `device` apply when it is not already an `Encoder`. `workers=None`
    uses `clipforge.data.files.default_workers()`. A setting out of range (`check_export_settings`) or an
    `out_dir` that would hide input photos (`check_output_apart`) is a `UsageError` before anything is written.
    """
    from tqdm.auto import tqdm

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
    started = time.perf_counter()
    joined = _maybe_init_group(world_size)
    out = Path(out_dir)
    files = discover_files(paths, recursive=recursive, exclude=[out])
    count = _partition_count(len(files), shard_size)
    report = ExportReport(rank=rank, world_size=world_size, partitions=count)
    encoder = resolve_encoder(model, device=device, precision=precision, draft=draft, towers=("image",))
    job = job_identity(encoder, files, shard_size=shard_size, dtype=dtype, max_pixels=max_pixels)
    _claim_output(out, job, overwrite, rank, world_size, joined)
    mine = rank_partitions(count, rank, world_size)
    todo = []
    for i in mine:
        if all(p.exists() for p in _paths(out, partition_name(i, count))):
            report.skipped.append(i)
        else:
            todo.append(i)
    total = sum(len(files[i * shard_size:(i + 1) * shard_size]) for i in todo)
    with tqdm(total=total, unit="img", desc=f"embed rank {rank}", disable=not progress, dynamic_ncols=True) as bar:
        for i in todo:
            part = files[i * shard_size:(i + 1) * shard_size]
            written = _embed_partition(encoder, part, batch_size, workers, max_pixels, dtype, bar)
            vectors, rows, bad = written.vectors(), written.rows, written.bad
            stats = {"partition": i, "partitions": count, "rank": rank, "world_size": world_size,
                     "files": len(part), "embedded": len(vectors), "failed": len(bad),
                     "failures": [b.to_dict() for b in bad], "dtype": dtype,
                     "model": encoder.name, "model_fingerprint": encoder.fingerprint, "dim": encoder.embed_dim,
                     "precision": encoder.precision,
                     "draft_decode": bool(getattr(encoder.preprocess, "draft", False))}
            _write_partition(out, partition_name(i, count), vectors, rows, stats)
            report.written.append(i)
            report.images += len(vectors)
            report.failed += len(bad)
            report.bad += bad
    report.seconds = time.perf_counter() - started
    if joined:
        _finish_group(out, report, job)
    elif world_size == 1:
        write_json_atomic(out / "manifest.json", {"partitions": count, "files": len(files), "job": job,
                                                  "ranks": [report.to_dict()]})
    return report


def _finish_group(out: Path, report: ExportReport, job: dict[str, Any]) -> None:
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, report.to_dict())
    if dist.get_rank() == 0:
        write_json_atomic(out / "manifest.json", {"partitions": job["partitions"], "files": job["files"],
                                                  "job": job, "ranks": gathered})
    dist.barrier()
    dist.destroy_process_group()


def read_export(out_dir: str | os.PathLike[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """All vectors (float32) and metadata rows of an export, checking that npy and parquet align."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    vectors: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for emb_path in sorted((out / "img_emb").glob("img_emb_*.npy")):
        name = emb_path.stem[len("img_emb_"):]
        meta_path = out / "metadata" / f"metadata_{name}.parquet"
        array = np.load(emb_path)
        table = pq.read_table(meta_path)
        if table.num_rows != len(array):
            raise ValueError(f"{meta_path} has {table.num_rows} rows but {emb_path} has {len(array)} vectors")
        vectors.append(array.astype(np.float32))
        rows.extend(table.to_pylist())
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32), []
    return np.concatenate(vectors), rows


def load_export_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "manifest.json").read_text(encoding="utf-8"))
