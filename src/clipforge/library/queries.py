"""What every library answers the same way, whatever its store: a search's query vector and one image's tags.

`Library` (SQLite + FAISS) and `MilvusLibrary` differ in how they rank a vector and where tags live, not in
how a query becomes a vector or how one image is classified: those are here once, so a search or a
`classify_image` on either store runs the same code (`QueryMethods`). Each class brings its own
`search_vector` (filters, ranking) and the attributes this reads: `encoder`, `max_pixels`, `paths`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from clipforge.library.encoder import Encoder
from clipforge.library.query import QueryTerm, combine_terms, parse_query
from clipforge.library.scan import FolderFilter
from clipforge.library.search import SearchHit, split_second_names
from clipforge.library.tagging import parse_labels, scored_top_k

__all__ = ["QueryMethods", "query_vector"]


def query_vector(
    encoder: Encoder, max_pixels: int | None, query: str | None, text: str | Sequence[str] | None, image: Any
) -> np.ndarray:
    """The unit query vector of a search (arithmetic `query`, `text`, `image`, or their sum): every store's. A
    `query` that is no str is one TypeError naming it (123 was "object of type 'int' has no len()")."""
    if query is not None and not isinstance(query, str):
        hint = ("; several texts: search(text=[...])" if isinstance(query, (list, tuple)) else
                "; an image: search(image=path)" if isinstance(query, os.PathLike) else "")
        raise TypeError(f"query must be a str (search arithmetic such as '\"cat\" - \"grass\"'), got "
                        f"{type(query).__name__}{hint}")
    terms: list[QueryTerm] = parse_query(query) if query else []
    texts = [text] if isinstance(text, str) else list(text or []) if isinstance(text, Iterable) or not text else None
    if texts is None or not all(isinstance(t, str) for t in texts):  # 123 was "'int' object is not iterable"
        raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
    terms += [QueryTerm(1.0, "text", t) for t in texts]
    images = list(image) if isinstance(image, (list, tuple)) else ([] if image is None else [image])
    if not all(isinstance(i, (str, os.PathLike, bytes, bytearray)) or hasattr(i, "convert") for i in images):
        # the encoder named the item "images[0]", an argument `search` has not
        raise TypeError(f"image must be a path, bytes or a PIL image, or a list of them; got {type(image).__name__}")
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


class QueryMethods:
    """`search` and `classify_image` for any library class that has `encoder`, `max_pixels`, `paths` and its
    own `search_vector(vector, top_k, filter_tags, tag_rank, min_tag_score, under)`."""

    encoder: Encoder
    max_pixels: int | None
    paths: Any

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
        folders (one or several) and below them. A hit's `duplicates` are its copies (same bytes, another file);
        other names of the same file (links) are its `same_file`.
        """
        # imported here: the classifier module's imports would slow every command's start
        from clipforge.zeroshot.classifier import check_top_k

        top_k = check_top_k(top_k, least=0)  # None, 2.7, "3" or True: one line naming it (0: no hits)
        vector = query_vector(self.encoder, self.max_pixels, query, text, image)
        hits = self.search_vector(
            vector,
            top_k=top_k,
            filter_tags=filter_tags,
            tag_rank=tag_rank,
            min_tag_score=min_tag_score,
            under=under,
        )
        return [split_second_names(hit) for hit in hits]  # a link's name is the same file, not a copy

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
