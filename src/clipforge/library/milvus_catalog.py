"""`MilvusLibrary`'s read side: search, one image, a page of images, the model spaces and stats.

Search ranks by inner product in this model's space (`milvus_search.search_space`); with nothing indexed
by this model yet it answers nothing and creates no collection. Milvus cannot order a query and every count reads every row, so `list_images`' order and
`stats` are kept for `listing_ttl` seconds (`_listing`); every write through the library clears them
(`_changed`). A part of `MilvusLibrary` (`clipforge.library.milvus_library`), whose `__init__` sets the
attributes these methods read.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from clipforge.library.backend import store_argument
from clipforge.library.media import image_bytes, thumbnail_bytes
from clipforge.library.milvus_search import search_space
from clipforge.library.milvus_stats import space_stats
from clipforge.library.milvus_store import quote
from clipforge.library.milvus_writer import RECORD_FIELDS, record_from_row
from clipforge.library.queries import QueryMethods
from clipforge.library.scan import FolderFilter
from clipforge.library.search import SearchHit
from clipforge.library.store import ImageRecord, check_page, stored_id
from clipforge.library.uploads import home_hit, home_record


class MilvusCatalog(QueryMethods):
    """The reading methods of `MilvusLibrary` (see the module docstring)."""

    def search_vector(
        self,
        vector: np.ndarray,
        top_k: int = 20,
        filter_tags: str | Sequence[str] | None = None,
        tag_rank: int = 0,
        min_tag_score: float = 0.0,
        under: FolderFilter = None,
    ) -> list[SearchHit]:
        if int(top_k) <= 0:
            return []
        space = self._space or self.milvus.space(self.encoder.fingerprint)
        if (
            space is None
        ):  # nothing indexed with this model yet: a search answers nothing and creates no collection
            return []
        self._space = space
        if filter_tags:  # as the space's tags spell them (NFKC forms: `stored_tag_forms`), as the embedded store
            from clipforge.library.milvus_tags import Vocabularies
            from clipforge.library.tagging import parse_labels, tag_vocabulary
            from clipforge.text.labels import stored_tag_forms

            vocabulary = tag_vocabulary(Vocabularies(self.milvus), space.fingerprint) or {}
            filter_tags = stored_tag_forms(parse_labels(filter_tags), vocabulary.get("labels", []))
        hits = search_space(space, vector, top_k, filter_tags, tag_rank, min_tag_score, under)
        return [home_hit(self.paths, hit) for hit in hits]

    def _record(self, row: dict[str, Any]) -> ImageRecord:
        """A row's record, an upload's path the one in this library folder's ``uploads/`` (`uploads.home_record`):
        the records are Milvus's, the upload files the `--library` folder's, which may have been moved."""
        record = home_record(self.paths, record_from_row(row))
        assert record is not None
        return record

    def get_image(self, image_id: int) -> ImageRecord | None:
        key = stored_id(image_id)
        if key is None:
            return None
        rows = self.space.query(f"id == {key}", RECORD_FIELDS, limit=1)
        return self._record(rows[0]) if rows else None

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

    def _order(self, status: str | None) -> list[str]:
        """Every row's path (of `status`, when given), oldest first: Milvus cannot order a query, so the order
        comes from every row's key and time."""
        expr = f"status == {quote(status)}" if status else ""
        keys = sorted((r["added_at"], r["path"]) for r in self.space.iter_rows(expr, ["path", "added_at"]))
        return [path for _, path in keys]

    def _records(self, paths: list[str]) -> list[ImageRecord]:
        rows = self.space.rows_for_paths(paths, RECORD_FIELDS)
        return [self._record(rows[p]) for p in paths if p in rows]

    def list_images(self, limit: int = 100, offset: int = 0, status: str | None = "ok") -> list[ImageRecord]:
        """A page of images, oldest first, by the order of `_order` (reused for `listing_ttl` seconds); the page's
        full rows are then read by key."""
        check_page(limit, offset)
        order = self._listing(f"order:{self.space.fingerprint}:{status}", lambda: self._order(status))
        return self._records(order[int(offset) : int(offset) + int(limit)])

    def iter_images(self, status: str | None = None, page: int = 5000) -> Iterator[ImageRecord]:
        """Every file record (of `status`, when given) of every model space, each path once, oldest first, `page`
        rows at a time: what `index list` prints, as the embedded store's one images table lists every file of
        every model (a file indexed by `index add --model M` only is in M's space alone; ids come from the path,
        so they agree across spaces). One order, read once, serves the whole listing, so a row removed meanwhile
        by another process shifts no later one out of it; a row removed before its page is read is left out.
        No model is loaded."""
        expr = f"status == {quote(status)}" if status else ""
        first: dict[str, tuple[float, Any]] = {}
        for space in self._every_space():  # the default space first: its record of a shared file is the one shown
            for row in space.iter_rows(expr, ["path", "added_at"]):
                first.setdefault(row["path"], (float(row["added_at"] or 0.0), space))
        order = sorted(first, key=lambda path: (first[path][0], path))
        for start in range(0, len(order), max(1, int(page))):
            chunk = order[start : start + int(page)]
            rows: dict[str, Any] = {}
            for space in {id(first[p][1]): first[p][1] for p in chunk}.values():
                rows |= space.rows_for_paths([p for p in chunk if first[p][1] is space], RECORD_FIELDS)
            yield from (self._record(rows[p]) for p in chunk if p in rows)

    def spaces(self) -> list[dict[str, Any]]:
        """Each model space: name, fingerprint, dim, vectors stored, whether it is the default; oldest first, as
        the embedded store lists them (the default first made `index stats` differ between the stores)."""
        out = []
        for space, default in self.milvus.spaces_by_age():
            self.milvus.space(space.fingerprint)
            out.append(
                {
                    "name": space.name or None,
                    "fingerprint": space.fingerprint,
                    "embed_dim": space.dim,
                    "images": space.count('status == "ok"'),
                    "default": default,
                    "collection": space.collection,
                }
            )
        return out

    def set_default(self, model: str) -> dict[str, Any]:
        """Make one model space (by model name or fingerprint prefix >= 6 chars) the store's default, as
        `Library.set_default` does: the registry's flag (`SpaceRegistry.set_default`, what `_take_default` sets).
        The space as `spaces()` listed it; objects open on the store keep the space they opened. Refused as there
        (`refuse_unsearchable_default`), and looked up again under the write lock `drop_space` holds too (a
        milvus-lite folder is open in one process at a time; a server's store has no lock across processes)."""
        from clipforge.library.library_base import pick_space, refuse_unsearchable_default

        where, target, seen = self.spec.describe(), f"--store {store_argument(self.spec)}", {}
        space = pick_space(model, spaces := self.spaces(), where)
        if space["default"]:
            return space
        refuse_unsearchable_default(space, spaces, self._encoder, self._device, seen, where, target)  # loads it
        with self._lock, self.milvus.writes():  # not under a `tag` run of another object (`milvus_retag`)
            space = pick_space(model, spaces := self.spaces(), where)
            if not space["default"]:
                refuse_unsearchable_default(space, spaces, self._encoder, self._device, seen, where, target)
                self.milvus.set_default(space["fingerprint"])
                self._changed()
        return space

    def drop_space(self, model: str) -> dict[str, Any]:
        """Forget one model space (by model name or fingerprint prefix, `pick_space`: two builds of one model told
        apart by fingerprint); the default only when it is the last, its refusal saying how to make another the
        default."""
        from clipforge.library.library_base import pick_space

        with self._lock, self.milvus.writes():  # looked up under the lock `set_default` holds (`Library.drop_space`)
            spaces = self.spaces()
            space = pick_space(model, spaces, self.spec.describe())
            if space["default"] and len(spaces) > 1:
                raise ValueError(f"{model!r} is the store's default model space: make another the default first "
                                 f"(`clipforge index set-default --store {store_argument(self.spec)} MODEL`), or drop "
                                 "the others first")
            self.milvus.drop_space(space["fingerprint"])
            self._changed()
            return space

    def stats(self, verify: bool = False) -> dict[str, Any]:
        """Counts, distinct contents, failures and top tags (reused for `listing_ttl` seconds: every row is read).

        `verify` (`index stats`) adds `missing_vectors` as the embedded store does: always 0 here, where a row
        holds its file's record and vector together, so no scan is needed (scripts read the key on both)."""
        out = copy.deepcopy(self._listing("stats", self._stats))
        if verify:
            out["missing_vectors"] = 0 if out.get("model") else None  # null without a space, as the embedded store
        return out

    def _stats(self) -> dict[str, Any]:
        spaces = self.milvus.spaces()
        space = (self._space or spaces[0]) if spaces else None
        if space is not None:
            self.milvus.space(space.fingerprint)
        return space_stats(self.spec, space, self.spaces())
