"""`clipforge tag` on milvus-lite racing an `index add`, and a first `tag` killed before its switch (s56).

A lite `tag` writes the space's rows, newly tagged, into a fresh collection and switches rows and vocabulary together
(`milvus_retag`). Two holes were left:

- An add of another library object of the same store, already running when the `tag` switched, stored its new photos
  with the labels of the vocabulary it had read when it began (and a re-read photo with the tags its row had before
  the switch): the old labels, in a store naming the new ones, until the next `tag`. Each add's batch now reads the
  space's tagger and rows under the store's write lock, so it is written wholly before a switch or wholly after it.
- A first `tag` killed between recording its vocabulary (for the collection it was filling) and the switch left that
  record behind, and every later add loaded the text tower for a vocabulary no photo has. Only the records of the
  collections the registry names count now.

The races are made deterministic with events (never timed): the add is held between reading what it tags with and
writing, while the `tag` either runs to its end or is seen waiting for the add's lock.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.library import milvus_library, milvus_tags  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from clipforge.library.milvus_store import MilvusStore  # noqa: E402
from clipforge.library.milvus_tags import Vocabularies  # noqa: E402
from clipforge.library.milvus_writer import MilvusWriter  # noqa: E402
from clipforge.library.tagging import tag_vocabulary  # noqa: E402

OLD, NEW = ["red", "green", "blue"], ["cat", "dog"]
WAIT = 120  # seconds an event may take before the test says which one never came (never reached when it works)


def _tags(library: MilvusLibrary) -> dict[str, set[str]]:
    return {r["path"]: set(r["tags"]) for r in library.space.iter_rows('status == "ok"', ["path", "tags"])}


def _vocabulary(library: MilvusLibrary) -> list[str]:
    return (tag_vocabulary(Vocabularies(library.milvus), library.space.fingerprint) or {}).get("labels", [])


def _records(library: MilvusLibrary) -> list[str]:
    """The keys of every vocabulary record in the store."""
    milvus = library.milvus
    return sorted(r["fingerprint"] for r in milvus.call(milvus.client.query, milvus.tagsets,
                                                         filter='fingerprint != ""', output_fields=["fingerprint"]))


def _collections(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "collections").iterdir())


class _NotedLock:
    """The store's write lock, noting (`blocked`) when the `tag` thread has to wait for it."""

    def __init__(self, lock: object, tagger: list[threading.Thread], *blocked: threading.Event) -> None:
        self._lock, self._tagger, self._blocked = lock, tagger, blocked

    def __enter__(self) -> None:
        if not hasattr(self._lock, "acquire"):  # a server's (no lock)
            return
        if not self._lock.acquire(blocking=False):
            if threading.current_thread() in self._tagger:
                for event in self._blocked:
                    event.set()
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        if hasattr(self._lock, "release"):
            self._lock.release()


@pytest.mark.parametrize("pause", ["before_its_batch", "after_tagging_its_batch"])
def test_an_add_running_while_tag_switches_stores_the_new_labels(
    tmp_path, tiny_encoder, images_factory, monkeypatch, pause
) -> None:
    """b adds two new photos and re-reads a touched one (same bytes: it keeps its row's tags) while a's `tag` switches
    the space from OLD to NEW. b is held either before its batch is written (it read the vocabulary when it began)
    or after its new photos were tagged and the touched row read, before the upsert; a's run goes on until it ends
    or is seen waiting for b's lock. Afterwards every photo carries NEW labels, the vocabulary the store names."""
    photos = images_factory(tmp_path / "photos", 4)
    more = images_factory(tmp_path / "more", 2, seed=5, prefix="more")
    store = f"milvus-lite:{tmp_path}/m.db#photos"
    with MilvusLibrary(store, tmp_path / "a", tiny_encoder) as a, MilvusLibrary(store, tmp_path / "b",
                                                                               tiny_encoder) as b:
        a.add(tmp_path / "photos", workers=0, progress=False)
        a.classify(OLD, "simple", top_k=2, progress=False)
        assert all(t and t <= set(OLD) for t in _tags(b).values())
        touched = photos[1]
        stat = touched.stat()
        os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

        errors: list[BaseException] = []
        held, go, settled, waited = threading.Event(), threading.Event(), threading.Event(), threading.Event()
        adder: list[threading.Thread] = []
        tagger: list[threading.Thread] = []

        def hold() -> None:
            if threading.current_thread() in adder and not held.is_set():
                held.set()
                assert go.wait(WAIT), "the test never let the add go on"

        if pause == "before_its_batch":
            real_write = MilvusWriter.write

            def write(self, batch):
                hold()
                return real_write(self, batch)

            monkeypatch.setattr(MilvusWriter, "write", write)
        else:  # the tagger of the add's photos (not of a's `tag` run, which `milvus_classify` makes)
            real_make = milvus_tags.make_tagger

            def make_tagger(*args, **kwargs):
                tag = real_make(*args, **kwargs)

                def tagged_then_held(vectors):
                    out = tag(vectors)
                    hold()
                    return out

                return tagged_then_held

            monkeypatch.setattr(milvus_tags, "make_tagger", make_tagger)
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

        adder.append(threading.Thread(target=run, args=(lambda: b.add([tmp_path / "more", touched], workers=0,
                                                                      progress=False),)))
        tagger.append(threading.Thread(target=run, args=(lambda: a.classify(NEW, "simple", top_k=2,
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

        assert b.last_tagged == 2
        for library in (a, b):
            assert _vocabulary(library) == NEW
            tags = _tags(library)
            assert sorted(tags) == sorted(str(p) for p in [*photos, *more])
            # was: the two new photos (and, held after tagging, the touched one too) with OLD labels
            assert {path: t for path, t in tags.items() if not (t and t <= set(NEW))} == {}
            counts = library.tag_counts()
            assert set(counts) == set(NEW) and sum(counts.values()) == 6
            assert len(library.search("a photo", top_k=10, filter_tags=NEW)) == 6
            assert library.search("a photo", top_k=10, filter_tags=OLD) == []
        # held before its batch, the add holds no lock: the run ends; held after tagging, it holds the lock for its
        # batch, and the run waits for it (then copies the batch and tags it anew)
        assert waited.is_set() == (pause == "after_tagging_its_batch")


def test_a_first_tag_killed_before_its_switch_leaves_adds_on_the_image_tower_and_a_rerun_tags(
    tmp_path, tiny_encoder, images_factory, monkeypatch
) -> None:
    """The first `tag` stopped at its switch (an exception where a kill would land: its vocabulary recorded for the
    collection it filled, the registry still naming the first one). An `index add` (the image tower asked for, the
    text one only if it tags) then asks for no text tower and tags nothing; a re-run of `tag` tags everything and
    leaves one record; later adds tag with it."""
    images_factory(tmp_path / "photos", 3)
    more = images_factory(tmp_path / "more", 2, seed=5, prefix="more")
    last = images_factory(tmp_path / "last", 1, seed=9, prefix="last")
    store = f"milvus-lite:{tmp_path}/m.db#photos"

    def stopped(self, fingerprint, collection):
        raise KeyboardInterrupt

    with MilvusLibrary(store, tmp_path / "lib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        base, fingerprint = library.space.collection, library.space.fingerprint
        monkeypatch.setattr(MilvusStore, "switch_collection", stopped)
        with pytest.raises(KeyboardInterrupt):
            library.classify(OLD, "simple", top_k=2, progress=False)
        monkeypatch.undo()
        assert library.space.collection == base
        assert _records(library) == [f"{fingerprint}#t1"]  # the record of a collection no reader reads
        assert _collections(tmp_path / "m.db") == sorted([base, base + "_t1", "photos_spaces", "photos_tagsets"])
        assert library.milvus.has_tag_vocabulary() is False  # was: True
        assert _vocabulary(library) == [] and library.tag_counts() == {}

    asked: list[object] = []  # the towers each library asks the model loader for (a checkpoint file reads only those)
    real_resolve = milvus_library.resolve_encoder
    monkeypatch.setattr(milvus_library, "resolve_encoder",
                        lambda *args, **kwargs: asked.append(kwargs.get("towers")) or real_resolve(*args, **kwargs))
    with MilvusLibrary(store, tmp_path / "lib", "test-vit-tiny", towers=("image",)) as adder:
        report = adder.add(tmp_path / "more", workers=0, progress=False)
        assert asked == [("image",)]  # was: [None], the text tower loaded for a vocabulary no photo has
        assert report.added == 2 and adder.last_tagged == 0
        assert _tags(adder) == {str(p): set() for p in [*sorted((tmp_path / "photos").iterdir()), *more]}

    with MilvusLibrary(store, tmp_path / "lib", tiny_encoder) as library:
        report = library.classify(NEW, "simple", top_k=2, progress=False)
        assert report.images == 5 and library.space.collection == base + "_t1"
        assert _vocabulary(library) == NEW and _records(library) == [f"{fingerprint}#t1"]
        assert all(t and t <= set(NEW) for t in _tags(library).values()) and len(_tags(library)) == 5
        assert _collections(tmp_path / "m.db") == sorted([base + "_t1", "photos_spaces", "photos_tagsets"])
        assert library.milvus.has_tag_vocabulary() is True

    with MilvusLibrary(store, tmp_path / "lib", "test-vit-tiny", towers=("image",)) as adder:
        adder.add(last[0], workers=0, progress=False)
        assert asked[-1] is None  # it tags: both towers
        assert adder.last_tagged == 1 and _tags(adder)[str(last[0])] <= set(NEW)
