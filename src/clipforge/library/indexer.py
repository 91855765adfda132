"""Incremental, crash-safe indexing of image files into a library.

The run has three steps. *Plan* (no file is opened): a known path whose size and mtime are
unchanged is skipped; everything else is read. With `rehash` every file is read and hashed whatever its stat
says: two photos that swapped names (same size, same time) kept each other's vectors, since only the bytes
tell them apart, and the advice to run `index add` again did nothing. *Decode* (DataLoader workers): read, hash,
decode, preprocess - or an error reason. *Commit* (main process, one SQLite transaction per
batch): embed the new contents, then write the vectors and the image rows together, so a
`kill -9` loses at most the batch in flight and the next run simply picks those files up
again (they are still unknown to the database).

Content, not path, decides what gets embedded: the same bytes under two paths share one
vector, and a new path whose bytes belong to a record whose file has vanished is a *move*:
that record is relinked (keeping its id and tags) instead of being duplicated. A new path that is the same
file as one indexed (a symlinked folder's name and its real path, a hard link) is added, and counted apart
(`same_file`): it is a second name, not a copy. The vectors no record refers to any more are dropped at the end
of each batch, once all its rows are written: files that swapped bytes within a batch keep both vectors.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipforge.data.base import BadImage
from clipforge.data.files import DecodedFile, EmbeddedBatch, ImageFileReader, embed_files, with_max_pixels
from clipforge.errors import Notice
from clipforge.library.encoder import Encoder
from clipforge.library.file_names import path_text
from clipforge.library.scan import file_identity, skipped_folder_of
from clipforge.library.store import FileState, Store

__all__ = ["AddReport", "ModelReplacedNotice", "StoreWriter", "count_unwalked", "index_files"]


class ModelReplacedNotice(Notice):
    """A library recorded a model that held no vector (made for it: `serve --create --model M`,
    `Library(create=True, model=M)`) and an add with another model filled it first: that model is the library's
    from then on. Said, because a server still open on M searches an empty space."""


@dataclass
class AddReport:
    """What one `add` run did. Every considered file lands in exactly one of the first six counters."""

    added: int = 0       # new paths now searchable
    updated: int = 0     # known paths whose bytes changed (re-embedded)
    relinked: int = 0    # moved files: the old record now points at the new path
    touched: int = 0     # size/mtime changed but the bytes did not (re-hashed, nothing else)
    unchanged: int = 0   # skipped without reading
    failed: int = 0      # recorded with a reason
    embedded: int = 0    # model forward passes (distinct new contents)
    duplicates: int = 0  # added paths whose bytes were already embedded
    gone: int = 0        # indexed photos of the folders named whose files are no longer there (not removed)
    known_failed: int = 0  # of `unchanged`: files that failed before and were not tried again
    unwalked: int = 0    # indexed photos of the folders named, still on disk, in folders walks skip now
    unwalked_folder: str | None = None  # one of those folders (what `index remove` takes)
    rehashed: int = 0    # files read only because of `rehash` (size and mtime unchanged); counted above too
    rehash_changed: int = 0  # of `rehashed`: those whose bytes had changed (updated, or failed now)
    same_file: int = 0   # of `added`: second names of a file already indexed (a link), not copies
    bad: list[BadImage] = field(default_factory=list)  # the files that failed, the one bad-image record
    seconds: float = 0.0

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of each failed file (read-only view of `bad`)."""
        return [(b.path, b.reason) for b in self.bad]

    def skip_failed(self) -> None:
        """A file recorded as failed, unchanged since: skipped (not read again without `retry_failed`), and counted
        apart, so a rerun over the same bad files does not read "failed 0" as if they were gone."""
        self.unchanged += 1
        self.known_failed += 1

    def add_failure(self, bad: BadImage) -> None:
        self.failed += 1
        self.bad.append(bad)

    @property
    def considered(self) -> int:
        return self.added + self.updated + self.relinked + self.touched + self.unchanged + self.failed

    def reasons(self) -> Counter[str]:
        """Failure counts by reason, without the per-file detail in parentheses."""
        return Counter(reason.split(" (")[0] for _, reason in self.failures)

    def summary_line(self) -> str:
        """Each file once, by what happened to it; then the model's work: `embedded` counts new contents (of added
        and updated files alike), `duplicates` added files whose bytes were already indexed. "added 0 (200
        embedded, ...), updated 200" read as 200 embeddings for no file."""
        line = (f"added {self.added} file{'' if self.added == 1 else 's'}, updated {self.updated}, "
                f"relinked {self.relinked}, skipped {self.unchanged + self.touched} unchanged")
        if self.known_failed:
            line += (f" ({self.known_failed} of them failed before: `clipforge index list --failed`; "
                     "--retry-failed reads them again)")
        line += f", failed {self.failed}"
        if self.failed:
            # "not an image (2)": a count before the reason read "2 a HEIC/HEIF photo"
            line += ": " + ", ".join(f"{reason} ({n})" for reason, n in self.reasons().most_common())
        line += f"; embedded {self.embedded}, duplicates {self.duplicates}"  # new contents; added copies
        if self.same_file:  # not copies: deleting one "copy" deletes the only file
            line += (f", {self.same_file} second {'name' if self.same_file == 1 else 'names'} of files already "
                     "indexed (the same file reached through a link, not a copy)")
        rate = self.considered / self.seconds if self.seconds > 0 else 0.0
        line += f" in {self.seconds:.1f}s ({rate:.0f} files/s)"
        if self.rehashed:
            line += (f"; --rehash read {self.rehashed} {'file' if self.rehashed == 1 else 'files'} whose size and time "
                     f"had not changed: {self.rehash_changed} held other bytes")
        if self.unwalked:  # indexed before walks skipped their folder (@eaDir): nothing else removes them
            line += (f"; {self.unwalked} indexed {'photo' if self.unwalked == 1 else 'photos'} in these folders "
                     f"{'lies' if self.unwalked == 1 else 'lie'} in folders walks skip now (e.g. "
                     f"{self.unwalked_folder}): `clipforge index remove FOLDER` forgets them")
        if self.gone:  # search lists them as missing until pruned: say so where the user looks after deleting
            line += (f"; {self.gone} indexed {'photo' if self.gone == 1 else 'photos'} in these folders "
                     f"{'is' if self.gone == 1 else 'are'} gone from disk (`clipforge index prune` forgets them)")
        return line

    def to_dict(self) -> dict[str, Any]:
        """`index add --json`: names as every --json report writes them (`path_text`: one that is not UTF-8 as
        ``b64:`` + base64 of its bytes; its ``\\xNN`` escapes were also the name of another file)."""
        folder = self.unwalked_folder
        return {"added": self.added, "updated": self.updated, "relinked": self.relinked, "touched": self.touched,
                "unchanged": self.unchanged, "failed": self.failed, "embedded": self.embedded,
                "duplicates": self.duplicates, "gone": self.gone, "known_failed": self.known_failed,
                "unwalked": self.unwalked, "unwalked_folder": None if folder is None else path_text(folder),
                "rehashed": self.rehashed, "rehash_changed": self.rehash_changed, "same_file": self.same_file,
                "seconds": round(self.seconds, 3),
                "failures": [b.to_dict() for b in self.bad],
                "failure_reasons": dict(self.reasons())}


def count_unwalked(report: AddReport, unseen: Sequence[str], folders: Sequence[str]) -> None:
    """Count into `report` the photos of `unseen` (indexed under `folders`, not found by this walk) that are still on
    disk in a folder walks skip now: a Synology share indexed before `@eaDir` was skipped kept its thumbnails in
    every search, said nowhere, and `index prune` keeps them (their files are there)."""
    for path in unseen:
        skipped = skipped_folder_of(path, folders)
        if skipped is not None and os.path.exists(path):
            report.unwalked += 1
            report.unwalked_folder = report.unwalked_folder or skipped


def _stat(path: str) -> tuple[int, int] | str:
    try:
        info = os.stat(path)
    except PermissionError:
        return "permission denied"
    except FileNotFoundError:
        return "file not found (dangling link or removed while indexing)"
    except OSError as exc:
        return f"cannot access file ({exc.strerror or exc})"
    return info.st_size, info.st_mtime_ns


@dataclass(frozen=True)
class _Planned:
    path: str
    size: int
    mtime_ns: int
    rehash: bool = False  # read only because of `rehash`: its size and mtime are the recorded ones


def _plan(store: Store, files: Sequence[str], embedded: set[str], retry_failed: bool,
          report: AddReport, rehash: bool = False) -> tuple[list[_Planned], list[tuple[_Planned, str]]]:
    """Split files into work and skips, without opening any of them. `rehash`: nothing is skipped for an
    unchanged size and mtime (files that failed before are read again too)."""
    states: dict[str, FileState] = store.file_states()
    todo: list[_Planned] = []
    unstat: list[tuple[_Planned, str]] = []
    for path in files:
        stat = _stat(path)
        known = states.get(path)
        if isinstance(stat, str):
            # Recorded as failed without a stat last time (a dangling link): still so, it is unchanged, as
            # any unchanged failure is; re-failing it made every `search --in` print an indexing summary.
            if known is not None and known.status == "failed" and known.size == known.mtime_ns == 0 \
                    and not retry_failed:
                report.skip_failed()
            else:
                unstat.append((_Planned(path, 0, 0), stat))
            continue
        size, mtime_ns = stat
        if known is not None and known.size == size and known.mtime_ns == mtime_ns and rehash:
            report.rehashed += 1
            todo.append(_Planned(path, size, mtime_ns, rehash=True))
            continue
        if known is not None and known.size == size and known.mtime_ns == mtime_ns:
            if known.status == "ok" and known.sha256 in embedded:
                report.unchanged += 1
                continue
            if known.status == "failed" and not retry_failed:
                report.skip_failed()
                continue
        todo.append(_Planned(path, size, mtime_ns))
    return todo, unstat


class StoreWriter:
    """The SQLite library's writer for `embed_files`: one batch -> one transaction.

    Vectors and the image rows that point at them commit together, so a `kill -9` loses at most
    the batch in flight (those files are still unknown and are read again next run).
    """

    def __init__(self, store: Store, encoder: Encoder, embedded: set[str], report: AddReport,
                 dtype: str, planned: dict[str, _Planned]) -> None:
        self.store = store
        self.encoder = encoder
        self.embedded = embedded
        self.report = report
        self.dtype = dtype
        self.planned = planned

    def write(self, batch: EmbeddedBatch) -> None:
        vectors = {sha: v for sha, v in batch.by_sha().items() if sha not in self.embedded}
        claimed: set[str] = set()
        replaced: str | None = None
        with self.store.transaction() as tx:
            if vectors:  # a model's space (and, the first time, the library's default model) begins with a vector
                tx.ensure_model(self.encoder.fingerprint, self.encoder.name, self.encoder.embed_dim)
                replaced = tx.record_model(
                    self.encoder.fingerprint, self.encoder.name or "", self.encoder.embed_dim, self.dtype
                )
            if batch.files:  # rows with this model's vectors only: other models' spaces now lack them
                tx.void_vector_checks(self.encoder.fingerprint)
            for sha, vector in vectors.items():
                tx.insert_embedding(sha, self.encoder.fingerprint, vector, self.dtype)
            self.report.embedded += len(vectors)
            stale: list[str] = []  # contents the batch's files held before: their vectors may have lost every row
            for bad in batch.bad:
                self._write_bad(tx, bad)
            for item in batch.files:
                # Only the first item carrying new bytes counts as "embedded"; later ones are duplicates.
                new_content = item.sha256 in vectors and item.sha256 not in claimed
                claimed.add(item.sha256)
                self._write_item(tx, item, stale, new_content=new_content)
            # After every row of the batch: two files that swapped bytes each still hold the other's vector.
            dropped = {sha for sha in dict.fromkeys(stale) if tx.gc_embeddings([sha])}
            tx.bump_generation()
        self.embedded.update(vectors)
        self.embedded.difference_update(dropped)  # bytes met again later in this run are embedded again
        if replaced is not None:
            warnings.warn(ModelReplacedNotice(
                f"library {self.store.path.parent} was made for model {replaced or '(an object)'} and held none of "
                f"its vectors: it is built with {self.encoder.name or '(an object)'} from now on (plain `search` "
                f"and `tag` use it; a server still open on {replaced or 'the old model'} must be restarted)"
            ), stacklevel=2)

    def _write_bad(self, tx: Any, bad: BadImage) -> None:
        plan = self.planned.get(bad.path, _Planned(bad.path, 0, 0))
        known = self.store.image_by_path(bad.path) if plan.rehash else None
        if known is not None and known.status == "ok":  # read by --rehash: it was a photo, it is broken now
            self.report.rehash_changed += 1
        tx.mark_failed(bad.path, plan.size, plan.mtime_ns, bad.reason, sha256=bad.sha256)
        self.report.add_failure(bad)

    def _write_item(self, tx: Any, item: DecodedFile, stale: list[str], new_content: bool) -> None:
        store, report = self.store, self.report
        plan = self.planned[item.path]
        mtime_ns = plan.mtime_ns
        known = store.image_by_path(item.path)
        width, height = item.width, item.height
        if width is None:  # decoding was skipped: the bytes are known, copy their geometry
            twin = store.images_with_sha(item.sha256)
            if twin:
                width, height = twin[0].width, twin[0].height
        if known is None:
            moved = next((r for r in store.images_with_sha(item.sha256)
                          if r.path != item.path and not os.path.lexists(r.path)), None)
            if moved is not None:
                tx.relink_image(moved.id, item.path, item.size, mtime_ns)
                report.relinked += 1
                return
            tx.upsert_image(item.path, item.sha256, item.size, mtime_ns, width, height, "ok", None)
            report.added += 1
            if not new_content and self._second_name(item.path, item.sha256):
                report.same_file += 1  # not a copy: said apart, as search and stats say it
            else:
                report.duplicates += 0 if new_content else 1
            return
        tx.upsert_image(item.path, item.sha256, item.size, mtime_ns, width, height, "ok", None)
        if known.sha256 == item.sha256 and known.status == "ok":
            report.touched += 1
            return
        tx.delete_tags_for(known.id)  # tags described the old bytes
        if known.sha256 and known.sha256 != item.sha256:
            stale.append(known.sha256)
        report.updated += 1
        report.rehash_changed += plan.rehash

    def _second_name(self, path: str, sha256: str) -> bool:
        """Whether `path` is the same file (device and inode) as a name the library already holds these bytes
        under: a symlinked folder's name and its real path, a hard link. Only files whose bytes are held are
        asked, so a stat per copy, none per new photo."""
        identity = file_identity(path)
        return identity is not None and any(
            record.path != path and file_identity(record.path) == identity
            for record in self.store.images_with_sha(sha256)
        )


_BatchWriter = StoreWriter  # the name tests/library/test_library_crash.py patches to slow each commit


def index_files(store: Store, encoder: Encoder, files: Sequence[str], *, batch_size: int = 64,
                workers: int = 0, max_pixels: int | None = None, retry_failed: bool = False,
                dtype: str = "float32", progress: bool = True, rehash: bool = False) -> AddReport:
    """Bring `files` (absolute paths from `discover_files`) into the store. See module docstring.

    Decoding follows `encoder.preprocess` (draft JPEG decode unless the encoder was made with
    ``draft=False``); the model runs in `encoder.precision`.
    """
    started = time.perf_counter()
    report = AddReport()
    embedded = store.embedded_shas(encoder.fingerprint)
    todo, unstat = _plan(store, files, embedded, retry_failed, report, rehash)
    planned = {p.path: p for p in todo} | {p.path: p for p, _ in unstat}
    writer = StoreWriter(store, encoder, embedded, report, dtype, planned)
    embed_planned(todo, unstat, writer, encoder, embedded, report, max_pixels=max_pixels, batch_size=batch_size,
                  workers=workers, progress=progress)
    report.seconds = time.perf_counter() - started
    return report


def embed_planned(todo: Sequence[_Planned], unstat: Sequence[tuple[_Planned, str]], writer: Any, encoder: Encoder,
                  held: set[str], report: AddReport, *, max_pixels: int | None, batch_size: int, workers: int,
                  progress: bool, desc: str = "indexing") -> None:
    """The plan's second half, for every store: files that could not be read are written as failures, then
    the rest go through the one loop (`embed_files`, bytes in `held` never embedded again) into `writer`,
    with a bar that counts what was skipped and what failed."""
    from tqdm.auto import tqdm

    if unstat:
        writer.write(EmbeddedBatch([], [], np.zeros((0, encoder.embed_dim), np.float32),
                                   [BadImage(p.path, reason) for p, reason in unstat]))
    if not todo:
        return
    reader = ImageFileReader([p.path for p in todo], with_max_pixels(encoder.preprocess, max_pixels),
                             hash=True, skip_shas=frozenset(held))
    with tqdm(total=len(todo), unit="img", desc=desc, disable=not progress, dynamic_ncols=True,
              smoothing=0.1) as bar:
        bar.set_postfix(skipped=report.unchanged, failed=report.failed)

        def advance(files: int) -> None:
            bar.update(files)
            bar.set_postfix(skipped=report.unchanged, failed=report.failed, refresh=False)

        embed_files(reader, encoder.encode_pixels, writer, dim=encoder.embed_dim, batch_size=batch_size,
                    workers=workers, held=held, on_batch=advance)
