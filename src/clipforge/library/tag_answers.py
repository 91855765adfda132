"""What a tag search answers about tags: the library's tag counts, and one sentence when it found nothing.

Both stores say it the same way: `Library` through these functions over its store, `MilvusLibrary` through
`no_tag_sentence` and `EMPTY_LIBRARY` over its own counts. The tagging itself (scoring, writing, the remembered
vocabulary) is `clipforge.library.tagging`.
"""

from __future__ import annotations

from collections.abc import Sequence

from clipforge.library.store import Store
from clipforge.library.tagging import count_noun, parse_labels, tag_vocabulary

__all__ = ["EMPTY_LIBRARY", "no_results_reason", "no_tag_match", "no_tag_sentence", "no_vectors_sentence",
           "tag_counts"]


def tag_counts(store: Store, model: str | None) -> dict[str, int]:
    """label -> photos whose top tag it is, most first; the vocabulary's labels no photo has show 0.

    The counts and the vocabulary are read in one snapshot (`Store.snapshot`): a `tag` run switching between the
    two reads listed the old labels' counts beside the new labels at 0."""
    if model is None:
        return {}
    with store.snapshot():
        counts = store.tag_counts(model)
        vocabulary = tag_vocabulary(store, model)
    for label in (vocabulary or {}).get("labels", []):
        counts.setdefault(label, 0)
    return counts


def _listing(counts: dict[str, int], limit: int = 20) -> str:
    shown = ", ".join(f"{label} ({n})" for label, n in list(counts.items())[:limit])
    return shown + (f", ... ({len(counts) - limit} more)" if len(counts) > limit else "")


EMPTY_LIBRARY = "the library has no photos yet: add some with `clipforge index add FOLDER` (or upload them)"
"""Why a search of a library without photos found nothing (both stores say it)."""


def no_tag_sentence(labels: Sequence[str], counts: dict[str, int]) -> str:
    """Why a search filtered on `labels` found nothing, naming the tags that do exist (`counts`: label -> photos)."""
    wanted = " or ".join(repr(label) for label in labels)
    if not counts:
        return (
            f"no photo has tag {wanted}: this library has no tags yet (tag it with "
            '`clipforge tag --labels "cat, dog, car"`)'
        )
    return f"no photo has tag {wanted}; tags: {_listing(counts)}"


def no_tag_match(store: Store, model: str | None, labels: Sequence[str]) -> str:
    """Why a search filtered on `labels` found nothing, naming the tags that do exist."""
    return no_tag_sentence(labels, tag_counts(store, model))


def no_vectors_sentence(held: int) -> str:
    """Why a search of a model space without vectors found nothing in a library holding `held` photos: a server of
    model M beside photos another writer indexed with another model said "no photo matched"."""
    return (f"none of the library's {count_noun(held, 'photo')} has a vector of the model this search uses: they "
            "were indexed with another model (`clipforge index stats` lists the model spaces); `clipforge index add "
            "--model M` embeds them with model M")


def no_results_reason(store: Store, model: str | None, filter_tags: str | Sequence[str] | None = None) -> str:
    """One sentence for an empty search result: an empty library, a model space without vectors, or no photo with
    those tags (read in one snapshot: a `tag` run switching between the reads said "no photo has tag 'cat'; tags:
    cat (5)")."""
    with store.snapshot():
        held = store.status_counts().get("ok")
        if not held:
            return EMPTY_LIBRARY
        if model and not store.embedding_count(model):  # photos, but none in this model's space
            return no_vectors_sentence(held)
        if filter_tags:
            labels = parse_labels(filter_tags)
            if not store.image_ids_with_tags(model or "", labels):
                return no_tag_match(store, model, labels)
    return "no photo matched"
