"""`MilvusLibrary`: the `Library` API on a Milvus collection (`--store milvus://...`, `milvus-lite:...`).

Same commands, same answers: `add` plans with the embedded store's rules (`indexer._plan`: an
unchanged size and mtime is skipped without reading; a moved file is relinked, not duplicated) and feeds the one embedding loop
(`clipforge.data.files.embed_files`) into `MilvusWriter`; search ranks by inner product of unit
vectors, one hit per distinct content (grouped by sha256, duplicates listed), and tag filters
become Milvus filter expressions (``tags[0] == "cat" and tag_scores[0] >= 0.5``). As in the embedded
store, `classify` (``clipforge tag``) remembers each model space's vocabulary - in Milvus, so every
process sees it - and `add`/`add_bytes` tag the photos they embed with it (`last_tagged`). Storage layout
and the crash story: `clipforge.library.milvus_store`. The `--library` folder keeps only
thumbnails, zero-shot caches and uploads.

Under torchrun (RANK, WORLD_SIZE set) each rank takes every WORLD_SIZE-th file of the sorted
list; ranks write disjoint paths, so any rank can die and be re-run without losing or doubling
a file.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipforge.data.base import BadImage
from clipforge.library.backend import StoreSpec, parse_store
from clipforge.library.encoder import Encoder, default_model_name, resolve_encoder
from clipforge.library.indexer import AddReport
from clipforge.library.media import image_bytes, store_upload, thumbnail_bytes
from clipforge.library.milvus_add import add_to_space, rank_done
from clipforge.library.milvus_search import search_space
from clipforge.library.milvus_stats import space_stats
from clipforge.library.milvus_store import (
    MAX_TAGS,
    MilvusSpace,
    MilvusStore,
    StoreUnavailableError,
    no_library,
    quote,
)
from clipforge.library.milvus_tags import Vocabularies, make_tagger
from clipforge.library.milvus_writer import RECORD_FIELDS, MilvusWriter, record_from_row, tag_filter
from clipforge.library.paths import LibraryPaths
from clipforge.library.scan import FolderFilter, normalise_path, scan_paths
from clipforge.library.search import SearchHit
from clipforge.library.store import ImageRecord
from clipforge.library.tagging import (
    EMPTY_LIBRARY,
    TagReport,
    no_tag_sentence,
    parse_labels,
    prompted_templates,
    scored_top_k,
    tag_vocabulary,
    tags_on_add,
)

__all__ = ["MilvusLibrary", "MilvusWriter", "tag_filter"]


class _StoreView:
    """What the server asks of `library.store` (`images_with_sha`)."""

    def __init__(self, library: MilvusLibrary) -> None:
        self._library = library

    def images_with_sha(self, sha256: str, status: str | None = "ok") -> list[ImageRecord]:
        expr = f"sha256 == {quote(sha256)}" + (f" and status == {quote(status)}" if status else "")
        return sorted((record_from_row(r) for r in self._library.space.query(expr)), key=lambda r: r.path)


class MilvusLibrary:
    """A library whose records and vectors live in Milvus (see module docstring).

    `store`: a `--store` string or `StoreSpec`; `path`: the folder for thumbnails and uploads;
    `model`: as for `Library` (None: the store's default model space); `new_space=True` lets a
    model without a space in this store start one (``index add --model M``).
    """

    def __init__(self, store: str | StoreSpec, path: str | os.PathLike[str] | None = None, model: Any = None, *,
                 preprocess: Any = None, device: str | None = None, max_pixels: int | None = None,
                 create: bool = True, precision: str = "fp32", draft: bool = True, new_space: bool = False,
                 towers: Sequence[str] | None = None, **_embedded_only: Any) -> None:
        from clipforge.image import DEFAULT_MAX_PIXELS

        self.spec = parse_store(store) if isinstance(store, str) else store
        if _embedded_only.get("index") is not None or _embedded_only.get("vector_dtype") == "float16":
            # `index add --index ivf --float16` on a Milvus store was accepted and ignored without a word
            raise ValueError(f"{self.spec.describe()}: --index and --float16 choose the embedded store's index and "
                             "vector type; Milvus builds and keeps its own index of float32 vectors: drop them")
        self.paths = LibraryPaths(path)
        self.paths.check_folder()
        self.milvus = MilvusStore(self.spec, create=create)  # create=False: checks a milvus-lite path first
        if not create and not self.milvus.spaces():
            self.milvus.close()
            raise FileNotFoundError(no_library(self.spec))
        self.max_pixels = int(max_pixels) if max_pixels else DEFAULT_MAX_PIXELS
        self._device, self._precision, self._draft = device, precision, draft
        # As `Library`'s: ("image",) for an add reads the image tower only, unless the add will tag its new
        # photos with a remembered vocabulary, which needs the text tower too (the class embeddings' cache
        # is keyed by it).
        if towers is not None and "text" not in towers and tags_on_add(Vocabularies(self.milvus)):
            towers = None
        self._towers = towers
        self.last_tagged = 0  # photos the last add tagged with the space's vocabulary
        self._new_space = new_space
        self._encoder: Encoder | None = None
        self._space: MilvusSpace | None = None
        self._lock = threading.RLock()
        self.store = _StoreView(self)
        self.listing_ttl = 0.0
        """Seconds `list_images`' order and `stats` may be reused (0: every call reads the collection). Both read
        every row; a server sets this so anonymous page and stats requests cost one scan per period, not
        one each. Writes through this object drop them at once; other processes' writes show within it."""
        self._listings: dict[str, tuple[float, Any]] = {}
        if model is not None:
            self._set_encoder(resolve_encoder(model, preprocess, device, precision=precision, draft=draft,
                                              towers=towers))

    # -- model and space --------------------------------------------------------------------
    def _set_encoder(self, encoder: Encoder) -> None:
        from clipforge.library.library import ModelMismatchError

        spaces = self.milvus.spaces()
        space = next((s for s in spaces if s.fingerprint == encoder.fingerprint), None)
        if space is None and spaces and not self._new_space:
            names = ", ".join(f"{s.name or '(object)'} ({s.fingerprint[:12]})" for s in spaces)
            raise ModelMismatchError(
                f"{self.spec.describe()} has no vectors of {encoder.describe()} (its model spaces: {names}); "
                f"fill one with `clipforge index add --model {encoder.name or 'M'} --store {self.spec.describe().split()[0]}`"
                ", or omit --model")
        self._encoder, self._space = encoder, self.milvus.space(encoder.fingerprint) if space else None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    spaces = self.milvus.spaces()
                    name = spaces[0].name if spaces else default_model_name()
                    self._set_encoder(resolve_encoder(name, device=self._device, precision=self._precision,
                                                      draft=self._draft, towers=self._towers))
        assert self._encoder is not None
        return self._encoder

    @property
    def space(self) -> MilvusSpace:
        if self._space is None:
            encoder = self.encoder
            if self._space is None:
                self._space = self.milvus.add_space(encoder.fingerprint, encoder.name or "", encoder.embed_dim)
        return self._space

    @property
    def model_fingerprint(self) -> str | None:
        return self.encoder.fingerprint if self._encoder is not None or self.milvus.spaces() else None

    # -- writing ----------------------------------------------------------------------------
    def add(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None, recursive: bool = True,
            *, batch_size: int = 64, workers: int | None = None, retry_failed: bool = False, progress: bool = True,
            update_index: bool = True, rank: int | None = None, world_size: int | None = None) -> AddReport:
        """Index files incrementally; `paths=None` fills this model's space with every file of the default
        space. Under torchrun (or with `rank`/`world_size`) only this rank's share of the sorted files."""
        started = time.perf_counter()
        self.last_tagged = 0
        rank = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
        world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
        if paths is None:
            files, rejected = self._known_files(), []
        else:
            if isinstance(paths, (str, os.PathLike)):
                paths = [paths]
            found = scan_paths(paths, recursive=recursive, exclude=[self.paths.root])
            files, rejected = found.files, found.rejected
        files = sorted(files)[rank::world_size]
        rejected = sorted(rejected)[rank::world_size]
        try:
            with self._lock:
                space = self.space
                report, self.last_tagged = add_to_space(
                    self.milvus, space, self.encoder, files, rejected,
                    lambda: [s for s in self._every_space() if s.fingerprint != space.fingerprint],
                    self.paths.cache_dir, self.max_pixels, retry_failed=retry_failed, batch_size=batch_size,
                    workers=workers, progress=progress, label=self.spec.kind)
        except StoreUnavailableError as exc:
            if type(exc) is not StoreUnavailableError:  # locked or damaged: a re-run meets the same wall
                raise
            # Only here is it true: each batch is one idempotent upsert, and the plan skips stored files.
            raise StoreUnavailableError(f"{exc}; every batch written before this is stored, and running the "
                                        "same command again finishes the rest") from None
        finally:
            self._changed()  # rows written so far count, also when indexing stopped half-way
        report.seconds = time.perf_counter() - started
        if world_size > 1:
            rank_done(world_size)
        return report

    def _known_files(self) -> list[str]:
        spaces = self.milvus.spaces()
        if not spaces:
            raise ValueError(f"{self.spec.describe()} holds no files yet: name the photos to index")
        self.milvus.space(spaces[0].fingerprint)
        return [r["path"] for r in spaces[0].iter_rows(fields=["path"])]

    def add_bytes(self, data: bytes, filename: str | None = None) -> ImageRecord:
        self.paths.ensure()
        target = store_upload(self.paths, data, self.max_pixels, filename=filename)
        self.add([target], False, batch_size=1, workers=0, progress=False, rank=0, world_size=1)  # tags it too
        record = self.get_path(normalise_path(target))
        if record is None:
            raise RuntimeError(f"upload {filename or target} was stored but not indexed")
        return record

    def remove(self, items: int | str | os.PathLike[str] | Iterable[int | str | os.PathLike[str]],
               missing_ok: bool = True) -> int:
        """Forget images by id, file path or folder, in every model space; files are not touched.

        Reads only the rows asked about (ids, exact paths, a folder's ``path like "dir/%"``), not the
        whole collection."""
        if isinstance(items, (int, np.integer, str, os.PathLike)):
            items = [items]
        items = list(items)
        spaces = self._every_space()  # a file may be stored in a second space only (`index add --model M`)
        ids = sorted({int(i) for i in items if isinstance(i, (int, np.integer))})
        by_id: dict[int, str] = {}
        names = [normalise_path(i) for i in items if not isinstance(i, (int, np.integer))]
        exact: set[str] = set()
        for space in spaces:
            for start in range(0, len(ids), 512):
                chunk = ", ".join(str(i) for i in ids[start:start + 512])
                by_id |= {int(r["id"]): r["path"] for r in space.query(f"id in [{chunk}]", ["path", "id"])}
            exact |= set(space.rows_for_paths(names, ["path"]))
        gone: set[str] = set()
        unknown: list[str] = []
        for item in items:
            if isinstance(item, (int, np.integer)):
                (gone.add(by_id[int(item)]) if int(item) in by_id else unknown.append(f"id {int(item)}"))
                continue
            path = normalise_path(item)
            if path in exact:
                gone.add(path)
                continue
            under = set().union(*(self._under(space, path.rstrip(os.sep) + os.sep) for space in spaces))
            if not under:
                unknown.append(BadImage(path, "").to_dict()["path"])
            gone |= under
        if unknown and not missing_ok:
            raise ValueError(f"{self.spec.describe()} has no image with {', '.join(unknown)} (nothing removed; see "
                             "`clipforge index stats`)")
        return self._delete(sorted(gone))

    def _every_space(self) -> list[MilvusSpace]:
        """Every model space, loaded for reading: what `remove` and `prune` look in (as the embedded store's
        one images table holds every file of every model); the model itself is never loaded."""
        spaces = self.milvus.spaces()
        for space in spaces:
            self.milvus.space(space.fingerprint)
        return spaces

    @staticmethod
    def _under(space: MilvusSpace, prefix: str) -> set[str]:
        """Paths stored under the folder `prefix` (ending in a separator).

        A prefix match (``path like "prefix%"``) plus the few rows keyed ``b64:`` (names that are not
        UTF-8), filtered here by the exact prefix: milvus-lite reads ``_`` in a pattern as a wildcard
        (more rows, filtered out), a 2.3 server refuses ``%`` inside one and the engines escape ``\\``
        differently, so a prefix holding ``%`` or ``\\`` reads every path instead."""
        if "%" in prefix or "\\" in prefix:
            rows = space.iter_rows(fields=["path"])
        else:
            rows = [*space.query(f"path like {quote(prefix + '%')}", ["path"]),
                    *space.query('path like "b64:%"', ["path"])]
        return {r["path"] for r in rows if r["path"].startswith(prefix)}

    def prune(self) -> int:
        """Forget files that no longer exist, whichever model spaces hold them."""
        stored = {r["path"] for space in self._every_space() for r in space.iter_rows(fields=["path"])}
        return self._delete(sorted(p for p in stored if not os.path.exists(p)))

    def _delete(self, paths: list[str]) -> int:
        with self._lock:
            self._listings.clear()
            for space in self.milvus.spaces():
                self.milvus.space(space.fingerprint)
                space.delete_paths(paths)
        return len(paths)

    def classify(self, labels: str | Sequence[str], templates: str | Sequence[str] = "imagenet", top_k: int = 5,
                 progress: bool = True) -> TagReport:
        """Zero-shot tag every image of this model's space (tags stored in its rows, filterable).

        At most `milvus_store.MAX_TAGS` (16) labels are kept per image, whatever `top_k` asks: the rows'
        tag arrays have that fixed capacity in the collection schema (the embedded store keeps `top_k`).
        The vocabulary (labels, templates, `top_k`) is remembered in the store, as `tagging.tag_library` does
        in the embedded one: photos added later, by any process, are tagged with it (`add`)."""
        started = time.perf_counter()
        labels = parse_labels(labels)
        templates = prompted_templates(templates, labels)  # recorded as prompted ("zh-imagenet"), as tag_library does
        encoder, space = self.encoder, self.space
        tag = make_tagger(encoder, labels, templates, int(top_k), self.paths.cache_dir, progress=progress)
        report = TagReport(labels=labels, templates=templates, scoring=encoder.scoring().kind)
        counts: Counter[str] = Counter()
        k = min(int(top_k), len(labels), MAX_TAGS)
        if min(int(top_k), len(labels)) > MAX_TAGS:  # said, not silently cut
            report.kept_note = f"a Milvus library keeps {MAX_TAGS} tags per image: top_k {int(top_k)} was cut to {k}"
        with self._lock:
            # Remembered first, as the embedded store does: an add that runs meanwhile tags with these labels.
            self.milvus.set_tag_vocabulary(space.fingerprint, json.dumps(
                {"labels": labels, "templates": report.templates, "top_k": int(top_k)}))
            rows = list(space.iter_rows('status == "ok"', fields=[*RECORD_FIELDS, "vector"]))
            for start in range(0, len(rows), 1024):
                chunk = rows[start:start + 1024]
                vectors = np.asarray([r["vector"] for r in chunk], dtype=np.float32)
                for row, (names, scores) in zip(chunk, tag(vectors), strict=True):
                    row["tags"], row["tag_scores"] = names, scores
                    counts[names[0]] += 1
                space.upsert(chunk)
            self._changed()  # the stats' top tags
        report.images = len(rows)
        report.top1_counts = dict(counts.most_common())
        report.seconds = time.perf_counter() - started
        return report

    def rebuild_index(self, index: Any = None, **params: Any) -> dict[str, Any]:
        raise ValueError(f"{self.spec.describe()}: Milvus builds and keeps its own index; `index rebuild` is for the "
                         "embedded store")

    # -- reading ----------------------------------------------------------------------------
    def search(self, query: str | None = None, *, text: str | Sequence[str] | None = None, image: Any = None,
               top_k: int = 20, filter_tags: str | Sequence[str] | None = None, tag_rank: int = 0,
               min_tag_score: float = 0.0, under: FolderFilter = None) -> list[SearchHit]:
        from clipforge.library.library import query_vector

        if int(top_k) < 0:
            raise ValueError(f"top_k must be 0 or more, got {top_k}")
        vector = query_vector(self.encoder, self.max_pixels, query, text, image)
        return self.search_vector(vector, top_k, filter_tags, tag_rank, min_tag_score, under)

    def search_vector(self, vector: np.ndarray, top_k: int = 20, filter_tags: str | Sequence[str] | None = None,
                      tag_rank: int = 0, min_tag_score: float = 0.0, under: FolderFilter = None) -> list[SearchHit]:
        if int(top_k) <= 0:
            return []
        space = self._space or self.milvus.space(self.encoder.fingerprint)
        if space is None:  # nothing indexed with this model yet: a search answers nothing and creates no collection
            return []
        self._space = space
        return search_space(space, vector, top_k, filter_tags, tag_rank, min_tag_score, under)

    def classify_image(self, image: Any, labels: str | Sequence[str], templates: str | Sequence[str] = "imagenet",
                       ) -> list[tuple[str, float]]:
        labels = parse_labels(labels)
        encoder = self.encoder
        classes = encoder.class_embeddings(labels, templates, cache_dir=self.paths.cache_dir)
        top, probs = scored_top_k(encoder.encode_images([image], self.max_pixels), classes, encoder.scoring(),
                                  len(labels))
        return [(labels[j], float(p)) for j, p in zip(top[0], probs[0], strict=True)]

    def get_image(self, image_id: int) -> ImageRecord | None:
        rows = self.space.query(f"id == {int(image_id)}", RECORD_FIELDS, limit=1)
        return record_from_row(rows[0]) if rows else None

    def get_path(self, path: str) -> ImageRecord | None:
        rows = self.space.rows_for_paths([path], RECORD_FIELDS)
        return record_from_row(rows[path]) if path in rows else None

    def _existing(self, image_id: int) -> ImageRecord:
        record = self.get_image(image_id)
        if record is None:
            raise KeyError(f"no image with id {image_id} in {self.spec.describe()}")
        return record

    def image_bytes(self, image_id: int) -> tuple[bytes, str]:
        return image_bytes(self._existing(image_id))

    def thumbnail(self, image_id: int, size: int = 256) -> bytes:
        return thumbnail_bytes(self.paths, self._existing(image_id), size, self.max_pixels)

    def _listing(self, key: str, read: Callable[[], Any]) -> Any:
        """`read()`, or its result from the last `listing_ttl` seconds (writes here clear it)."""
        if self.listing_ttl <= 0:
            return read()
        now = time.monotonic()
        with self._lock:
            known = self._listings.get(key)
        if known is not None and now - known[0] < self.listing_ttl:
            return known[1]
        value = read()
        with self._lock:
            self._listings[key] = (now, value)
        return value

    def _changed(self) -> None:
        with self._lock:
            self._listings.clear()

    def list_images(self, limit: int = 100, offset: int = 0, status: str | None = "ok") -> list[ImageRecord]:
        """A page of images, oldest first. Milvus cannot order a query, so the order comes from every
        row's key and time (reused for `listing_ttl` seconds); the page's full rows are then read by key."""
        expr = f"status == {quote(status)}" if status else ""

        def order() -> list[str]:
            keys = sorted((r["added_at"], r["path"]) for r in self.space.iter_rows(expr, ["path", "added_at"]))
            return [path for _, path in keys]

        page = self._listing(f"order:{self.space.fingerprint}:{status}", order)[int(offset):int(offset) + int(limit)]
        rows = self.space.rows_for_paths(page, RECORD_FIELDS)
        return [record_from_row(rows[p]) for p in page if p in rows]

    def tags(self, image_id: int) -> list[tuple[str, float]]:
        rows = self.space.query(f"id == {int(image_id)}", ["tags", "tag_scores"], limit=1)
        return list(zip(rows[0]["tags"], map(float, rows[0]["tag_scores"]), strict=False)) if rows else []

    def tag_counts(self) -> dict[str, int]:
        """label -> photos whose top tag it is, most first (`tag --list`); the labels of the space's remembered
        vocabulary that no photo has show 0, as in the embedded store (`tagging.tag_counts`)."""
        counts = dict(self.stats().get("tags") or {})
        spaces = self.milvus.spaces()
        if spaces:
            space = self._space or spaces[0]  # the space `stats` counted
            vocabulary = tag_vocabulary(Vocabularies(self.milvus), space.fingerprint)
            for label in (vocabulary or {}).get("labels", []):
                counts.setdefault(label, 0)
        return counts

    def no_results_reason(self, filter_tags: str | Sequence[str] | None = None) -> str:
        """One sentence for an empty search result, as `Library.no_results_reason` says it (from `stats`: its
        counts and each photo's top tag, the one a tag filter matches)."""
        if not self.stats()["images"].get("ok"):
            return EMPTY_LIBRARY
        labels = parse_labels(filter_tags) if filter_tags else []
        counts = self.tag_counts()
        if labels and not any(counts.get(label) for label in labels):
            return no_tag_sentence(labels, counts)
        return "no photo matched"

    def spaces(self) -> list[dict[str, Any]]:
        """Each model space: name, fingerprint, dim, vectors stored, whether it is the default."""
        out = []
        for i, space in enumerate(self.milvus.spaces()):
            self.milvus.space(space.fingerprint)
            out.append({"name": space.name or None, "fingerprint": space.fingerprint, "embed_dim": space.dim,
                        "images": space.count('status == "ok"'), "default": i == 0, "collection": space.collection})
        return out

    def drop_space(self, model: str) -> dict[str, Any]:
        """Forget one model space (by model name or fingerprint prefix); the default only when it is the last."""
        spaces = self.spaces()
        match = [s for s in spaces if model in (s["name"], s["fingerprint"]) or
                 (len(model) >= 6 and s["fingerprint"].startswith(model))]
        if len(match) != 1:
            raise ValueError(f"{self.spec.describe()} has no single model space {model!r} (spaces: "
                             f"{', '.join(s['name'] or s['fingerprint'][:12] for s in spaces)})")
        if match[0]["default"] and len(spaces) > 1:
            raise ValueError(f"{model!r} is the store's default model space; drop the others first")
        self.milvus.drop_space(match[0]["fingerprint"])
        self._changed()
        return match[0]

    def stats(self, verify: bool = False) -> dict[str, Any]:  # `verify`: the embedded store's scan; a no-op here
        """Counts, distinct contents, failures and top tags (reused for `listing_ttl` seconds: every row is read)."""
        return copy.deepcopy(self._listing("stats", self._stats))

    def _stats(self) -> dict[str, Any]:
        spaces = self.milvus.spaces()
        space = (self._space or spaces[0]) if spaces else None
        if space is not None:
            self.milvus.space(space.fingerprint)
        return space_stats(self.spec, space, self.spaces())

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.milvus.close()

    def __enter__(self) -> MilvusLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MilvusLibrary({self.spec.describe()!r})"


def open_store_library(store: str | None, path: str | os.PathLike[str] | Path | None, model: Any = None,
                       **kwargs: Any) -> Any:
    """`Library` for the embedded default (`store` None or "sqlite"), `MilvusLibrary` otherwise."""
    spec = parse_store(store)
    if spec.kind == "sqlite":
        from clipforge.library.library import Library

        kwargs.pop("rank", None)
        return Library(path, model, **kwargs)
    return MilvusLibrary(spec, path, model, **kwargs)
