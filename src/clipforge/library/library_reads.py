"""The reads of a `Library`: search, zero-shot classify one image, and serve images, thumbnails and tags.

Safe from many threads at once: the store gives each thread its own connection, and nothing
here writes. `query_vector` turns a search's query, texts and images into one unit vector; the
Milvus library uses it too, so every store searches with the same vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clipforge.library.encoder import Encoder
from clipforge.library.library_base import LibraryBase
from clipforge.library.media import image_bytes, thumbnail_bytes
from clipforge.library.query import QueryTerm, combine_terms, parse_query
from clipforge.library.scan import FolderFilter, folders_of
from clipforge.library.search import SearchHit, search_vector
from clipforge.library.store import ImageRecord
from clipforge.library.tagging import no_results_reason, parse_labels, scored_top_k, tag_counts

__all__ = ["LibraryReads", "query_vector"]


class LibraryReads(LibraryBase):
    """The reading methods of `Library` (see `clipforge.library.library`)."""

    def _query_vector(self, query: str | None, text: str | Sequence[str] | None, image: Any) -> np.ndarray:
        return query_vector(self.encoder, self.max_pixels, query, text, image)

    def search(
        self,
        query: str | None = None,
        *,
        text: str | Sequence[str] | None = None,
        image: Any = None,
        top_k: int = 20,
        filter_tags: str | Sequence[str] | None = None,
        tag_rank: int = 0,
        min_tag_score: float = 0.0,
        under: FolderFilter = None,
    ) -> list[SearchHit]:
        """Images most similar to `query` (arithmetic string), `text`, `image` (path, bytes, PIL), or a sum of them.

        `filter_tags`: only images whose rank-`tag_rank` (0 = top-1) or better zero-shot tag is
        one of these labels (and at least `min_tag_score` probability). `under`: only images in these
        folders (one or several) and below them.
        """
        if int(top_k) < 0:
            raise ValueError(f"top_k must be 0 or more, got {top_k}")
        vector = self._query_vector(query, text, image)
        return self.search_vector(
            vector,
            top_k=top_k,
            filter_tags=filter_tags,
            tag_rank=tag_rank,
            min_tag_score=min_tag_score,
            under=under,
        )

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
        if filter_tags:
            labels = parse_labels(filter_tags)
            allowed = set(
                self.store.image_ids_with_tags(self.encoder.fingerprint, labels, tag_rank, min_tag_score)
            )
        if under is not None:
            inside = {i for folder in folders_of(under) for i in self.store.image_ids_under(folder)}
            allowed = inside if allowed is None else allowed & inside
        return search_vector(
            self.store, self.index_manager, vector, int(top_k), None if allowed is None else sorted(allowed)
        )

    def classify_image(
        self,
        image: Any,
        labels: str | Sequence[str],
        templates: str | Sequence[str] = "imagenet",
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
        return tag_counts(self.store, self.space_fingerprint)

    def no_results_reason(self, filter_tags: str | Sequence[str] | None = None) -> str:
        """One sentence for an empty search result: an empty library, or no photo with those tags."""
        return no_results_reason(self.store, self.space_fingerprint, filter_tags)

    def tags(self, image_id: int) -> list[tuple[str, float]]:
        fingerprint = self.space_fingerprint
        return (
            self.store.tags_for_images(fingerprint, [image_id]).get(int(image_id), []) if fingerprint else []
        )


def query_vector(
    encoder: Encoder, max_pixels: int | None, query: str | None, text: str | Sequence[str] | None, image: Any
) -> np.ndarray:
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
        vector += combine_terms(
            terms, encoder.encode_texts, lambda paths: encoder.encode_images(paths, max_pixels)
        )
    if image_terms:
        vector += encoder.encode_images(images, max_pixels).sum(axis=0)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
