"""A tag answer read in several statements is one snapshot: a `tag` run switching the vocabulary meanwhile (through
another connection, as another process would) never mixes two vocabularies in one answer.

`tags_for_images` reads more than 900 ids in several statements (SQLite's bound-parameter limit); each statement
named the current tags anew, so a switch between two of them answered the first 900 photos with the old labels and
the rest with the new ones (a CLI search with --top-k 1000 showing tags). `tag --list` read the counts and the
vocabulary in two statements, and the sentence for an empty tag search read three. Each is now one read
transaction. The switch is a real `tag_library` run on a second `Store` (its own connection and transactions),
started from a hook between the reader's statements, never timed.
"""

from __future__ import annotations

import pytest

from clipforge.library import store_tags as store_module  # the tag reads (a part of `Store`)
from clipforge.library import transaction
from clipforge.library.store import Store
from clipforge.library.tag_answers import no_results_reason, tag_counts
from clipforge.library.tagging import tag_library

CHUNK = getattr(transaction, "CHUNK", 900)  # ids per statement (900 before it was named)
PHOTOS = CHUNK + 100  # two statements' worth of ids
OLD, NEW = ["cat", "dog"], ["car", "tree"]


@pytest.fixture()
def store(tmp_path, tagged_vector_store):
    """A library of `PHOTOS` photos (random unit vectors, no image decoded) tagged OLD, top 2."""
    store = tagged_vector_store(tmp_path / "library.sqlite3", PHOTOS, OLD)
    yield store
    store.close()


def _switch(store: Store, encoder) -> None:
    """What another process's `clipforge tag --labels "car, tree"` does: new rows, the switch, the old rows purged."""
    other = Store(store.path)
    try:
        tag_library(other, encoder, NEW, "simple", top_k=2, progress=False)
    finally:
        other.close()


def _labels(tags: dict[int, list[tuple[str, float]]]) -> set[str]:
    return {label for photo in tags.values() for label, _ in photo}


def test_tags_of_more_photos_than_one_statement_holds_are_one_vocabularys(store, tiny_encoder, monkeypatch):
    model = tiny_encoder.fingerprint
    ids = [r.id for r in store.list_images(limit=PHOTOS)]
    real, switched = store_module.chunks, []

    def switch_between_statements(items, size=CHUNK):
        for number, part in enumerate(real(items, size)):
            if number == 1:  # the first statement has been read
                _switch(store, tiny_encoder)
                switched.append(1)
            yield part

    monkeypatch.setattr(store_module, "chunks", switch_between_statements)
    tags = store.tags_for_images(model, ids)
    monkeypatch.undo()
    assert switched == [1]
    assert len(tags) == PHOTOS and all(len(t) == 2 for t in tags.values())
    assert _labels(tags) == set(OLD)  # as the library was when the answer began: no photo with the new labels
    assert not store.conn().in_transaction  # the read transaction ended with the answer
    after = store.tags_for_images(model, ids)
    assert len(after) == PHOTOS and _labels(after) == set(NEW)


def test_tag_list_reads_counts_and_vocabulary_in_one_snapshot(store, tiny_encoder, monkeypatch):
    model = tiny_encoder.fingerprint
    real = store.tag_counts

    def counted_then_switched(name):
        counts = real(name)
        _switch(store, tiny_encoder)
        return counts

    monkeypatch.setattr(store, "tag_counts", counted_then_switched)
    counts = tag_counts(store, model)
    monkeypatch.undo()
    assert set(counts) <= set(OLD) and sum(counts.values()) == PHOTOS  # no "car (0), tree (0)" beside them
    after = tag_counts(store, model)
    assert set(after) <= set(NEW) and sum(after.values()) == PHOTOS


def test_why_a_tag_search_found_nothing_is_said_of_one_vocabulary(store, tiny_encoder, monkeypatch):
    model = tiny_encoder.fingerprint
    real = store.image_ids_with_tags

    def matched_then_switched(*args, **kwargs):
        found = real(*args, **kwargs)
        _switch(store, tiny_encoder)
        return found

    monkeypatch.setattr(store, "image_ids_with_tags", matched_then_switched)
    reason = no_results_reason(store, model, "car")
    monkeypatch.undo()
    counts = store.conn().execute(  # the old rows were purged by the switch: OLD's counts as they were
        "SELECT COUNT(*) FROM tags WHERE label IN ('cat', 'dog')"
    ).fetchone()[0]
    assert counts == 0 and reason.startswith("no photo has tag 'car'; tags: ")
    listed = reason.removeprefix("no photo has tag 'car'; tags: ")
    assert {item.split(" (")[0] for item in listed.split(", ")} == set(OLD), reason  # never "car (n)"


def test_a_snapshot_inside_a_write_reads_that_write(store, tiny_encoder):
    """Inside a transaction of this thread, the tags it wrote and has not committed are what a long read sees."""
    model = tiny_encoder.fingerprint
    ids = [r.id for r in store.list_images(limit=PHOTOS)]
    with store.transaction() as tx:
        tx.replace_tags(model, [(ids[-1], "zebra", 0.9, 0)])
        tags = store.tags_for_images(model, ids)
        assert tags[ids[-1]] == [("zebra", pytest.approx(0.9))] and len(tags) == PHOTOS
        assert store.conn().in_transaction  # still the write's transaction, not ended by the read
    assert store.tags_for_images(model, [ids[-1]]) == {ids[-1]: [("zebra", pytest.approx(0.9))]}
