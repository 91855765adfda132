"""The reads of a `Library`: rank a query vector, and serve images, thumbnails and tags.

Safe from many threads at once: the store gives each thread its own connection, and nothing
here writes. `search` and `classify_image` are every store's (`queries.QueryMethods`): a query becomes
the same unit vector on SQLite and on Milvus; this class ranks it (`search_vector`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np

from clipforge.library.library_base import LibraryBase
from clipforge.library.media import image_bytes, thumbnail_bytes
from clipforge.library.queries import QueryMethods
from clipforge.library.scan import FolderFilter, folders_of
from clipforge.library.search import SearchHit, search_vector
from clipforge.library.store import ImageRecord
from clipforge.library.tag_answers import no_results_reason, tag_counts
from clipforge.library.tagging import parse_labels
from clipforge.library.uploads import home_hit, home_record

__all__ = ["LibraryReads"]


class LibraryReads(QueryMethods, LibraryBase):
    """The reading methods of `Library` (see `clipforge.library.library`)."""

    def search_vector(
        self,
        vector: np.ndarray,
        top_k: int = 20,
        filter_tags: str | Sequence[str] | None = None,
        tag_rank: int = 0,
        min_tag_score: float = 0.0,
        under: FolderFilter = None,
    ) -> list[SearchHit]:
        allowed: set[int] | None = None
        # A tag filter and the tags each hit shows are one snapshot: a `tag` run in another process switching the
        # vocabulary between the two reads showed photos picked by the old labels carrying only the new ones.
        with self.store.snapshot() if filter_tags else contextlib.nullcontext():
            if filter_tags:
                labels = parse_labels(filter_tags)
                allowed = set(
                    self.store.image_ids_with_tags(self.encoder.fingerprint, labels, tag_rank, min_tag_score)
                )
            if under is not None:
                inside = {i for folder in folders_of(under) for i in self.store.image_ids_under(folder)}
                allowed = inside if allowed is None else allowed & inside
            hits = search_vector(
                self.store, self.index_manager, vector, int(top_k), None if allowed is None else sorted(allowed)
            )
        return [home_hit(self.paths, hit) for hit in hits]

    def get_image(self, image_id: int) -> ImageRecord | None:
        """The record of `image_id` (None when unknown); an upload's path is this library's copy of it, wherever the
        library folder was moved (`clipforge.library.uploads`)."""
        return home_record(self.paths, self.store.image(int(image_id)))

    def image_bytes(self, image_id: int) -> tuple[bytes, str]:
        """(bytes, MIME type); KeyError for an unknown id."""
        return image_bytes(self._record(image_id))

    def thumbnail(self, image_id: int, size: int = 256) -> bytes:
        """JPEG thumbnail (longest side <= size), cached by content; KeyError for an unknown id."""
        return thumbnail_bytes(self.paths, self._record(image_id), size, self.max_pixels)

    def _record(self, image_id: int) -> ImageRecord:
        record = home_record(self.paths, self.store.image(int(image_id)))
        if record is None:
            raise KeyError(f"no image with id {image_id} in library {self.paths.root}")
        return record

    def list_images(self, limit: int = 100, offset: int = 0, status: str | None = "ok") -> list[ImageRecord]:
        return [self._home(r) for r in self.store.list_images(status=status, limit=limit, offset=offset)]

    def _home(self, record: ImageRecord) -> ImageRecord:
        found = home_record(self.paths, record)
        assert found is not None
        return found

    def iter_images(self, status: str | None = None, page: int = 5000) -> Iterator[ImageRecord]:
        """Every file record (of `status`, when given), oldest first, read `page` rows at a time by id
        (`Store.images_after`): what `index list` prints. Pages by OFFSET skipped rows that were never removed when
        another process removed some already listed between two pages (ids 5001-8000 of 200,000)."""
        after = 0
        while True:
            records = self.store.images_after(after, page, status=status)
            yield from (self._home(r) for r in records)
            if len(records) < page:
                return
            after = records[-1].id

    def tag_counts(self) -> dict[str, int]:
        """The library's tags: label -> photos whose top tag it is, most first (vocabulary labels no photo
        has show 0); empty before `clipforge tag`."""
        return tag_counts(self.store, self.space_fingerprint)

    def no_results_reason(self, filter_tags: str | Sequence[str] | None = None) -> str:
        """One sentence for an empty search result: an empty library, or no photo with those tags."""
        return no_results_reason(self.store, self.space_fingerprint, filter_tags)

    def tags(self, image_id: int) -> list[tuple[str, float]]:
        fingerprint = self.space_fingerprint
        return (
            self.store.tags_for_images(fingerprint, [image_id]).get(int(image_id), []) if fingerprint else []
        )
