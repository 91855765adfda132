"""An export's job record (``OUT/job.json``): what may resume into an output folder, and what is refused.

A resume may only continue the same job, or the folder would mix two jobs' vectors under one
manifest. ``OUT/job.json`` records what decides the partitions' contents (`job_identity`: the model
fingerprint, the precision and decode settings, the pixel limit, the stored dtype, the partition
size and the ordered file list, by count and hash) and is written before the first partition, so a
run killed at any point leaves a folder its rerun can check. A run whose identity differs, or a
folder holding partitions with no record, is refused in one line before any file is touched
(`ExportMismatch`); ``overwrite=True`` clears the old job first, its record before its partitions,
so an overwrite killed while clearing leaves a folder that is refused, one killed later a resumable
folder of the new job: never a mix that passes for either.

A file edited in place keeps its name, so the job's list does not see it: each partition's stats file
records `files_stamp` (a digest of its files' names, sizes and modification times, taken before they are read),
and a resume writes again every partition whose files' stamp changed since (`partition_state`), as `index add`
re-embeds a file whose size or mtime changed.

A stats file marks its partition as once written whole, not as whole now: before a partition is kept, its npy
header and parquet footer are read and its files' sizes compared with its stats (`clipforge.library.export_whole`);
one emptied or cut short (a copy stopped midway, a disk problem) is written again, counted apart (`DAMAGED`) with
the file and what is wrong with it. It used to be kept as "already done" and fail when loaded.

A partition written by a clipforge from before the stamp (the Dec-6 release c04ae83 wrote job.json but no
`files_stamp`) is kept only when shown to describe its files' bytes now (`_legacy_state`): its records (the metadata
parquet's ``image_path`` rows and the stats file's failures) must name exactly the partition's files now, and the
sha256 that release recorded for each embedded row (the parquet's ``sha256`` column, the hash of the very bytes it
decoded) must equal the sha256 of the file's bytes now. Times cannot prove that: renaming a folder (``mv ds ds_v1;
mv ds_v2 ds``) or retargeting a symlink changes no file's modification or status-change time, while the names then
hold other photos. The times serve only as a cheap first filter: a file modified or with its status changed since the
partition was written (edited, touched, put back with an old mtime by ``cp -p`` / ``rsync -t``) has it written again
without hashing anything. A failed file's record (no vector) is kept on that time rule alone: it carries no vector
that could be wrong, and the file is listed as failed in the stats and report. A row with no recorded sha256 proves
nothing and has its partition written again. Shown so, a partition is kept and its stamp (from the stats taken before
the hashing) is written into its stats file, so the next resume checks it as any other; otherwise it is written
again, counted apart with its own reason. (Such a job was re-embedded whole, said to have changed.) Cost: one read of
each legacy file, hashed, far cheaper than decoding and embedding it, and paid once per legacy
partition. An edit at any time after the old release read a file is seen (its bytes differ from the recorded
hash), whatever the times say. What stays unseen: a failed file's name given to another file by a rename keeps its
failure record (no wrong vector; touching the file, or ``--overwrite``, embeds it).

Owns the record (`job_identity`), the comparison that names each difference (`check_job`), the clearing
order of ``overwrite=True`` (`clear_job`), the claim of the folder before the first partition
(`claimed_output`, which takes back the record of a run that fails for its model before its first partition: a
job that wrote nothing leaves nothing), and whether a partition on disk is done, whole, and still describes its files
(`partition_state`). The lock a run holds on the folder while it runs is `export_lock.embed_lock`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipforge.atomic import remove_stale_temps, write_json_atomic
from clipforge.errors import UserError
from clipforge.library.dbfile import path_text
from clipforge.library.encoder import Encoder
from clipforge.library.export_checks import check_export_settings
from clipforge.library.export_layout import _PARTITION_GLOBS, _partition_count, _paths, writing
from clipforge.library.export_whole import OUTPUT_BYTES, output_bytes, outputs_problem

JOB_FILE = "job.json"
JOB_FORMAT = 1


class ExportMismatch(UserError, ValueError):
    """`--out` holds another job's embeddings (or partitions of no recorded job): resuming would mix them."""


def job_identity(
    encoder: Encoder, files: list[str], *, shard_size: int, dtype: str, max_pixels: int | None
) -> dict[str, Any]:
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
    return {
        "format": JOB_FORMAT,
        "model": encoder.name,
        "model_fingerprint": encoder.fingerprint,
        "dim": encoder.embed_dim,
        "precision": encoder.precision,
        "draft_decode": bool(getattr(encoder.preprocess, "draft", False)),
        "max_pixels": max_pixels,
        "dtype": dtype,
        "shard_size": shard_size,
        "partitions": _partition_count(len(files), shard_size),
        "files": len(files),
        "files_sha256": digest.hexdigest(),
    }


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _stamp(files: list[str], infos: list[os.stat_result | None]) -> str:
    """`files_stamp` from stat results already taken (None: the file could not be stat'ed)."""
    digest = hashlib.sha256()
    for path, info in zip(files, infos, strict=True):
        stamp = "-" if info is None else f"{info.st_size}:{info.st_mtime_ns}"
        digest.update(os.fsencode(path) + b"\0" + stamp.encode("ascii") + b"\0")
    return digest.hexdigest()


def files_stamp(files: list[str]) -> str:
    """A digest of each file's name, size and modification time (what `index add` compares to skip a file);
    a file that cannot be stat'ed counts by its name alone (it fails when read, and again if it comes back)."""
    return _stamp(files, [_stat(path) for path in files])


# What a resume finds in a partition's place (`partition_state`), and so what it does with it.
ABSENT = "absent"  # not (wholly) written: written now
DONE = "done"  # its stamp is its files' stamp now: kept
STAMPED = "stamped"  # no stamp (an earlier clipforge), shown to describe its files now: kept, its stamp written now
CHANGED = "changed"  # a file's size or modification time differs from its stamp: written again
LEGACY_CHANGED = "legacy-changed"  # no stamp, and a file is newer than it, gone, or not the bytes it embedded: again
LEGACY_UNLISTED = "legacy-unlisted"  # no stamp, and its records do not name exactly its files: written again
UNREADABLE = "unreadable"  # its stats file (with no stamp: its rows) cannot be read: written again
DAMAGED = "damaged"  # its npy or parquet is empty, cut short or not as its stats record: written again


def _counts(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def partition_state(out: Path, name: str, files: list[str]) -> tuple[str, str | None]:
    """What partition `name` on disk is to a resume whose partition holds `files` (one of the names above), and for
    `DAMAGED` the phrase naming the file and what is wrong with it (else None).

    `ABSENT` when one of its three files is missing; `UNREADABLE` when its stats file is not JSON recording its
    vectors' count, dim and dtype; `DAMAGED` when its npy or parquet is not whole as its stats describe it
    (`export_whole.outputs_problem`: a header and a footer read, sizes compared; the stats file, written last, only
    says they once were); then `DONE` when its stats record the stamp its files have now, `CHANGED` when another;
    with no stamp recorded (an earlier clipforge) what `_legacy_state` finds, which writes the stamp of a partition
    it keeps (`STAMPED`).
    """
    paths = _paths(out, name)
    if not all(p.exists() for p in paths):
        return ABSENT, None
    try:
        stats = json.loads(paths[2].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return UNREADABLE, None
    if not (isinstance(stats, dict) and _counts(stats.get("embedded")) and _counts(stats.get("dim"))
            and stats.get("dtype") in ("float16", "float32")):
        return UNREADABLE, None
    problem = outputs_problem(paths, stats)
    if problem is not None:
        return DAMAGED, problem
    if "files_stamp" in stats:
        return (DONE if stats["files_stamp"] == files_stamp(files) else CHANGED), None
    return _legacy_state(paths, stats, files), None


class _Unreadable(Exception):
    """A partition's npy, parquet or stats cannot be read as the layout writes them."""


_HEX = frozenset("0123456789abcdef")


def _recorded(paths: tuple[Path, Path, Path], stats: dict[str, Any]) -> tuple[list[str], list[str], list[str]] | None:
    """(row names, their recorded sha256s, failed names) of partition `paths`, as written; None when its npy,
    parquet and stats disagree on the counts (then it vouches for no list). Raises `_Unreadable` when one cannot be
    read, or a row has no sha256 as the layout writes it (64 hex digits: nothing to prove its vector by)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(paths[1], columns=["image_path", "sha256"])
        rows = [str(r) for r in table.column("image_path").to_pylist()]
        shas = table.column("sha256").to_pylist()
        vectors = len(np.load(paths[0], mmap_mode="r"))  # the header only
        failures = [str(f["path"]) for f in stats["failures"]]
        counts = (int(stats["files"]), int(stats["embedded"]), int(stats["failed"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException) as exc:
        raise _Unreadable(str(exc)) from exc
    if not all(isinstance(sha, str) and len(sha) == 64 and set(sha) <= _HEX for sha in shas):
        raise _Unreadable("a row without a recorded sha256")
    if counts != (len(rows) + len(failures), len(rows), len(failures)) or vectors != len(rows):
        return None
    return rows, shas, failures


def _same_bytes(path: str, sha256: str) -> bool:
    """Whether `path` holds now the bytes whose sha256 was recorded: read as the embedding reads it
    (`clipforge.data.reading.read_file`: never blocking on a FIFO, at most `MAX_IMAGE_FILE_BYTES`) and
    hashed as it hashes them; a file that cannot be read so holds no provable bytes."""
    from clipforge.image.loading import MAX_IMAGE_FILE_BYTES
    from clipforge.regular_file import read_regular_file

    try:
        data = read_regular_file(path, MAX_IMAGE_FILE_BYTES)
    except (OSError, ValueError):  # NotRegularFileError / FileTooLargeError are ValueErrors
        return False
    return hashlib.sha256(data).hexdigest() == sha256


def _legacy_state(paths: tuple[Path, Path, Path], stats: dict[str, Any], files: list[str]) -> str:
    """A partition with no stamp (written by an earlier clipforge): `STAMPED` (kept, stamp written) when it is
    shown to describe the bytes of `files` now, else why not (see the module docstring).

    Its records must name exactly `files` (as this release writes names: `path_text`; the Dec-6 release wrote a
    name that is not UTF-8 lossily, so such a partition is written again). Then, cheapest first: no file may have
    been modified or had its status changed since the partition's first file was written (its vectors, written
    after every file was read; times equal to the partition's count as newer, a coarse clock), and each embedded
    row's recorded sha256 must be that of its file's bytes now (the proof: times survive a folder swap or a
    retargeted symlink). The stamp is made from the stat results taken before the hashing, so a file edited after
    the check differs from the stamp at the next resume.
    """
    try:
        recorded = _recorded(paths, stats)
    except _Unreadable:
        return UNREADABLE
    if recorded is None:
        return LEGACY_UNLISTED
    rows, shas, failures = recorded
    names = {path_text(path): path for path in files}
    if len(names) != len(files) or sorted(rows + failures) != sorted(names):
        return LEGACY_UNLISTED
    try:
        written = min(p.stat().st_mtime_ns for p in paths)
        sizes = output_bytes(paths[0], paths[1])  # shown whole by `partition_state`: recorded with the stamp
    except OSError:
        return UNREADABLE
    infos = [_stat(path) for path in files]
    if any(info is None or max(info.st_mtime_ns, info.st_ctime_ns) >= written for info in infos):
        return LEGACY_CHANGED
    if not all(_same_bytes(names[row], sha) for row, sha in zip(rows, shas, strict=True)):
        return LEGACY_CHANGED  # other bytes under the same names (a folder swapped, a link retargeted)
    stamped: dict[str, Any] = {}
    for key, value in stats.items():  # the stamp where this release puts it: after the failures
        stamped[key] = value
        if key == "failures":
            stamped["files_stamp"] = _stamp(files, infos)
    stamped.setdefault(OUTPUT_BYTES, sizes)  # last, where this release writes them
    with writing(paths[2]):
        write_json_atomic(paths[2], stamped)
    return STAMPED


def _model_words(job: dict[str, Any]) -> str:
    return f"{job.get('model') or 'an unnamed model'} (fingerprint {str(job.get('model_fingerprint'))[:12]})"


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How the recorded job `old` differs from this run's `new`, each as "<old> there, <new> now"; a recorded field
    whose type is not the one clipforge writes is named as malformed instead (a string "3" printed as 3 said "3
    there, 3 now" for shard_size, max_pixels, files and dim alike)."""
    from clipforge.weights.torch_pickle import brief, with_article

    for key, value in old.items():
        if value is not None and new.get(key) is not None and type(value) is not type(new[key]):
            return [f"a malformed record: its {key} is {brief(value)}, {with_article(type(value).__name__)} where "
                    f"clipforge writes {with_article(type(new[key]).__name__)}"]
    said: list[str] = []
    if old.get("model_fingerprint") != new["model_fingerprint"] or old.get("dim") != new["dim"]:
        said.append(f"model {_model_words(old)} there, {_model_words(new)} now")
    if old.get("precision") != new["precision"]:
        said.append(f"--precision {old.get('precision')} there, {new['precision']} now")
    if old.get("draft_decode") != new["draft_decode"]:
        decode = {True: "draft decode", False: "--exact-decode"}
        said.append(
            f"{decode.get(old.get('draft_decode'), old.get('draft_decode'))} there, "
            f"{decode[new['draft_decode']]} now"
        )
    if old.get("max_pixels") != new["max_pixels"]:
        said.append(f"max_pixels {old.get('max_pixels')} there, {new['max_pixels']} now")
    if old.get("dtype") != new["dtype"]:
        said.append(f"{old.get('dtype')} vectors there, {new['dtype']} now (--float32)")
    if old.get("shard_size") != new["shard_size"]:
        said.append(f"--shard-size {old.get('shard_size')} there, {new['shard_size']} now")
    if old.get("files") != new["files"] or old.get("files_sha256") != new["files_sha256"]:
        other = "" if old.get("files") != new["files"] else "other "
        said.append(
            f"a list of {old.get('files')} files there, {other}{new['files']} files now (files added, "
            f"removed or renamed, or other PATH arguments)"
        )
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
        raise ExportMismatch(
            f"{path} is not a readable embed job record ({exc}): use --overwrite to replace "
            f"what {out} holds, or another --out"
        ) from exc
    if not isinstance(job, dict) or job.get("format") != JOB_FORMAT:
        raise ExportMismatch(
            f"{path} is not an embed job record of format {JOB_FORMAT}: use --overwrite to "
            f"replace what {out} holds, or another --out"
        )
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
                f"them, or another --out"
            )
        return False
    said = _differences(old, job)
    if said:
        raise ExportMismatch(
            f"{out} holds another embed job ({'; '.join(said)}): use --overwrite to replace "
            f"it, or another --out"
        )
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


@contextmanager
def claimed_output(
    out: Path, job: dict[str, Any], overwrite: bool, rank: int, world_size: int, joined: bool
) -> Iterator[None]:
    """`out` made this job's folder (`_claim_output`) for the block that writes its partitions.

    A run that fails for its model (weights holding NaN) before its first partition takes back the record it wrote:
    the next run comes with another model, which that empty record refused as "another embed job" (audit 64). A
    refused write (an OSError) or an interrupt keeps it: the same command again resumes. A record from before the
    run, one with a partition beside it, or one of a job of several ranks (another may write under it) stays."""
    wrote = _claim_output(out, job, overwrite, rank, world_size, joined)
    try:
        yield
    except Exception as exc:
        if wrote and world_size == 1 and not isinstance(exc, OSError) and not _existing_partitions(out):
            (out / JOB_FILE).unlink(missing_ok=True)
        raise


def _claim_output(
    out: Path, job: dict[str, Any], overwrite: bool, rank: int, world_size: int, joined: bool
) -> bool:
    """Make `out` this job's folder before any partition is written: refuse, resume, start or replace. True when
    this call wrote the job record (a fresh folder, or one `overwrite` cleared)."""
    if overwrite and world_size > 1 and not joined:
        raise ExportMismatch(
            f"--overwrite with WORLD_SIZE={world_size} needs torchrun's rendezvous "
            f"(MASTER_ADDR, MASTER_PORT), so that one rank clears {out} before the others "
            f"write; run under torchrun, or clear {out} first"
        )
    if overwrite and rank == 0:
        clear_job(out)
    if overwrite and joined:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has cleared the old job; every rank now finds none, or rank 0's record
    for folder in (out, *(out / name for name, _ in _PARTITION_GLOBS)):
        remove_stale_temps(folder)  # what killed writers left; a live writer's temporaries stay
    if check_job(out, job):
        return False
    with writing(out / JOB_FILE):
        write_json_atomic(out / JOB_FILE, job)  # before the first partition: a killed run stays resumable
    return True
