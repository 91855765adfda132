"""The reading end of `clipforge index copy` (`clipforge.library.transfer`): a library's spaces, page by page.

Owns what a copy reads and in what shape: `SpaceInfo` (one model space), `Item` (one file of one space: its
record, vector and tags), and the two sources, an embedded library read in keyset pages under its lock
(`_SqliteSource`) and a Milvus store read space by space, oldest row first (`_MilvusSource`). Memory is bounded by
the page size (a Milvus source also holds every row's path and time, the order it reads them in).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipforge.library.library_base import META_DTYPE
from clipforge.library.store import ImageRecord
from clipforge.library.uploads import home_record

VECTOR_DTYPE_META = META_DTYPE  # the library's meta key for its vectors' dtype

Item = tuple[ImageRecord, "np.ndarray | None", list[tuple[str, float]]]
"""One file of one space: its record, its vector (None for a failed file) and its tags in rank order."""


@dataclass(frozen=True)
class SpaceInfo:
    fingerprint: str
    name: str
    dim: int
    default: bool

    def label(self) -> str:
        return f"{self.name or '(object)'} ({self.fingerprint[:12]})"


class _SqliteSource:
    """An embedded library, read page by page under its lock."""

    kind = "sqlite"

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        from clipforge.library.library import Library

        self.library = Library(root, create=False)
        self.store = self.library.store
        self.name = f"library {self.library.paths.root}"

    def key(self) -> tuple[str, ...]:
        return ("sqlite", os.path.realpath(self.library.paths.root))

    def spaces(self) -> list[SpaceInfo]:
        found = [
            SpaceInfo(s["fingerprint"], s["name"] or "", s["embed_dim"], s["default"])
            for s in self.library.spaces()
        ]  # a damaged database: one line naming it (`Store.model_spaces`)
        return sorted(found, key=lambda s: not s.default)

    def vector_dtype(self) -> str:
        return self.store.get_meta(VECTOR_DTYPE_META) or "float32"  # (`Library.stats` counts every table)

    def count(self, space: SpaceInfo) -> int:
        return sum(self.store.status_counts().values())

    def vocabulary(self, space: SpaceInfo) -> dict[str, Any] | None:
        from clipforge.library.tagging import tag_vocabulary

        return tag_vocabulary(self.store, space.fingerprint)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        from clipforge.library.lock import library_lock

        return library_lock(self.library.paths.lock)

    def batches(self, space: SpaceInfo, size: int) -> Iterator[list[Item]]:
        last = -1
        while True:
            records = self.store.images_after(last, size)
            if not records:
                return
            last = records[-1].id
            # a moved library's uploads as it reads them (`uploads.home_record`): the copy then takes their files
            records = [home_record(self.library.paths, r) for r in records]
            shas = sorted({r.sha256 for r in records if r.status == "ok" and r.sha256})
            vectors = self.store.vectors_for_shas(space.fingerprint, shas)
            tags = self.store.tags_for_images(space.fingerprint, [r.id for r in records])
            yield [
                (r, vectors.get(r.sha256 or "") if r.status == "ok" else None, tags.get(r.id, []))
                for r in records
            ]

    def close(self) -> None:
        self.library.close()


class _MilvusSource:
    """A Milvus store (server or milvus-lite), read space by space."""

    kind = "milvus"

    def __init__(self, spec: Any) -> None:
        from clipforge.library.milvus_store import MilvusStore, no_library

        self.spec, self.name = spec, spec.describe()
        self.milvus = MilvusStore(spec, create=False)
        if not self.milvus.spaces():
            self.milvus.close()
            raise FileNotFoundError(no_library(spec))
        try:  # a foreign C_tagsets refused now: found when the vocabularies were read, after every row was copied
            self.milvus.check_tagsets()
        except BaseException:
            self.milvus.close()
            raise

    def key(self) -> tuple[str, ...]:
        return (self.spec.kind, self.spec.uri, self.spec.collection)

    def spaces(self) -> list[SpaceInfo]:
        return [
            SpaceInfo(s.fingerprint, s.name or "", s.dim, i == 0) for i, s in enumerate(self.milvus.spaces())
        ]

    def vector_dtype(self) -> str:
        return "float32"

    def _space(self, space: SpaceInfo) -> Any:
        found = self.milvus.space(space.fingerprint)  # loads its collection
        assert found is not None
        return found

    def count(self, space: SpaceInfo) -> int:
        return self._space(space).count()

    def vocabulary(self, space: SpaceInfo) -> dict[str, Any] | None:
        from clipforge.library.milvus_tags import Vocabularies
        from clipforge.library.tagging import tag_vocabulary

        return tag_vocabulary(Vocabularies(self.milvus), space.fingerprint)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def batches(self, space: SpaceInfo, size: int) -> Iterator[list[Item]]:
        """The space's rows oldest first, `(added_at, path)`, `size` at a time: an embedded destination numbers its
        records in the order it is given them, and its ids decide which of identical photos a hit shows and the
        order of `index list`, as `(added_at, path)` decides them here (`milvus_search`, `milvus_catalog`).
        Collection order (physical on milvus-lite, which a `tag` run rewrites; path order on a server) gave a copy
        that showed another photo than its source. The keys are read first (as `index list` reads them), then
        each page's rows by path; a row removed meanwhile is left out."""
        from clipforge.library.milvus_writer import RECORD_FIELDS, record_from_row

        found = self._space(space)
        keys = sorted((float(r.get("added_at") or 0.0), r["path"]) for r in found.iter_rows(fields=["path", "added_at"]))
        for start in range(0, len(keys), max(1, int(size))):
            chunk = [path for _, path in keys[start : start + max(1, int(size))]]
            rows = found.rows_for_paths(chunk, [*RECORD_FIELDS, "vector"])
            page: list[Item] = []
            for row in (rows[p] for p in chunk if p in rows):
                record = record_from_row(row)
                tags = list(zip(row.get("tags") or [], map(float, row.get("tag_scores") or []), strict=False))
                page.append(
                    (record, np.asarray(row["vector"], np.float32) if record.status == "ok" else None, tags)
                )
            if page:
                yield page

    def close(self) -> None:
        self.milvus.close()
