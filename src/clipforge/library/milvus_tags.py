"""A Milvus library's tags: the remembered vocabulary of each model space, and the one tagging rule.

`clipforge tag` (`MilvusLibrary.classify`) tags every photo of a space and remembers its labels, templates and
`top_k` in the store (`MilvusStore.set_tag_vocabulary`, a ``<collection>_tagsets`` collection); photos added
later, by any process, are tagged in the upsert that stores them (`space_tagger`): on milvus-lite with the vocabulary
the store names when each batch is written; on a Milvus server (where `tag` rewrites rows in place) with the one read
at the add's first batch that has photos to tag. Both go through `make_tagger`, so a photo gets the same tags whichever way it
came in, and the vocabulary is read by the embedded store's own `tagging.tag_vocabulary` (`Vocabularies`), so both
stores read it alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from clipforge.library.encoder import Encoder
from clipforge.library.milvus_store import MAX_TAGS, MilvusSpace, MilvusStore
from clipforge.library.milvus_writer import Tagger, TagSource
from clipforge.library.tagging import (
    VOCABULARY_KEY,
    parse_labels,
    scored_top_k,
    tag_vocabulary,
    vocabulary_templates,
)

__all__ = ["Vocabularies", "make_tagger", "space_tagger"]


class Vocabularies:
    """The two meta reads of `tagging.tags_on_add` and `tagging.tag_vocabulary`, answered from the store's
    ``_tagsets`` collection (`MilvusStore.tag_vocabulary`): one reading of a vocabulary - its defaults, a
    damaged one ignored - for both stores. It stands in for the `Store` those functions take (duck-typed)."""

    def __init__(self, milvus: MilvusStore) -> None:
        self._milvus = milvus

    def get_meta(self, key: str) -> str | None:
        return self._milvus.tag_vocabulary(key.removeprefix(VOCABULARY_KEY))

    def has_meta_prefix(self, prefix: str) -> bool:
        return self._milvus.has_tag_vocabulary()


def make_tagger(encoder: Encoder, labels: list[str], templates: str | Sequence[str], top_k: int,
                cache_dir: str | os.PathLike[str], progress: bool = False) -> Tagger:
    """Vectors -> (labels, scores) of their top `top_k` labels (at most `MAX_TAGS`), scored the model's way:
    the one rule of `classify` and of the photos an add tags afterwards, so both give the same tags."""
    classes = encoder.class_embeddings(labels, templates, cache_dir=cache_dir, progress=progress)
    scoring = encoder.scoring()
    k = min(int(top_k), len(labels), MAX_TAGS)

    def tag(vectors: np.ndarray) -> list[tuple[list[str], list[float]]]:
        top, probs = scored_top_k(vectors, classes, scoring, k)
        return [([labels[j] for j in idx], [float(p) for p in prob]) for idx, prob in zip(top, probs, strict=True)]

    return tag


def space_tagger(milvus: MilvusStore, space: MilvusSpace, encoder: Encoder,
                 cache_dir: str | os.PathLike[str]) -> TagSource:
    """Where an add's batches get the tagger of the space's remembered vocabulary (what `classify` applied): asked
    by each batch under the store's write lock (`MilvusWriter.write`), it answers for the vocabulary the store names
    then, read again whenever the space's rows are in another collection than when it was last read (a milvus-lite
    `tag` run of another library object switched them, with their vocabulary, meanwhile). None: the space has no
    vocabulary, or this add loaded the image tower only (then the photos stay untagged until `tag`).

    Nothing is read before a batch has photos to tag, and a tagger's class embeddings are made on its first call: an
    add with nothing new to tag reads no cache and encodes no prompt (a `--library` folder without the cache would
    encode them each run)."""
    from clipforge.weights.towers import missing_towers

    if "text" in missing_towers(encoder.model):
        return lambda: None
    known: dict[str, Tagger | None] = {}  # the collection last read for -> its vocabulary's tagger

    def current() -> Tagger | None:
        collection = space.collection  # before the vocabulary: a switch in between is read again next time
        if collection not in known:
            known.clear()
            known[collection] = _vocabulary_tagger(milvus, space, encoder, cache_dir)
        return known[collection]

    return current


def _vocabulary_tagger(milvus: MilvusStore, space: MilvusSpace, encoder: Encoder,
                       cache_dir: str | os.PathLike[str]) -> Tagger | None:
    """The tagger of the vocabulary the store names for the space now (None: none), its class embeddings made on its
    first call."""
    vocabulary = tag_vocabulary(Vocabularies(milvus), space.fingerprint)
    if vocabulary is None:
        return None
    made: list[Tagger] = []

    def tag(vectors: np.ndarray) -> list[tuple[list[str], list[float]]]:
        if not made:
            made.append(make_tagger(encoder, parse_labels(vocabulary["labels"]), vocabulary_templates(vocabulary),
                                    int(vocabulary["top_k"]), cache_dir))
        return made[0](vectors)

    return tag
