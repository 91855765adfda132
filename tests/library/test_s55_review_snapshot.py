"""Review of `Store.snapshot` (s55): a library read by a user who may not write it, while its owner re-tags it.

Such a user's connection is opened anew whenever the owner changes the file (`StoreConnection.conn`, so that a
server run without write access sees the owner's additions). Inside a snapshot that reopen closed the connection
the snapshot had begun its read transaction on: the next read answered from the new state (the old labels'
counts beside the new vocabulary, the mix the snapshot exists to prevent), and the snapshot's end then asked the
closed connection whether it was still in a transaction - `sqlite3.ProgrammingError: Cannot operate on a closed
database.` out of `tag --list` and the empty-search sentence. The switch is a real `tag_library` run on a
writable `Store` of the same file (as the owner's process would), started from a hook between two reads.
"""

from __future__ import annotations

import pytest

from clipforge.library.store import Store
from clipforge.library.tag_answers import no_results_reason, tag_counts
from clipforge.library.tagging import tag_library

PHOTOS = 40
OLD, NEW = ["cat", "dog"], ["car", "tree"]


@pytest.fixture()
def owner(tmp_path, tagged_vector_store):
    """The owner's writable store: `PHOTOS` photos (random unit vectors) tagged OLD, top 2, kept open (its
    write-ahead log holds the writes, as while the owner's process runs)."""
    store = tagged_vector_store(tmp_path / "library.sqlite3", PHOTOS, OLD)
    yield store
    store.close()


@pytest.fixture()
def reader(owner):
    """The same library as a user without write access reads it (`Store._open` decides this for such a user)."""
    store = Store(owner.path, create=False)
    store.close()
    store.read_only = True
    yield store
    store.close()


def test_tag_list_of_a_read_only_library_is_one_vocabulary_while_its_owner_retags(
    owner, reader, tiny_encoder, monkeypatch
):
    model = tiny_encoder.fingerprint
    real = reader.tag_counts

    def counted_then_switched(name):
        counts = real(name)
        tag_library(owner, tiny_encoder, NEW, "simple", top_k=2, progress=False)
        return counts

    monkeypatch.setattr(reader, "tag_counts", counted_then_switched)
    counts = tag_counts(reader, model)  # raised ProgrammingError: Cannot operate on a closed database.
    monkeypatch.undo()
    assert set(counts) == set(OLD) and sum(counts.values()) == PHOTOS  # never "car (0), tree (0)" beside them
    assert not reader.conn().in_transaction
    after = tag_counts(reader, model)  # the next answer reads the owner's switch
    assert set(after) == set(NEW) and sum(after.values()) == PHOTOS


def test_the_empty_search_sentence_of_a_read_only_library_names_one_vocabulary(
    owner, reader, tiny_encoder, monkeypatch
):
    model = tiny_encoder.fingerprint
    real = reader.image_ids_with_tags

    def matched_then_switched(*args, **kwargs):
        found = real(*args, **kwargs)
        tag_library(owner, tiny_encoder, NEW, "simple", top_k=2, progress=False)
        return found

    monkeypatch.setattr(reader, "image_ids_with_tags", matched_then_switched)
    reason = no_results_reason(reader, model, "car")
    monkeypatch.undo()
    assert reason.startswith("no photo has tag 'car'; tags: "), reason
    listed = reason.removeprefix("no photo has tag 'car'; tags: ")
    assert {item.split(" (")[0] for item in listed.split(", ")} == set(OLD), reason


def test_an_error_inside_a_snapshot_ends_its_read_transaction(owner, tiny_encoder):
    """A failure inside the block leaves no read transaction open (it would pin the snapshot, and the next
    answer of this thread would read the library as it was then)."""
    with pytest.raises(KeyError), owner.snapshot() as conn:
        assert conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == PHOTOS
        raise KeyError("stop")
    assert not owner.conn().in_transaction
    other = Store(owner.path)
    with other.transaction() as tx:
        tx.execute("DELETE FROM images WHERE path = '/photos/p0000.jpg'")
    other.close()
    assert owner.status_counts()["ok"] == PHOTOS - 1
