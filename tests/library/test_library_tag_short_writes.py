"""`clipforge tag` writes in short transactions, and a kill anywhere leaves one vocabulary's tags answering.

`tag` wrote a whole library's tags in one transaction: SQLite's write lock was held 11-23 s per 150,000 photos,
and a server's upload meanwhile got a 503. Now the new tags are written chunk by chunk under a key no reader asks
for, then the vocabulary and the key switch in one short transaction, and the old rows are deleted after. The
libraries here are rows written through the store's own transactions (random unit vectors, no image decoded);
the hooks are monkeypatches between chunks, never timings.
"""

from __future__ import annotations

import hashlib
import sqlite3

import numpy as np
import pytest

from clipforge.library import tagging
from clipforge.library.store import Store
from clipforge.library.tagging import tag_library, tag_new_images, tag_vocabulary
from clipforge.library.transaction import Transaction


def _photo(tx: Transaction, number: int, model: str, dim: int) -> int:
    """One 'ok' photo row with its own vector, as `index add` leaves it."""
    sha = hashlib.sha256(str(number).encode()).hexdigest()
    image_id = tx.upsert_image(f"/photos/p{number:03d}.jpg", sha, 1, 1, 8, 8, "ok", None)
    vector = np.random.default_rng(number).standard_normal(dim).astype(np.float32)
    tx.insert_embedding(sha, model, vector / np.linalg.norm(vector))
    return image_id


@pytest.fixture()
def store(tmp_path, tiny_encoder):
    """A library of 6 photos tagged 'cat, dog' (top 2)."""
    store = Store(tmp_path / "library.sqlite3")
    model, dim = tiny_encoder.fingerprint, int(tiny_encoder.embed_dim)
    with store.transaction() as tx:
        tx.ensure_model(model, "test-vit-tiny", dim)
        for number in range(6):
            _photo(tx, number, model, dim)
    tag_library(store, tiny_encoder, "cat, dog", "simple", top_k=2, progress=False)
    yield store
    store.close()


def _tags(store: Store, model: str) -> dict[int, list[tuple[str, float]]]:
    return store.tags_for_images(model, [r.id for r in store.list_images()])


def _rows(store: Store) -> int:
    """Every row of the tags table, whatever key it is under."""
    return int(store.conn().execute("SELECT COUNT(*) FROM tags").fetchone()[0])


def _answers(store: Store, model: str) -> tuple:
    """What every reader of the tags sees: tags, counts, filter hits, photos still untagged, the vocabulary."""
    return (
        _tags(store, model),
        store.tag_counts(model),
        sorted(store.image_ids_with_tags(model, ["cat", "dog", "car", "tree"], max_rank=1)),
        store.untagged_images(model),
        tag_vocabulary(store, model),
    )


def test_another_process_writes_between_tag_chunks_and_its_photo_is_tagged(store, tiny_encoder, monkeypatch):
    """An upload in another process, with a short busy timeout, commits while `tag` runs (after its first chunk
    of tags is written): the old `tag` scored everything first and then held the write lock for the whole write,
    so nothing could be written in between."""
    model, dim = tiny_encoder.fingerprint, int(tiny_encoder.embed_dim)
    real_insert, real_score = Transaction.insert_tags, tagging.scored_top_k
    inserts, uploaded = [], []

    def counted(self, *args, **kwargs):
        inserts.append(1)
        return real_insert(self, *args, **kwargs)

    def upload_between_chunks(*args, **kwargs):
        if inserts and not uploaded:  # tags were written: another process writes now, waiting 50 ms at most
            other = sqlite3.connect(store.path, timeout=0.05, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                uploaded.append(_photo(Transaction(other), 99, model, dim))
                other.execute("COMMIT")
            finally:
                other.close()
        return real_score(*args, **kwargs)

    monkeypatch.setattr(Transaction, "insert_tags", counted)
    monkeypatch.setattr(tagging, "scored_top_k", upload_between_chunks)
    report = tag_library(store, tiny_encoder, "car, tree", "simple", top_k=2, progress=False, chunk=2)
    assert len(uploaded) == 1, "no write got in while tag ran"
    assert report.images == 7 and sum(report.top1_counts.values()) == 7
    tags = _tags(store, model)
    assert sorted(tags) == sorted(r.id for r in store.list_images()) and uploaded[0] in tags
    assert all(len(t) == 2 and {label for label, _ in t} == {"car", "tree"} for t in tags.values())
    assert store.untagged_images(model) == [] and _rows(store) == 7 * 2  # the old tags were deleted


def test_tag_killed_between_chunks_leaves_the_old_tags_answering_and_a_rerun_repairs(
    store, tiny_encoder, monkeypatch
):
    model, dim = tiny_encoder.fingerprint, int(tiny_encoder.embed_dim)
    before = _answers(store, model)
    real, calls = tagging.scored_top_k, []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # two chunks of new tags are committed; kill -9 leaves them as an exception does
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tagging, "scored_top_k", killed)
    with pytest.raises(KeyboardInterrupt):
        tag_library(store, tiny_encoder, "car, tree", "simple", top_k=2, progress=False, chunk=2)
    monkeypatch.setattr(tagging, "scored_top_k", real)
    assert _rows(store) == 6 * 2 + 4 * 2  # the killed run's rows are there ...
    assert _answers(store, model) == before  # ... and no reader sees them
    with store.transaction() as tx:  # a photo added now is tagged with the library's (old) labels
        new = _photo(tx, 50, model, dim)
    assert tag_new_images(store, tiny_encoder) == 1
    assert {label for label, _ in _tags(store, model)[new]} == {"cat", "dog"}

    report = tag_library(store, tiny_encoder, "car, tree", "simple", top_k=2, progress=False, chunk=2)
    assert report.images == 7 and tag_vocabulary(store, model)["labels"] == ["car", "tree"]
    tags = _tags(store, model)
    assert len(tags) == 7 and all({label for label, _ in t} == {"car", "tree"} for t in tags.values())
    assert _rows(store) == 7 * 2  # nothing of the killed run nor of the old vocabulary is left
    again = tag_library(store, tiny_encoder, "car, tree", "simple", top_k=2, progress=False, chunk=2)
    assert _tags(store, model) == tags and again.top1_counts == report.top1_counts


def test_tag_killed_while_deleting_the_old_tags_answers_with_the_new_ones(store, tiny_encoder, monkeypatch):
    model = tiny_encoder.fingerprint

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Transaction, "delete_tag_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        tag_library(store, tiny_encoder, "car, tree", "simple", top_k=2, progress=False)
    monkeypatch.undo()
    assert _rows(store) == 6 * 2 * 2  # the old rows are still there, read by no one
    tags = _tags(store, model)
    assert len(tags) == 6 and all({label for label, _ in t} == {"car", "tree"} for t in tags.values())
    assert (
        sum(store.tag_counts(model).values()) == 6
        and store.image_ids_with_tags(model, ["cat", "dog"], 1) == []
    )
    tag_library(store, tiny_encoder, "car, tree", "simple", top_k=2, progress=False)
    assert _tags(store, model) == tags and _rows(store) == 6 * 2


def test_an_add_that_read_the_vocabulary_before_a_tag_switched_it_writes_no_old_labels(
    store, tiny_encoder, monkeypatch
):
    """An upload's `tag_new_images` read the vocabulary, then `tag` (another process) replaced it and tagged the
    new photo too; the upload then wrote its old labels over the new tags: one photo of 'car, tree' tagged 'cat'."""
    model, dim = tiny_encoder.fingerprint, int(tiny_encoder.embed_dim)
    with store.transaction() as tx:
        new = _photo(tx, 60, model, dim)
    real = tagging.scored_top_k

    def retagged_meanwhile(*args, **kwargs):
        monkeypatch.setattr(tagging, "scored_top_k", real)
        tag_library(store, tiny_encoder, "car, tree", "simple", top_k=2, progress=False)
        return real(*args, **kwargs)

    monkeypatch.setattr(tagging, "scored_top_k", retagged_meanwhile)
    tag_new_images(store, tiny_encoder)
    assert tag_vocabulary(store, model)["labels"] == ["car", "tree"]
    assert {label for label, _ in _tags(store, model)[new]} == {"car", "tree"}
    assert store.tag_counts(model).keys() <= {"car", "tree"}


def test_dropping_a_space_forgets_every_key_its_tags_were_written_under(store, tiny_encoder):
    """`index drop-space` deletes the vocabulary and the fingerprint's rows: tags written under a run's key are
    read only beside their vocabulary, so they cannot come back when the space is added again, and
    `Transaction.drop_tags` deletes them all."""
    model = tiny_encoder.fingerprint
    tag_library(store, tiny_encoder, "car, tree", "simple", top_k=2, progress=False)
    assert store.tag_rows(model) == model + "#2"
    with store.transaction() as tx:  # what `Library.drop_space` deletes
        tx.execute("DELETE FROM tags WHERE model = ?", (model,))
        tx.execute("DELETE FROM meta WHERE key = ?", (tagging.VOCABULARY_KEY + model,))
    assert (
        _tags(store, model) == {} and store.tag_counts(model) == {} and len(store.untagged_images(model)) == 6
    )
    with store.transaction() as tx:
        tx.drop_tags(model)
    assert _rows(store) == 0 and store.get_meta("tag_rows:" + model) is None
