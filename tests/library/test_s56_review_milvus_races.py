"""Review of s56's milvus-lite add/`tag` races: a moved file relinked into another model space while that space's
`tag` run switches it.

An `index add` that finds a stored file under a new name moves its row in every model space (`MilvusWriter._relink`,
`others`). That move reads the other space's row (vector, tags) and writes it back under the new name. Before s56 the
read took no lock: a `tag` run of the other space (another library object of the store, another thread) could copy
and switch the rows between the read and the write, and the row came back under its new name with the labels of the
vocabulary the switch replaced. Now the whole batch, relinks included, is written under the store's write lock, so
the run copies the moved row (and tags it anew) or moves first.

The race is made deterministic with events (never timed), as in `test_s56_milvus_tag_races`: the add is held right
after reading the other space's row, while the other space's `tag` either runs to its end or is seen waiting for the
add's lock.
"""

from __future__ import annotations

import copy
import threading

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.library import resolve_encoder  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from clipforge.library.milvus_store import MilvusSpace, MilvusStore  # noqa: E402
from clipforge.library.milvus_tags import Vocabularies  # noqa: E402
from clipforge.library.tagging import tag_vocabulary  # noqa: E402

OLD, NEW = ["red", "green", "blue"], ["cat", "dog"]
WAIT = 120  # seconds an event may take before the test says which one never came (never reached when it works)


@pytest.fixture(scope="module")
def second_encoder(tiny_encoder):
    """The tiny model with one weight nudged: another fingerprint, so a second model space of the store."""
    import torch

    model = copy.deepcopy(tiny_encoder.model)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    encoder = resolve_encoder((model, tiny_encoder.preprocess))
    assert encoder.fingerprint != tiny_encoder.fingerprint
    return encoder


class _NotedLock:
    """The store's write lock, noting (`blocked`) when the `tag` thread has to wait for it."""

    def __init__(self, lock: object, tagger: list[threading.Thread], *blocked: threading.Event) -> None:
        self._lock, self._tagger, self._blocked = lock, tagger, blocked

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):  # type: ignore[attr-defined]
            if threading.current_thread() in self._tagger:
                for event in self._blocked:
                    event.set()
            self._lock.acquire()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self._lock.release()  # type: ignore[attr-defined]


def test_a_file_moved_while_the_other_space_is_tagged_keeps_that_space_s_new_labels(
    tmp_path, tiny_encoder, second_encoder, images_factory, monkeypatch
) -> None:
    """Both spaces hold three photos; B's are tagged OLD. A photo is renamed and `a` adds the new name (a relink in
    A and in B) while `c` tags B with NEW; the add is held right after reading B's row of the photo. Afterwards B
    names NEW, and the photo, under its new name only, carries NEW labels there (was: OLD ones, until the next
    `tag`)."""
    photos = images_factory(tmp_path / "photos", 3)
    store = f"milvus-lite:{tmp_path}/m.db#photos"
    with MilvusLibrary(store, tmp_path / "a", tiny_encoder) as a, MilvusLibrary(
        store, tmp_path / "c", second_encoder, new_space=True
    ) as c:
        a.add(tmp_path / "photos", workers=0, progress=False)
        c.add(tmp_path / "photos", workers=0, progress=False)
        c.classify(OLD, "simple", top_k=2, progress=False)
        b_space = c.space.fingerprint
        ids = (a.get_path(str(photos[0])).id, c.get_path(str(photos[0])).id)
        moved = photos[0].with_name("moved_" + photos[0].name)
        photos[0].rename(moved)

        errors: list[BaseException] = []
        held, go, settled, waited = threading.Event(), threading.Event(), threading.Event(), threading.Event()
        adder: list[threading.Thread] = []
        tagger: list[threading.Thread] = []
        real_rows = MilvusSpace.rows_for_paths

        def rows_for_paths(self, paths, fields=None):  # B's row read by the relink, then held
            rows = real_rows(self, paths) if fields is None else real_rows(self, paths, fields)
            if (threading.current_thread() in adder and self.fingerprint == b_space and str(moved) in paths
                    and not held.is_set()):
                held.set()
                assert go.wait(WAIT), "the test never let the add go on"
            return rows

        monkeypatch.setattr(MilvusSpace, "rows_for_paths", rows_for_paths)
        real_writes = MilvusStore.writes
        monkeypatch.setattr(MilvusStore, "writes", lambda self: _NotedLock(real_writes(self), tagger, settled, waited))

        def run(work) -> None:
            try:
                work()
            except BaseException as exc:  # said by the test, not lost in the thread
                errors.append(exc)
            finally:
                if threading.current_thread() in tagger:
                    settled.set()

        adder.append(threading.Thread(target=run, args=(lambda: a.add([moved], workers=0, progress=False),)))
        tagger.append(threading.Thread(target=run, args=(lambda: c.classify(NEW, "simple", top_k=2,
                                                                            progress=False),)))
        adder[0].start()
        assert held.wait(WAIT) and not errors, errors
        tagger[0].start()
        assert settled.wait(WAIT), "the tag run neither ended nor waited for the add"
        go.set()
        for thread in (*adder, *tagger):
            thread.join(WAIT)
            assert not thread.is_alive()
        assert errors == []
        monkeypatch.undo()

        vocabulary = tag_vocabulary(Vocabularies(c.milvus), b_space) or {}
        assert vocabulary.get("labels") == NEW
        rows = {r["path"]: r["tags"] for r in c.space.iter_rows('status == "ok"', ["path", "tags"])}
        assert sorted(rows) == sorted(str(p) for p in [moved, *photos[1:]])
        # was: {str(moved): two of OLD}: the row read before the switch, written back after it
        assert {path: tags for path, tags in rows.items() if not (len(tags) == 2 and set(tags) <= set(NEW))} == {}
        assert len(c.search("a photo", top_k=10, filter_tags=NEW)) == 3
        assert c.search("a photo", top_k=10, filter_tags=OLD) == []
        assert sorted(r["path"] for r in a.space.iter_rows('status == "ok"', ["path"])) == sorted(rows)
        # relinked in both spaces (ids kept), not added anew
        assert (a.get_path(str(moved)).id, c.get_path(str(moved)).id) == ids
        assert a.get_path(str(photos[0])) is None and c.get_path(str(photos[0])) is None
        # the add held the lock for its batch (relink included): the run waited for it, then copied the moved row
        assert waited.is_set()
