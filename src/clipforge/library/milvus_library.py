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

This module opens a library (store, model space, encoder) and writes to it (`add`, `add_bytes`);
`MilvusLibrary`'s other methods live beside it, one idea each: `milvus_remove` (remove, prune),
`milvus_classify` (zero-shot tags) and `milvus_catalog` (search, records, listings, spaces, stats).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clipforge.library.backend import StoreSpec, parse_store, store_argument
from clipforge.library.encoder import Encoder, default_model_name, resolve_encoder
from clipforge.library.indexer import AddReport
from clipforge.library.media import store_upload
from clipforge.library.milvus_add import add_to_space, rank_done
from clipforge.library.milvus_catalog import MilvusCatalog
from clipforge.library.milvus_classify import MilvusClassify
from clipforge.library.milvus_remove import MilvusRemoval
from clipforge.library.milvus_store import MilvusSpace, MilvusStore, StoreConnectionError, no_library, quote
from clipforge.library.milvus_tags import Vocabularies
from clipforge.library.milvus_writer import MilvusWriter, tag_filter
from clipforge.library.paths import LibraryPaths
from clipforge.library.scan import normalise_path, scan_paths
from clipforge.library.store import ImageRecord
from clipforge.library.tagging import tags_on_add

__all__ = ["MilvusLibrary", "MilvusWriter", "tag_filter"]


class _StoreView:
    """What the server asks of `library.store` (`images_with_sha`)."""

    def __init__(self, library: MilvusLibrary) -> None:
        self._library = library

    def images_with_sha(self, sha256: str, status: str | None = "ok") -> list[ImageRecord]:
        expr = f"sha256 == {quote(sha256)}" + (f" and status == {quote(status)}" if status else "")
        library = self._library
        return sorted((library._record(r) for r in library.space.query(expr)), key=lambda r: r.path)


class MilvusLibrary(MilvusRemoval, MilvusClassify, MilvusCatalog):
    """A library whose records and vectors live in Milvus (see module docstring).

    `store`: a `--store` string or `StoreSpec`; `path`: the folder for thumbnails and uploads;
    `model`: as for `Library` (None: the store's default model space); `new_space=True` lets a
    model without a space in this store start one (``index add --model M``). `create=False` refuses a store
    that holds no library (read-only commands); `create=True` (``serve --create``) also records `model`'s
    space, empty, in a store that has none (`_claim_model`); the default (None) opens or starts the store
    as True does but records nothing before the first photo is stored (a search of an empty store makes no
    collection, and ``index add EMPTY --model M`` chooses no default model).
    """

    def __init__(
        self,
        store: str | StoreSpec,
        path: str | os.PathLike[str] | None = None,
        model: Any = None,
        *,
        preprocess: Any = None,
        device: str | None = None,
        max_pixels: int | None = None,
        create: bool | None = None,
        precision: str = "fp32",
        draft: bool = True,
        new_space: bool = False,
        towers: Sequence[str] | None = None,
        **_embedded_only: Any,
    ) -> None:
        from clipforge.image import DEFAULT_MAX_PIXELS

        self.spec = parse_store(store) if isinstance(store, str) else store
        if _embedded_only.get("index") is not None or _embedded_only.get("vector_dtype") == "float16":
            # `index add --index ivf --float16` on a Milvus store was accepted and ignored without a word
            raise ValueError(
                f"{self.spec.describe()}: --index and --float16 choose the embedded store's index and "
                "vector type; Milvus builds and keeps its own index of float32 vectors: drop them"
            )
        self.paths = LibraryPaths(path)
        self.paths.check_folder()
        read_only = create is not None and not create
        self.milvus = MilvusStore(self.spec, create=not read_only)  # read-only: checks a milvus-lite path first
        if read_only and not self.milvus.spaces():
            self.milvus.close()
            raise FileNotFoundError(no_library(self.spec))
        try:  # a foreign C_tagsets refused here, in one line: `serve` answered every upload with a 500
            self.milvus.check_tagsets()
        except BaseException:
            self.milvus.close()
            raise
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
        self._is_default = False  # whether this object's space was found to be the store's default (`_take_default`)
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
            try:
                self._set_encoder(
                    resolve_encoder(model, preprocess, device, precision=precision, draft=draft, towers=towers)
                )
                if create:  # True, not the default (None)
                    self._claim_model()
            except BaseException:  # a refused model or collection: the milvus-lite folder is not left held
                self.milvus.close()
                raise

    # -- model and space --------------------------------------------------------------------
    def _set_encoder(self, encoder: Encoder) -> None:
        from clipforge.library.library import ModelMismatchError
        from clipforge.library.library_base import other_build_refusal

        spaces = self.milvus.spaces()
        space = next((s for s in spaces if s.fingerprint == encoder.fingerprint), None)
        if space is None and spaces and not self._new_space:
            if spaces[0].name and spaces[0].name == encoder.name:  # one name, two builds (`other_build_refusal`)
                raise ModelMismatchError(other_build_refusal(
                    self.spec.describe(), spaces[0].name, spaces[0].fingerprint, encoder.fingerprint, None,
                    f"--store {store_argument(self.spec)}"))
            names = ", ".join(f"{s.name or '(object)'} ({s.fingerprint[:12]})" for s in spaces)
            raise ModelMismatchError(
                f"{self.spec.describe()} has no vectors of {encoder.describe()} (its model spaces: {names}); "
                f"fill one with `clipforge index add --model {encoder.name or 'M'} --store {self.spec.describe().split()[0]}`"
                ", or omit --model"
            )
        self._encoder, self._space = encoder, self.milvus.space(encoder.fingerprint) if space else None

    def _claim_model(self) -> None:
        """A store opened to be written with an explicit model (`MilvusLibrary(store, model=M, create=True)`,
        `serve --create --model M`) that has no model space yet records M's, empty, as its default, as the embedded
        store records M (`Library._claim_model`): a later writer without a model (`index add DIR` in another
        process) used the shipped default model and made its space the default, beside a server that searched M's
        and found nothing. (A default space that holds no vector is still taken over by the first vectors of another
        model: `_take_default`.)"""
        if self._space is None and not self.milvus.spaces():
            self._space = self.space

    def _take_default(self, space: MilvusSpace) -> None:
        """After an add into `space`: when the store's default space holds no photo (made for a model by
        `_claim_model`, or every photo removed) and `space` now does, `space` becomes the default, with a notice
        (`ModelReplacedNotice`), as the embedded store's `record_model` replaces a recorded model without vectors:
        plain `search` and `tag` searched the empty space, and the new photos were said to be a second space."""
        if self._is_default:
            return
        spaces = self.milvus.spaces()
        if not spaces or spaces[0].fingerprint == space.fingerprint:
            self._is_default = bool(spaces)  # not asked again on each upload: the default moves only to a space
            return  # that holds photos, from one that holds none (or by `index drop-space`, another process's)
        default = self.milvus.space(spaces[0].fingerprint)
        if default is None or default.count('status == "ok"') or not space.count('status == "ok"'):
            return
        from clipforge.library.indexer import ModelReplacedNotice

        self.milvus.set_default(space.fingerprint)
        replaced = default.name or "(an object)"
        warnings.warn(ModelReplacedNotice(
            f"library {self.spec.describe()} was made for model {replaced} and held none of its vectors: it is built "
            f"with {space.name or '(an object)'} from now on (plain `search` and `tag` use it; a server still open on "
            f"{default.name or 'the old model'} must be restarted)"), stacklevel=3)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    spaces = self.milvus.spaces()
                    name = spaces[0].name if spaces else default_model_name()
                    self._set_encoder(
                        resolve_encoder(
                            name,
                            device=self._device,
                            precision=self._precision,
                            draft=self._draft,
                            towers=self._towers,
                        )
                    )
        assert self._encoder is not None
        return self._encoder

    @property
    def space(self) -> MilvusSpace:
        if self._space is None:
            encoder = self.encoder
            if self._space is None:
                self._space = self.milvus.add_space(
                    encoder.fingerprint, encoder.name or "", encoder.embed_dim
                )
        return self._space

    @property
    def model_fingerprint(self) -> str | None:
        return self.encoder.fingerprint if self._encoder is not None or self.milvus.spaces() else None

    @property
    def space_fingerprint(self) -> str | None:
        """The model space this library reads (`Library.space_fingerprint`): here always its model's, the space
        it opened."""
        return self.model_fingerprint

    # -- writing ----------------------------------------------------------------------------
    def add(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None,
        recursive: bool = True,
        *,
        batch_size: int = 64,
        workers: int | None = None,
        retry_failed: bool = False,
        rehash: bool = False,
        progress: bool = True,
        update_index: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> AddReport:
        """Index files incrementally; `paths=None` fills this model's space with every file of the default
        space. Under torchrun (or with `rank`/`world_size`) only this rank's share of the sorted files. `rehash`: read
        and hash every file, also those whose size and time are the recorded ones (as `Library.add`'s)."""
        started = time.perf_counter()
        self.last_tagged = 0
        rank = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
        world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
        folders: list[str] = []  # the folders named, and all their scan found: for the "gone from disk" count
        seen: set[str] = set()
        if paths is None:
            files, rejected = self._known_files(), []
        else:
            if isinstance(paths, (str, os.PathLike)):
                paths = [paths]
            found = scan_paths(paths, recursive=recursive, exclude=[self.paths.root])
            files, rejected = found.files, found.rejected
            folders = [normalise_path(p) for p in paths if os.path.isdir(p)]
            seen = {*files, *(r[0] for r in rejected)}
        files = sorted(files)[rank::world_size]
        rejected = sorted(rejected)[rank::world_size]
        if not files and not rejected and self._space is None and not self.milvus.spaces():
            # nothing to store in an empty store: no space is made, so no model becomes its default (as the embedded
            # store's `record_model`); only `create=True` (`serve --create --model M`) records one first (`_claim_model`)
            return AddReport(seconds=time.perf_counter() - started)
        try:
            with self._lock:
                space = self.space
                report, self.last_tagged = add_to_space(
                    self.milvus,
                    space,
                    self.encoder,
                    files,
                    rejected,
                    lambda: [s for s in self._every_space() if s.fingerprint != space.fingerprint],
                    self.paths.cache_dir,
                    self.max_pixels,
                    retry_failed=retry_failed,
                    rehash=rehash,
                    batch_size=batch_size,
                    workers=workers,
                    progress=progress,
                    label=self.spec.kind,
                    folders=folders,
                    seen=seen,
                )
        except StoreConnectionError as exc:
            # Only here is it true: each batch is one idempotent upsert, and the plan skips stored files. Only for
            # a lost or slow connection: a refused request (a collection of another schema, a quota), a locked or
            # a damaged store meets the same wall on every run, and was told to run again for ever.
            raise StoreConnectionError(
                f"{exc}; every batch written before this is stored, and running the "
                "same command again finishes the rest"
            ) from None
        finally:
            self._changed()  # rows written so far count, also when indexing stopped half-way
        self._take_default(space)
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
        from clipforge.library.dbfile import not_writable

        try:
            self.paths.ensure()
        except OSError as exc:  # a read-only place for the library folder: the library's own write error
            refused = not_writable(self.paths.root, exc)
            if refused is None:
                raise
            raise refused from exc
        target = store_upload(self.paths, data, self.max_pixels, filename=filename)
        # tags it too
        self.add([target], False, batch_size=1, workers=0, progress=False, rank=0, world_size=1)
        record = self.get_path(normalise_path(target))
        if record is None:
            raise RuntimeError(f"upload {filename or target} was stored but not indexed")
        return record

    def rebuild_index(self, index: Any = None, **params: Any) -> dict[str, Any]:
        raise ValueError(
            f"{self.spec.describe()}: Milvus builds and keeps its own index; `index rebuild` is for the "
            "embedded store"
        )

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.milvus.close()

    def __enter__(self) -> MilvusLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MilvusLibrary({self.spec.describe()!r})"


def open_store_library(
    store: str | None, path: str | os.PathLike[str] | Path | None, model: Any = None, **kwargs: Any
) -> Any:
    """`Library` for the embedded default (`store` None or "sqlite"), `MilvusLibrary` otherwise."""
    spec = parse_store(store)
    if spec.kind == "sqlite":
        from clipforge.library.library import Library

        kwargs.pop("rank", None)
        return Library(path, model, **kwargs)
    return MilvusLibrary(spec, path, model, **kwargs)
