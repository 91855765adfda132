"""`Library`: a searchable, taggable photo collection in one folder.

This is the one object the CLI and a web server use. It ties the SQLite store (truth), the
FAISS index (derived, rebuilt when stale) and the model (fixed per library) together and
enforces the rule that keeps search meaningful: a library built with one model never takes
vectors from another. Reads (search, get_image, thumbnail, stats) are safe from many
threads at once; writes (add, remove, prune, classify) are serialised, and `add` runs in
other processes take turns through the library's lock file (see `clipforge.library.lock`).
A library whose database cannot be read is refused before anything else in it is touched.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.data.base import BadImage
from clipforge.data.files import default_workers
from clipforge.errors import UserError
from clipforge.library.dbfile import damaged, display_path
from clipforge.library.encoder import Encoder, default_model_name, resolve_encoder
from clipforge.library.index_manager import IndexManager
from clipforge.library.indexer import AddReport, index_files
from clipforge.library.lock import library_lock
from clipforge.library.media import image_bytes, store_upload, thumbnail_bytes
from clipforge.library.paths import LibraryPaths
from clipforge.library.query import QueryTerm, combine_terms, parse_query
from clipforge.library.scan import FolderFilter, ScanResult, folders_of, normalise_path, scan_paths
from clipforge.library.search import SearchHit, search_vector
from clipforge.library.settings import (
    check_add_settings,
    check_max_pixels,
    files_missing_vectors,
    release_pixel_failures,
)
from clipforge.library.store import SCHEMA_VERSION, ImageRecord, Store
from clipforge.library.tagging import (
    TagReport,
    count_noun,
    no_results_reason,
    parse_labels,
    scored_top_k,
    tag_counts,
    tag_library,
    tag_new_images,
    tags_on_add,
)
from clipforge.library.vector_index import IndexSpec

__all__ = ["Library", "ModelMismatchError", "record_model"]

_META_FINGERPRINT = "model_fingerprint"
_META_NAME = "model_name"
_META_DIM = "embed_dim"
_META_DTYPE = "vector_dtype"


class ModelMismatchError(UserError, ValueError):
    """The library's vectors come from a different model than the one offered."""


class Library:
    """A library folder. `model`: a name or checkpoint for `clipforge.load`, a CLIP module, a
    `(model, preprocess)` pair or an `Encoder`; None = the model the library was built with
    (or, for a new library, ViT-B/32 when cached, else the shipped offline model)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, model: Any = None, *, preprocess: Any = None,
                 device: str | None = None, index: str | IndexSpec | None = None, max_pixels: int | None = None,
                 vector_dtype: str = "float32", create: bool = True, precision: str = "fp32",
                 draft: bool = True, new_space: bool = False, towers: Sequence[str] | None = None) -> None:
        self.paths = LibraryPaths(path)
        self.paths.check_folder()
        self._refuse_lost_database()
        made = self.paths.new_library() if create else None  # what a refused model must not leave behind
        if create:
            self.paths.ensure()
        self.store = Store(self.paths.db, create=create)
        from clipforge.image import DEFAULT_MAX_PIXELS

        # None would mean "no cap" to load_image; a library always keeps the bomb guard.
        check_max_pixels(max_pixels or None)
        self.max_pixels = int(max_pixels) if max_pixels else DEFAULT_MAX_PIXELS
        self._vector_dtype = vector_dtype
        if vector_dtype not in ("float32", "float16"):
            raise ValueError(f"vector_dtype must be 'float32' or 'float16', got {vector_dtype!r}")
        self._device = device
        # How the one files-to-embeddings path runs (`--precision`, `--exact-decode`); the library's
        # identity is the model's fp32 fingerprint, so a bf16 run adds to the same library.
        self._precision, self._draft = precision, draft
        # ("text",): a text search loads the text tower only (`api.load_model`); ("image",): an add reads
        # the image tower only, unless it will tag its new photos, which needs the text tower too.
        if towers is not None and "text" not in towers and tags_on_add(self.store):
            towers = None
        self._towers = towers
        self._encoder: Encoder | None = None
        self._manager: IndexManager | None = None
        self._init_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._pending_spec = IndexSpec(kind=index) if isinstance(index, str) else index
        self.last_tagged = 0  # photos the last add tagged with the library's vocabulary
        self._new_space = new_space  # a model without vectors here may start its own model space
        if model is not None:
            try:
                self._set_encoder(resolve_encoder(model, preprocess, device, precision=precision, draft=draft,
                                                  towers=self._towers))
            except BaseException:
                if made is not None:  # a mistyped --model must not leave an empty library behind
                    self.store.close()
                    made.discard()
                raise

    def _refuse_lost_database(self) -> None:
        """An emptied or vanished database beside an index, thumbnails or uploads is a damaged library,
        not a new one: starting afresh would silently "rebuild" the index from nothing."""
        db = self.paths.db
        lost = "missing" if not os.path.lexists(db) else ("empty (0 bytes)" if db.stat().st_size == 0 else None)
        if lost is None:
            return
        derived = self.paths.derived_files()
        if derived:
            raise damaged(db, f"the file is {lost} but the library folder still holds "
                              f"{derived[0].relative_to(self.paths.root)}")

    # -- model ------------------------------------------------------------------------------
    @property
    def model_fingerprint(self) -> str | None:
        return self.store.get_meta(_META_FINGERPRINT)

    def _set_encoder(self, encoder: Encoder) -> None:
        recorded = self.model_fingerprint
        if (recorded is not None and recorded != encoder.fingerprint and not self._new_space
                and encoder.fingerprint not in {s["fingerprint"] for s in self.spaces()}):
            name = self.store.get_meta(_META_NAME) or "an unnamed model"
            raise ModelMismatchError(
                f"library {self.paths.root} was built with {name} (fingerprint {recorded[:12]}), but the model "
                f"offered is {encoder.describe()}. Vectors of different models cannot be searched together: "
                f"open it with its own model (omit --model), fill a model space for this one (`clipforge index add "
                f"--model {encoder.name or 'M'}`), or use another --library folder for this model.")
        self._encoder = encoder
        if self._manager is None or self._manager.fingerprint != encoder.fingerprint:
            self._manager = IndexManager(self.store, self.paths, encoder.fingerprint, encoder.embed_dim)
            if self._pending_spec is not None and self._pending_spec.to_dict() != self._manager.spec().to_dict():
                self._manager.set_spec(self._pending_spec)

    @property
    def encoder(self) -> Encoder:
        """The library's model, loaded on first use."""
        if self._encoder is None:
            with self._init_lock:
                if self._encoder is None:
                    name = self.store.get_meta(_META_NAME)
                    if self.model_fingerprint is not None and not name:
                        raise ModelMismatchError(
                            f"library {self.paths.root} was built with a model passed as an object; pass the same "
                            f"model again (fingerprint {self.model_fingerprint[:12]})")
                    self._set_encoder(resolve_encoder(name or default_model_name(), device=self._device,
                                                      precision=self._precision, draft=self._draft,
                                                      towers=self._towers))
        assert self._encoder is not None
        return self._encoder

    @property
    def index_manager(self) -> IndexManager:
        self.encoder  # noqa: B018  (creates the manager)
        assert self._manager is not None
        return self._manager

    def _record_model(self) -> None:
        encoder = self.encoder
        record_model(self.store, encoder.fingerprint, encoder.name or "", encoder.embed_dim, self._vector_dtype)

    # -- writing ----------------------------------------------------------------------------
    def add(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], recursive: bool = True, *,
            batch_size: int = 64, workers: int | None = None, retry_failed: bool = False, progress: bool = True,
            update_index: bool = True) -> AddReport:
        """Index files and folders incrementally (see `clipforge.library.indexer`).

        Folders are walked recursively unless `recursive=False` (as `export_embeddings` does).
        Concurrent `add` runs on one library (other processes included) take turns, so the
        second one skips what the first embedded instead of embedding it again.
        """
        check_add_settings(batch_size, workers)
        self.last_tagged = 0
        report = self._add(paths, recursive, batch_size=batch_size, workers=workers, retry_failed=retry_failed,
                           progress=progress, update_index=update_index, exclusive=True)
        self._repair_missing_vectors(batch_size=batch_size, workers=workers)
        return report

    def _repair_missing_vectors(self, **settings: Any) -> None:
        """Re-embed 'ok' images whose vector is missing (see `settings.files_missing_vectors`)."""
        present = files_missing_vectors(self.store, self.encoder.fingerprint)
        if present:
            self._add(present, False, retry_failed=False, progress=False, update_index=True, exclusive=True,
                      **settings)
            warnings.warn(f"re-embedded {count_noun(len(present), 'image')} whose "
                          f"{'vector was' if len(present) == 1 else 'vectors were'} missing", stacklevel=3)

    def _add(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], recursive: bool, *,
             batch_size: int, workers: int | None, retry_failed: bool, progress: bool, update_index: bool,
             exclusive: bool) -> AddReport:
        if paths is None:  # fill this model's space with every file the library holds
            found = ScanResult(files=[r.path for r in self.store.list_images(status="ok")])
            if not found.files:
                raise ValueError(f"library {self.paths.root} holds no images yet: name the photos to index")
        else:
            if isinstance(paths, (str, os.PathLike)):
                paths = [paths]
            found = scan_paths(paths, recursive=recursive, exclude=[self.paths.root])
        with self._write_lock, library_lock(self.paths.lock if exclusive else None):
            self._record_model()
            if exclusive:
                release_pixel_failures(self.store, self.max_pixels)
            report = index_files(self.store, self.encoder, found.files, batch_size=batch_size,
                                 workers=default_workers() if workers is None else workers,
                                 max_pixels=self.max_pixels, retry_failed=retry_failed,
                                 dtype=self.store.get_meta(_META_DTYPE) or self._vector_dtype, progress=progress)
            self._record_rejected(found.rejected, report, retry_failed)
            # New photos get the library's tags (a hook after the add, see `tagging.tag_new_images`).
            if report.added or report.updated:
                self.last_tagged += tag_new_images(self.store, self.encoder, self.paths.cache_dir)
        if update_index and (report.added or report.updated or report.relinked):
            self.index_manager.get()
        return report

    def _record_rejected(self, rejected: Sequence[tuple[str, int, int, str]], report: AddReport,
                         retry_failed: bool) -> None:
        """Files the scan refused to open (FIFOs, devices...): failed with their reason, once."""
        todo = []
        for path, size, mtime_ns, reason in rejected:
            known = self.store.image_by_path(path)
            if (known is not None and not retry_failed and known.status == "failed" and known.error == reason
                    and (known.size, known.mtime_ns) == (size, mtime_ns)):
                report.unchanged += 1
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
        self._add([target], False, batch_size=1, workers=0, retry_failed=False, progress=False,
                  update_index=False, exclusive=False)
        record = self.store.image_by_path(normalise_path(target))
        if record is None:
            raise RuntimeError(f"upload {filename or target} was stored but not indexed")
        return record

    def remove(self, items: int | str | os.PathLike[str] | Iterable[int | str | os.PathLike[str]],
               missing_ok: bool = True) -> int:
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
            raise ValueError(f"library {self.paths.root} has no image with {', '.join(unknown)} (nothing removed; "
                             "see `clipforge index stats`)")
        with self._write_lock, self.store.transaction() as tx:
            return tx.delete_images(ids)

    def prune(self) -> int:
        """Forget images whose file no longer exists; returns how many."""
        with self._write_lock, library_lock(self.paths.lock):  # a running add may relink a moved file
            gone = [r.id for r in self.store.list_images() if not os.path.exists(r.path)]
            if not gone:
                return 0
            with self.store.transaction() as tx:
                return tx.delete_images(gone)

    def classify(self, labels: str | Sequence[str], templates: str | Sequence[str] = "imagenet", top_k: int = 5,
                 progress: bool = True) -> TagReport:
        """Zero-shot tag every image (stored in the DB; use as `search(filter_tags=...)`)."""
        with self._write_lock, library_lock(self.paths.lock):
            return tag_library(self.store, self.encoder, labels, templates, top_k=top_k,
                               cache_dir=self.paths.cache_dir, progress=progress)

    def rebuild_index(self, index: str | IndexSpec | None = None, **params: Any) -> dict[str, Any]:
        """Rebuild the vector index now, optionally switching kind (`"flat"`, `"ivf"`, `"hnsw"`, `"auto"`)."""
        spec = None
        if index is not None or params:
            base = self.index_manager.spec().to_dict()
            if isinstance(index, IndexSpec):
                base = index.to_dict()
            elif index is not None:
                base.update({"kind": index, "nlist": None, "nprobe": None, "ef_search": None})
            base.update(params)
            spec = IndexSpec.from_dict(base)
        built = self.index_manager.rebuild(spec)
        return {"kind": built.kind, "count": built.count, "params": built.params, **built.info}

    # -- reading ----------------------------------------------------------------------------
    def _query_vector(self, query: str | None, text: str | Sequence[str] | None, image: Any) -> np.ndarray:
        return query_vector(self.encoder, self.max_pixels, query, text, image)

    def search(self, query: str | None = None, *, text: str | Sequence[str] | None = None, image: Any = None,
               top_k: int = 20, filter_tags: str | Sequence[str] | None = None, tag_rank: int = 0,
               min_tag_score: float = 0.0, under: FolderFilter = None) -> list[SearchHit]:
        """Images most similar to `query` (arithmetic string), `text`, `image` (path, bytes, PIL), or a sum of them.

        `filter_tags`: only images whose rank-`tag_rank` (0 = top-1) or better zero-shot tag is
        one of these labels (and at least `min_tag_score` probability). `under`: only images in these
        folders (one or several) and below them.
        """
        if int(top_k) < 0:
            raise ValueError(f"top_k must be 0 or more, got {top_k}")
        vector = self._query_vector(query, text, image)
        return self.search_vector(vector, top_k=top_k, filter_tags=filter_tags, tag_rank=tag_rank,
                                  min_tag_score=min_tag_score, under=under)

    def search_vector(self, vector: np.ndarray, top_k: int = 20, filter_tags: str | Sequence[str] | None = None,
                      tag_rank: int = 0, min_tag_score: float = 0.0, under: FolderFilter = None) -> list[SearchHit]:
        allowed: set[int] | None = None
        if filter_tags:
            labels = parse_labels(filter_tags)
            allowed = set(self.store.image_ids_with_tags(self.encoder.fingerprint, labels, tag_rank, min_tag_score))
        if under is not None:
            inside = {i for folder in folders_of(under) for i in self.store.image_ids_under(folder)}
            allowed = inside if allowed is None else allowed & inside
        return search_vector(self.store, self.index_manager, vector, int(top_k),
                             None if allowed is None else sorted(allowed))

    def classify_image(self, image: Any, labels: str | Sequence[str], templates: str | Sequence[str] = "imagenet",
                       ) -> list[tuple[str, float]]:
        """(label, probability) for one image (path, bytes or PIL), most likely first; nothing is stored.
        Probabilities are the model's (`self.encoder.scoring()`): they sum to 1 only for softmax models."""
        labels = parse_labels(labels)
        encoder = self.encoder
        classes = encoder.class_embeddings(labels, templates, cache_dir=self.paths.cache_dir)
        vector = encoder.encode_images([image], self.max_pixels)
        top, probs = scored_top_k(vector, classes, encoder.scoring(), len(labels))
        return [(labels[j], float(p)) for j, p in zip(top[0], probs[0], strict=True)]

    def get_image(self, image_id: int) -> ImageRecord | None:
        return self.store.image(int(image_id))

    def image_bytes(self, image_id: int) -> tuple[bytes, str]:
        """(bytes, MIME type); KeyError for an unknown id."""
        return image_bytes(self._record(image_id))

    def thumbnail(self, image_id: int, size: int = 256) -> bytes:
        """JPEG thumbnail (longest side <= size), cached by content; KeyError for an unknown id."""
        return thumbnail_bytes(self.paths, self._record(image_id), size, self.max_pixels)

    def _record(self, image_id: int) -> ImageRecord:
        record = self.store.image(int(image_id))
        if record is None:
            raise KeyError(f"no image with id {image_id} in library {self.paths.root}")
        return record

    def list_images(self, limit: int = 100, offset: int = 0, status: str | None = "ok") -> list[ImageRecord]:
        return self.store.list_images(status=status, limit=limit, offset=offset)

    def tag_counts(self) -> dict[str, int]:
        """The library's tags: label -> photos whose top tag it is, most first (vocabulary labels no photo
        has show 0); empty before `clipforge tag`."""
        return tag_counts(self.store, self.model_fingerprint)

    def no_results_reason(self, filter_tags: str | Sequence[str] | None = None) -> str:
        """One sentence for an empty search result: an empty library, or no photo with those tags."""
        return no_results_reason(self.store, self.model_fingerprint, filter_tags)

    def tags(self, image_id: int) -> list[tuple[str, float]]:
        fingerprint = self.model_fingerprint
        return self.store.tags_for_images(fingerprint, [image_id]).get(int(image_id), []) if fingerprint else []

    def _stored_dim(self) -> int:
        """The embedding width the library recorded; DamagedLibraryError naming the database and the key when it
        is not a number (`int()`'s "invalid literal for int() with base 10: 'abc'" named neither)."""
        value = self.store.get_meta(_META_DIM) or "0"
        if not value.strip().isdigit():
            raise damaged(self.store.path, f"its meta key {_META_DIM!r} holds {value[:40]!r}, not a number")
        return int(value)

    def spaces(self) -> list[dict[str, Any]]:
        """Each model space (a model with vectors here): name, fingerprint, dim, vectors, default or not."""
        default = self.model_fingerprint
        return [{"name": name, "fingerprint": fingerprint, "embed_dim": dim, "images": vectors,
                 "default": fingerprint == default} for fingerprint, name, dim, vectors in self.store.model_spaces()]

    def drop_space(self, model: str) -> dict[str, Any]:
        """Forget one model space's vectors, tags and index (by model name or fingerprint prefix >= 6 chars)."""
        spaces = self.spaces()
        match = [s for s in spaces if model in (s["name"], s["fingerprint"]) or
                 (len(model) >= 6 and s["fingerprint"].startswith(model))]
        if len(match) != 1:
            raise ValueError(f"library {self.paths.root} has no single model space {model!r} (spaces: "
                             f"{', '.join(s['name'] or s['fingerprint'][:12] for s in spaces)})")
        space = match[0]
        if space["default"]:
            raise ValueError(f"{model!r} is the model library {self.paths.root} was built with; it cannot be dropped "
                             "(drop the other spaces, or start another --library)")
        fingerprint = space["fingerprint"]
        with self._write_lock, self.store.transaction() as tx:
            for sql in ("DELETE FROM tags WHERE model = ?", "DELETE FROM embeddings WHERE model = ?",
                        "DELETE FROM models WHERE fingerprint = ?"):
                tx.execute(sql, (fingerprint,))
            tx.execute("DELETE FROM meta WHERE key IN (?, ?)", (f"index_state:{fingerprint}",
                                                              f"tag_labels:{fingerprint}"))
        self.paths.index_file(fingerprint).unlink(missing_ok=True)
        return space

    def stats(self, verify: bool = False) -> dict[str, Any]:
        """Counts, model, index state, tags and recent failures, as plain JSON-able data.

        `verify`: also count 'ok' images without a vector (`missing_vectors`; a scan of every row)."""
        fingerprint = self.model_fingerprint
        db_bytes = sum(p.stat().st_size for p in self.paths.root.glob(self.paths.db.name + "*") if p.is_file())
        out: dict[str, Any] = {
            "library": str(self.paths.root), "schema_version": SCHEMA_VERSION, "images": self.store.status_counts(),
            "model": None, "distinct_contents": 0, "db_bytes": db_bytes,
            "failures": [BadImage(p, r).to_dict() for p, r in self.store.failures(20)],
        }
        if fingerprint is not None:
            out["model"] = {"name": self.store.get_meta(_META_NAME) or None, "fingerprint": fingerprint,
                            "embed_dim": self._stored_dim(),
                            "vector_dtype": self.store.get_meta(_META_DTYPE)}
            out["distinct_contents"] = self.store.embedding_count(fingerprint)
            manager = self._manager or IndexManager(self.store, self.paths, fingerprint, self._stored_dim())
            out["index"] = manager.status()
            out["tags"] = self.store.tag_counts(fingerprint)
            if verify:
                out["missing_vectors"] = 0 if self.store.vectors_checked(fingerprint) else \
                    len(self.store.images_missing_vectors(fingerprint))
            out["spaces"] = self.spaces()
        return out

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Library({str(self.paths.root)!r})"


def record_model(store: Store, fingerprint: str, name: str, embed_dim: int, vector_dtype: str) -> None:
    """Record a library's model (its default space) once: what its first `add` does with its encoder, and `index
    copy` (`clipforge.library.transfer`) with the source's model, no model loaded."""
    if store.get_meta(_META_FINGERPRINT) is None:
        with store.transaction() as tx:
            tx.set_meta(_META_FINGERPRINT, fingerprint)
            tx.set_meta(_META_NAME, name or "")
            tx.set_meta(_META_DIM, str(int(embed_dim)))
            tx.set_meta(_META_DTYPE, vector_dtype)


def open_library(path: str | Path | None = None, model: Any = None, **kwargs: Any) -> Library:
    """Same as `Library(...)`; a function for symmetry with `clipforge.load`."""
    return Library(path, model, **kwargs)


def query_vector(encoder: Encoder, max_pixels: int | None, query: str | None, text: str | Sequence[str] | None,
                 image: Any) -> np.ndarray:
    """The unit query vector of a search (arithmetic `query`, `text`, `image`, or their sum): every store's."""
    terms: list[QueryTerm] = parse_query(query) if query else []
    texts = [text] if isinstance(text, str) else list(text or [])
    terms += [QueryTerm(1.0, "text", t) for t in texts]
    images = list(image) if isinstance(image, (list, tuple)) else ([] if image is None else [image])
    image_terms = [QueryTerm(1.0, "image", f"#{i}") for i in range(len(images))]
    if not terms and not images:
        raise ValueError("search needs a query, a text or an image")
    vector = np.zeros(encoder.embed_dim, dtype=np.float32)
    if terms:
        vector += combine_terms(terms, encoder.encode_texts, lambda paths: encoder.encode_images(paths, max_pixels))
    if image_terms:
        vector += encoder.encode_images(images, max_pixels).sum(axis=0)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
