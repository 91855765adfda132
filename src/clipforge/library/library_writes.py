"""The writes of a `Library`: add files and uploads, remove and prune them, tag them, rebuild the index.

Writes are serialised in this process by the library's write lock, and against other processes
by its lock file (`clipforge.library.lock`): `add` runs take turns, so the second skips what the
first embedded instead of embedding it again. Each write to the database is one transaction of
the store (`Store.transaction`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from clipforge.data.base import BadImage
from clipforge.data.files import default_workers
from clipforge.errors import Notice
from clipforge.library.dbfile import DamagedLibraryError, damaged, display_path, file_exists
from clipforge.library.indexer import AddReport, count_unwalked, index_files
from clipforge.library.library_base import META_DTYPE, LibraryBase
from clipforge.library.lock import library_lock
from clipforge.library.media import store_upload
from clipforge.library.scan import ScanResult, normalise_path, scan_paths
from clipforge.library.settings import check_add_settings, files_missing_vectors, release_pixel_failures
from clipforge.library.store import ImageRecord
from clipforge.library.tagging import TagReport, count_noun, tag_library, tag_new_images
from clipforge.library.uploads import home_path, rehome_uploads
from clipforge.library.vector_index import IndexSpec

__all__ = ["FilledSpaceNotice", "LibraryWrites", "filled_sentence"]


class FilledSpaceNotice(Notice):
    """An add embedded photos the library already held with another model into this model's space (`index add
    --model M` on a library built with another model): expected, and said, not a repair."""


def filled_sentence(model: str | None, count: int) -> str:
    """What filling a model's space did, in the words `index add` uses."""
    return (f"filled model space {model or '(object)'} with {count_noun(count, 'image')} the library already held "
            "(indexed with another model)")


def most_pixels(records: Iterable[ImageRecord]) -> int:
    """The most pixels among `records` (photos held 'ok': their recorded source size), 0 for none."""
    return max(((r.width or 0) * (r.height or 0) for r in records), default=0)


class LibraryWrites(LibraryBase):
    """The writing methods of `Library` (see `clipforge.library.library`)."""

    def add(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        recursive: bool = True,
        *,
        batch_size: int = 64,
        workers: int | None = None,
        retry_failed: bool = False,
        progress: bool = True,
        update_index: bool = True,
        rehash: bool = False,
    ) -> AddReport:
        """Index files and folders incrementally (see `clipforge.library.indexer`).

        Folders are walked recursively unless `recursive=False` (as `export_embeddings` does). ``paths=None``
        names no new files: it fills this model's space with every file the library holds (what
        ``clipforge index add --model M`` without a folder does), and refuses an empty library.
        Concurrent `add` runs on one library (other processes included) take turns, so the
        second one skips what the first embedded instead of embedding it again. `rehash`: read and hash every
        file, also those whose size and mtime are unchanged (files edited or swapped keeping both: a server
        refuses them as "changed since it was indexed", and only reading them tells).
        """
        check_add_settings(batch_size, workers)
        self.last_tagged = 0
        report = self._add(
            paths,
            recursive,
            batch_size=batch_size,
            workers=workers,
            retry_failed=retry_failed,
            progress=progress,
            update_index=update_index,
            exclusive=True,
            rehash=rehash,
        )
        self._repair_missing_vectors(batch_size=batch_size, workers=workers)
        return report

    def _repair_missing_vectors(self, **settings: Any) -> None:
        """Embed the 'ok' images that have no vector of this model (see `settings.files_missing_vectors`): those
        indexed with another model (this space is filled with them: `last_filled`, said as a `FilledSpaceNotice`),
        and those whose vector was lost (no model has one: a writer that bypassed the library lock; a warning)."""
        self.last_filled = 0
        missing = files_missing_vectors(self.store, self.encoder.fingerprint)
        if not missing:
            return
        elsewhere = self.store.shas_in_other_spaces(self.encoder.fingerprint, [r.sha256 or "" for r in missing])
        report = self._add(
            [r.path for r in missing],
            False,
            retry_failed=False,
            progress=False,
            update_index=True,
            exclusive=True,
            held_pixels=most_pixels(missing),
            notify=False,  # files the add's own scan has spoken of
            **settings,
        )
        failed = {bad.path for bad in report.bad}  # a file changed into a broken one since: not filled
        self.last_filled = sum(r.sha256 in elsewhere and r.path not in failed for r in missing)
        lost = sum(r.sha256 not in elsewhere and r.path not in failed for r in missing)
        if self.last_filled:
            warnings.warn(FilledSpaceNotice(filled_sentence(self.encoder.name, self.last_filled)), stacklevel=3)
        if lost:
            warnings.warn(
                f"re-embedded {count_noun(lost, 'image')} whose "
                f"{'vector was' if lost == 1 else 'vectors were'} missing",
                stacklevel=3,
            )

    def _add(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        recursive: bool,
        *,
        batch_size: int,
        workers: int | None,
        retry_failed: bool,
        progress: bool,
        update_index: bool,
        exclusive: bool,
        held_pixels: int = 0,
        rehash: bool = False,
        notify: bool = True,
    ) -> AddReport:
        """`held_pixels`: the files are photos the library holds 'ok' already, the largest this many pixels. A run
        admitted them: this run's smaller `max_pixels` (`index add EMPTY --max-pixels 1000` filling the default
        space) marked them failed in every model space, the row being shared, and the other spaces lost them.
        `notify`: let the scan say what it skipped or cannot show (`clipforge.library.scan_notices`)."""
        if paths is None:  # fill this model's space with every file the library holds
            held = self.store.list_images(status="ok")
            found = ScanResult(files=[r.path for r in held])
            if not found.files:
                raise ValueError(f"library {self.paths.root} holds no images yet: name the photos to index")
            held_pixels = most_pixels(held)
        else:
            # A list: read twice (the scan, then `_gone_under`).
            paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
            found = scan_paths(paths, recursive=recursive, exclude=[self.paths.root], notify=notify)
        with self._write_lock, library_lock(self.paths.lock if exclusive else None):
            if exclusive:
                release_pixel_failures(self.store, self.max_pixels)
            report = index_files(
                self.store,
                self.encoder,
                found.files,
                batch_size=batch_size,
                workers=default_workers() if workers is None else workers,
                max_pixels=max(self.max_pixels, held_pixels),
                retry_failed=retry_failed,
                dtype=self._stored_dtype(),
                progress=progress,
                rehash=rehash,
            )
            self._record_rejected(found.rejected, report, retry_failed)
            if paths is not None:
                report.gone = self._gone_under(paths, found, report)
            # New photos get the library's tags (a hook after the add, see `tagging.tag_new_images`).
            if report.added or report.updated:
                self.last_tagged += tag_new_images(self.store, self.encoder, self.paths.cache_dir)
        if update_index and (report.added or report.updated or report.relinked):
            self.index_manager.get()
        return report

    def _gone_under(self, paths: Iterable[str | os.PathLike[str]], found: ScanResult,
                    report: AddReport | None = None) -> int:
        """How many 'ok' photos indexed in the folders of `paths` (and below) have no file any more. They are
        kept (a photo moved elsewhere keeps its tags when added there), but the user is told: deleted photos
        came back in every search as "missing" while `index add` said nothing of them. Those still on disk in a
        folder walks skip now (`scan.skipped_folder_of`) are counted in `report.unwalked`."""
        folders = [normalise_path(p) for p in paths if os.path.isdir(p)]
        if not folders:
            return 0
        seen = set(found.files) | {r[0] for r in found.rejected}
        # The rows under these folders only (a range of the path index): every row of a 100,000-photo library
        # read again doubled the time of adding a 3-photo folder.
        indexed = {path for folder in folders for path in self.store.paths_under(folder)}
        unseen = [path for path in indexed if path not in seen]
        if report is not None:
            count_unwalked(report, unseen, folders)
        # Gone as `prune` judges: a link whose target was deleted is gone too.
        return sum(1 for path in unseen if not os.path.exists(path))

    def _stored_dtype(self) -> str:
        """The dtype the library keeps its vectors in. Any other value (`float64`, a number) was passed on to
        `insert_embedding`, whose row the schema's CHECK refused and INSERT OR IGNORE dropped without a word:
        the add reported its photos indexed, and search never found them."""
        value = self.store.get_meta(META_DTYPE) or self._vector_dtype
        if value not in ("float32", "float16"):
            raise damaged(
                self.store.path,
                f"its meta key {META_DTYPE!r} holds {value!r:.40}, not 'float32' or 'float16'",
            )
        return str(value)

    def _record_rejected(
        self, rejected: Sequence[tuple[str, int, int, str]], report: AddReport, retry_failed: bool
    ) -> None:
        """Files the scan refused to open (FIFOs, devices...): failed with their reason, once."""
        todo = []
        for path, size, mtime_ns, reason in rejected:
            known = self.store.image_by_path(path)
            if (
                known is not None
                and not retry_failed
                and known.status == "failed"
                and known.error == reason
                and (known.size, known.mtime_ns) == (size, mtime_ns)
            ):
                report.skip_failed()
            else:
                todo.append((path, size, mtime_ns, reason))
        if not todo:
            return
        with self.store.transaction() as tx:
            for path, size, mtime_ns, reason in todo:
                tx.mark_failed(path, size, mtime_ns, reason)
            tx.bump_generation()
        for path, _, _, reason in todo:
            report.add_failure(BadImage(path, reason))

    def add_bytes(self, data: bytes, filename: str | None = None) -> ImageRecord:
        """Keep uploaded bytes in the library and index them; ImageLoadError when not an image.

        `filename` (the client's) is kept, cleaned, as the stored file's name; the bytes decide its extension.
        """
        target = store_upload(self.paths, data, self.max_pixels, filename=filename)
        # One known file: no need to queue behind a long `index add` in another process.
        self._add(
            [target],
            False,
            batch_size=1,
            workers=0,
            retry_failed=False,
            progress=False,
            update_index=False,
            exclusive=False,
            notify=False,  # the library's own file, named by it: nothing for a server's log to say
        )
        record = self.store.image_by_path(normalise_path(target))
        if record is None:
            raise RuntimeError(f"upload {filename or target} was stored but not indexed")
        return record

    def remove(
        self,
        items: int | str | os.PathLike[str] | Iterable[int | str | os.PathLike[str]],
        missing_ok: bool = True,
    ) -> int:
        """Forget images by id, by file path, or everything under a folder path. Files are not touched.

        With `missing_ok=False`, an id or path the library does not know raises ValueError naming
        it, and nothing is removed.
        """
        if isinstance(items, (int, np.integer, str, os.PathLike)):
            items = [items]
        # Every writer holds the library lock from planning to commit (an `add` in another process
        # may be about to write a row for bytes whose vector this removal would drop).
        with self._write_lock, library_lock(self.paths.lock):
            return self._remove(items, missing_ok)

    def _remove(self, items: Iterable[int | str | os.PathLike[str]], missing_ok: bool) -> int:
        ids: set[int] = set()
        unknown: list[str] = []
        for item in items:
            if isinstance(item, (int, np.integer)):
                if self.store.image(int(item)) is None:
                    unknown.append(f"id {int(item)}")
                ids.add(int(item))
                continue
            path = normalise_path(item)
            record = self.store.image_by_path(path)
            if record is not None:
                ids.add(record.id)
                continue
            prefix = path.rstrip(os.sep) + os.sep
            under = [r.id for r in self.store.list_images() if r.path.startswith(prefix)]
            if not under:
                unknown.append(display_path(path))
            ids.update(under)
        if unknown and not missing_ok:
            raise ValueError(
                f"library {self.paths.root} has no image with {', '.join(unknown)} (nothing removed; "
                "`clipforge index list` shows each file's id)"
            )
        with self._write_lock, self.store.transaction() as tx:
            return tx.delete_images(ids)

    def prune(self) -> int:
        """Forget images whose file no longer exists; returns how many. An upload recorded under another folder
        whose copy is in this library's ``uploads/`` (the library was moved) is not gone: its record follows it
        first (`uploads.rehome_uploads`)."""
        with self._write_lock, library_lock(self.paths.lock):  # a running add may relink a moved file
            rehome_uploads(self.store, self.paths, force=True)
            records = self.store.list_images()
            held = {r.path for r in records}
            # gone: no file, and no copy here that is its own (a copy another record holds is that record's: a
            # user's deleted photo whose bytes were also uploaded kept its record for good); a name the OS cannot
            # be given is not gone but an error (`file_exists`): nothing is forgotten
            gone = [r.id for r in records if not file_exists(r.path)
                    and (home_path(self.paths, r.path, r.sha256) or r.path) in held]
            if not gone:
                return 0
            with self.store.transaction() as tx:
                return tx.delete_images(gone)

    def classify(
        self,
        labels: str | Sequence[str],
        templates: str | Sequence[str] | None = None,
        top_k: int = 5,
        progress: bool = True,
    ) -> TagReport:
        """Zero-shot tag every image (stored in the DB; use as `search(filter_tags=...)`). `templates` None: the
        default (``imagenet``, in the labels' language) fitted to the model's context, said in the report's
        `notices` (`tagging.tag_templates`)."""
        with self._write_lock, library_lock(self.paths.lock):
            return tag_library(
                self.store,
                self.encoder,
                labels,
                templates,
                top_k=top_k,
                cache_dir=self.paths.cache_dir,
                progress=progress,
            )

    def rebuild_index(self, index: str | IndexSpec | None = None, **params: Any) -> dict[str, Any]:
        """Rebuild the vector index now, optionally switching kind (`"flat"`, `"ivf"`, `"hnsw"`, `"auto"`)."""
        spec = None
        if index is not None or params:
            try:
                base = self.index_manager.spec().to_dict()
            except DamagedLibraryError:
                if index is None:
                    raise
                base = IndexSpec().to_dict()  # a kind given anew replaces a spec that cannot be read
            if isinstance(index, IndexSpec):
                base = index.to_dict()
            elif index is not None:
                base.update({"kind": index, "nlist": None, "nprobe": None, "ef_search": None})
            base.update(params)
            spec = IndexSpec.from_dict(base)
        built = self.index_manager.rebuild(spec)
        return {"kind": built.kind, "count": built.count, "params": built.params, **built.info}
