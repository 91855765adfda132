"""The writing end of `clipforge index copy` (`clipforge.library.transfer`): rows written by the stores' own writers.

Owns how a copied space lands: `_MilvusTarget` upserts `milvus_writer.row_from_record` rows (what `index add`
writes, keyed by path), `_SqliteTarget` writes one `Transaction` per batch with the methods `index add` and
`tag` use. Each says which spaces it already holds (`existing`), so the copy can refuse another library.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from clipforge.library.transfer_sources import VECTOR_DTYPE_META, Item, SpaceInfo


class _MilvusTarget:
    """A Milvus store: one `add_space` per space, one upsert of `row_from_record` rows per batch."""

    def __init__(self, spec: Any) -> None:
        self.spec, self.name = spec, spec.describe()
        self.milvus: Any = None
        self.space: Any = None
        self.keep_ids = False

    def key(self) -> tuple[str, ...]:
        return (self.spec.kind, self.spec.uri, self.spec.collection)

    def existing(self) -> list[SpaceInfo]:
        """The spaces already there; a milvus-lite path holding no store is not opened (nothing made yet)."""
        if self.spec.kind == "milvus-lite" and not (Path(self.spec.uri) / "collections").is_dir():
            return []
        self.open()
        return [
            SpaceInfo(s.fingerprint, s.name or "", s.dim, i == 0) for i, s in enumerate(self.milvus.spaces())
        ]

    def open(self) -> None:
        if self.milvus is None:
            from clipforge.library.milvus_store import MilvusStore

            self.milvus = MilvusStore(self.spec, create=True)

    def check_collections(self, spaces: Sequence[SpaceInfo]) -> None:
        """Refuse, before anything is written, a collection the copy would use that another tool made: each
        space's (`add_space` checked it only when the copy reached that space, after the spaces before it were
        written) and ``C_tagsets`` (checked after every row was). The registry was checked by `existing`; a store
        not made yet holds none."""
        if self.milvus is None:  # `existing` found no milvus-lite store there
            return
        from clipforge.library.milvus_layout import space_schema

        milvus = self.milvus
        for space in spaces:
            milvus.space(space.fingerprint)  # a registered one: the collection the registry names, checked
            base = milvus.base_collection(space.fingerprint)
            if milvus.call(milvus.client.has_collection, base):
                milvus.check_layout(base, lambda dim=space.dim: space_schema(dim),
                                    f"space for {space.name or '(object)'}", show_dim=True)
        milvus.check_tagsets()

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # upserts keyed by path: concurrent writers cannot double a file

    def begin_space(self, space: SpaceInfo, first: bool, dtype: str) -> None:
        self.space = self.milvus.add_space(space.fingerprint, space.name, space.dim)

    def write(self, items: Sequence[Item]) -> int:
        """One upsert; returns how many images had more tags than a row holds (kept: the first 16)."""
        from clipforge.library.milvus_store import MAX_TAGS, image_id
        from clipforge.library.milvus_writer import row_from_record

        rows = [
            row_from_record(
                record if self.keep_ids else replace(record, id=image_id(record.path)),
                vector,
                self.space.dim,
                tags,
            )
            for record, vector, tags in items
        ]
        self.space.upsert(rows)
        return sum(len(tags) > MAX_TAGS for _, _, tags in items)

    def set_vocabulary(self, space: SpaceInfo, vocabulary: dict[str, Any]) -> None:
        self.milvus.set_tag_vocabulary(space.fingerprint, json.dumps(vocabulary))

    def close(self) -> None:
        if self.milvus is not None:
            self.milvus.close()


class _SqliteTarget:
    """An embedded library: one transaction per batch, written as `index add` and `tag` write."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        from clipforge.library.paths import LibraryPaths

        self.paths = LibraryPaths(root)
        self.name = f"library {self.paths.root}"
        self.library: Any = None
        self.keep_ids = False
        self.dtype = "float32"

    def key(self) -> tuple[str, ...]:
        return ("sqlite", os.path.realpath(self.paths.root))

    def existing(self) -> list[SpaceInfo]:
        if not self.paths.db.exists():
            return []
        self.open()
        return sorted(
            (
                SpaceInfo(s["fingerprint"], s["name"] or "", s["embed_dim"], s["default"])
                for s in self.library.spaces()
            ),
            key=lambda s: not s.default,
        )

    def open(self) -> None:
        if self.library is None:
            from clipforge.library.library import Library

            self.library = Library(self.paths.root, create=True)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        from clipforge.library.lock import library_lock

        return library_lock(self.paths.lock)  # writers take turns, as every `index add` does

    def begin_space(self, space: SpaceInfo, first: bool, dtype: str) -> None:
        from clipforge.library.library import record_model

        # once: the first space
        record_model(self.library.store, space.fingerprint, space.name, space.dim, dtype)
        self.dtype = self.library.store.get_meta(VECTOR_DTYPE_META) or dtype
        self.space, self.first = space, first

    def write(self, items: Sequence[Item]) -> int:
        from clipforge.library.uploads import copy_upload

        store, fingerprint = self.library.store, self.space.fingerprint
        # The source's uploads are files of its folder: copied into this library's (before the transaction: a
        # copy killed between the two finds them there and rewrites nothing), the records naming the copies.
        homes = {record.path: copy_upload(record, self.paths) for record, _, _ in items}
        items = [(replace(record, path=homes[record.path] or record.path), vector, tags)
                 for record, vector, tags in items]
        with store.transaction() as tx:
            tx.ensure_model(fingerprint, self.space.name or None, self.space.dim)
            for record, vector, tags in items:
                if record.status == "ok":
                    tx.insert_embedding(record.sha256, fingerprint, vector, self.dtype)
                    image_id = tx.upsert_image(
                        record.path,
                        record.sha256,
                        record.size,
                        record.mtime_ns,
                        record.width,
                        record.height,
                        "ok",
                        None,
                        record.added_at or None,
                    )
                    if tags:
                        tx.replace_tags(
                            fingerprint,
                            [(image_id, label, score, rank) for rank, (label, score) in enumerate(tags)],
                        )
                # Records are shared by every space here: a later space's failure never overrides one written
                elif self.first or store.image_by_path(record.path) is None:  # (seen inside this transaction)
                    tx.mark_failed(
                        record.path,
                        record.size,
                        record.mtime_ns,
                        record.error or "",
                        record.sha256,
                        record.added_at or None,
                    )
            tx.bump_generation()  # the FAISS index is rebuilt on the next search
        return 0

    def set_vocabulary(self, space: SpaceInfo, vocabulary: dict[str, Any]) -> None:
        from clipforge.library.tagging import VOCABULARY_KEY

        with self.library.store.transaction() as tx:
            tx.set_meta(VOCABULARY_KEY + space.fingerprint, json.dumps(vocabulary))

    def close(self) -> None:
        if self.library is not None:
            self.library.close()
