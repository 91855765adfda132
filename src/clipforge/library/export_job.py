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
and a resume writes again every partition whose files' stamp changed since (`partition_done`), as `index add`
re-embeds a file whose size or mtime changed. A partition written by a clipforge that recorded no stamp cannot
be checked, so it is written again too.

Owns the record (`job_identity`), the comparison that names each difference (`check_job`), the clearing
order of ``overwrite=True`` (`clear_job`), the claim of the folder before the first partition
(`_claim_output`) and whether a partition on disk is done and still describes its files (`partition_done`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from clipforge.atomic import remove_stale_temps, write_json_atomic
from clipforge.errors import UserError
from clipforge.library.encoder import Encoder
from clipforge.library.export_checks import check_export_settings
from clipforge.library.export_layout import _PARTITION_GLOBS, _partition_count, _paths, writing

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


def files_stamp(files: list[str]) -> str:
    """A digest of each file's name, size and modification time (what `index add` compares to skip a file);
    a file that cannot be stat'ed counts by its name alone (it fails when read, and again if it comes back)."""
    digest = hashlib.sha256()
    for path in files:
        try:
            info = os.stat(path)
            stamp = f"{info.st_size}:{info.st_mtime_ns}"
        except OSError:
            stamp = "-"
        digest.update(os.fsencode(path) + b"\0" + stamp.encode("ascii") + b"\0")
    return digest.hexdigest()


def partition_done(out: Path, name: str, files: list[str]) -> bool | None:
    """True when partition `name`'s three files are there and its stats record the stamp its `files` have now;
    None when they are there but describe other contents (a file edited in place since, or no stamp recorded):
    to be written again; False when the partition is not (wholly) written."""
    paths = _paths(out, name)
    if not all(p.exists() for p in paths):
        return False
    try:
        recorded = json.loads(paths[2].read_text(encoding="utf-8")).get("files_stamp")
    except (OSError, ValueError, AttributeError):
        recorded = None  # an unreadable stats file marks nothing done
    return True if recorded == files_stamp(files) else None


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


def _claim_output(
    out: Path, job: dict[str, Any], overwrite: bool, rank: int, world_size: int, joined: bool
) -> None:
    """Make `out` this job's folder before any partition is written: refuse, resume, start or replace."""
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
    if not check_job(out, job):
        with writing(out / JOB_FILE):
            write_json_atomic(out / JOB_FILE, job)  # before the first partition: a killed run stays resumable
