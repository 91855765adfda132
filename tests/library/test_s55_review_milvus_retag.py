"""Review of `clipforge tag` on milvus-lite moving a space's rows to a new collection (s55, `milvus_retag`).

What the move broke, each shown here on real milvus-lite stores:

- A second `MilvusLibrary` of the same store in the process (a script's second handle, a search object beside the
  one that tags) kept the collection it had opened: after the other one's `tag` dropped it, every search, add
  and image read of the second one was "milvus-lite store ... is damaged: ... collection 'photos_m...' does not
  exist; restore the folder from a backup" - a false claim of damage with harmful advice.
- Its writes made while the `tag` run copied the rows went into the collection being copied, which the switch
  then dropped: photos it added were lost, photos it removed came back.
- The run read every row of the space with its vector in one query (and the server's in-place rewrite did the
  same): for 100,000 photos of a 512-wide model, gigabytes of Python floats at once. Now a chunk at a time.
"""

from __future__ import annotations

import threading
from itertools import count
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.library import milvus_classify  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from clipforge.library.milvus_store import MilvusSpace  # noqa: E402

OLD, NEW = ["red", "green", "blue"], ["cat", "dog"]


def _ok_paths(library: MilvusLibrary) -> set[str]:
    return {r["path"] for r in library.space.iter_rows('status == "ok"', ["path"])}


def test_a_second_library_of_the_store_reads_and_writes_the_space_after_a_retag(
    tmp_path, tiny_encoder, images_factory
) -> None:
    photos = images_factory(tmp_path / "photos", 4)
    more = images_factory(tmp_path / "more", 2, seed=5, prefix="more")
    store = f"milvus-lite:{tmp_path}/m.db#photos"
    with MilvusLibrary(store, tmp_path / "a", tiny_encoder) as a, MilvusLibrary(store, tmp_path / "b",
                                                                               tiny_encoder) as b:
        a.add(tmp_path / "photos", workers=0, progress=False)
        assert len(b.search("a photo", top_k=10)) == 4  # b has opened the space's collection
        a.classify(OLD, "simple", top_k=2, progress=False)
        hits = b.search("a photo", top_k=10, filter_tags=OLD)  # was: "... is damaged: ... does not exist"
        assert len(hits) == 4 and all(h.tags and {t for t, _ in h.tags} <= set(OLD) for h in hits)
        assert b.get_image(hits[0].id).path == hits[0].path
        b.add(tmp_path / "more", workers=0, progress=False)
        assert b.last_tagged == 2  # tagged with the vocabulary a's run switched to
        assert len(a.search("a photo", top_k=10, filter_tags=OLD)) == 6
        a.classify(NEW, "simple", top_k=2, progress=False)  # a second move: b follows again
        assert b.remove(str(photos[0])) == 1
        assert _ok_paths(a) == {str(p) for p in [*photos[1:], *more]}
        assert {label for label, _ in b.tags(b.get_path(str(more[0])).id)} <= set(NEW)
        # A space dropped and filled again starts in its first collection, not the one it last moved to.
        b.drop_space(a.space.fingerprint)
    with MilvusLibrary(store, tmp_path / "c", tiny_encoder, new_space=True) as c:
        c.add(tmp_path / "more", workers=0, progress=False)
        assert _ok_paths(c) == {str(p) for p in more}
        assert c.space.collection == c.milvus.space(c.space.fingerprint).collection


def test_writes_of_another_library_while_tag_copies_the_rows_are_kept(
    tmp_path, tiny_encoder, images_factory, monkeypatch
) -> None:
    """b removes a photo and adds two while a's `tag` run copies the rows (started from a's tagger, in another
    thread, as a script or a second handle would): both must show in the switched-to collection. b's first write
    is reached for certain (an event), then given a second to finish there, or wait for the run (never timed)."""
    photos = images_factory(tmp_path / "photos", 4)
    more = images_factory(tmp_path / "more", 2, seed=5, prefix="more")
    store = f"milvus-lite:{tmp_path}/m.db#photos"
    with MilvusLibrary(store, tmp_path / "a", tiny_encoder) as a, MilvusLibrary(store, tmp_path / "b",
                                                                               tiny_encoder) as b:
        a.add(tmp_path / "photos", workers=0, progress=False)
        assert len(b.search("a photo", top_k=10)) == 4
        errors: list[BaseException] = []

        def b_writes() -> None:
            try:
                b.remove(str(photos[0]))
                b.add(tmp_path / "more", workers=0, progress=False)
            except BaseException as exc:  # said by the test, not lost in the thread
                errors.append(exc)

        writer = threading.Thread(target=b_writes)
        writing = threading.Event()
        for name in ("upsert", "delete_paths"):
            real = getattr(MilvusSpace, name)

            def noted(self, *args, _real=real, **kwargs):
                if threading.current_thread() is writer:
                    writing.set()
                return _real(self, *args, **kwargs)

            monkeypatch.setattr(MilvusSpace, name, noted)
        real_make = milvus_classify.make_tagger

        def make_tagger(*args, **kwargs):
            tag = real_make(*args, **kwargs)

            def tag_while_b_writes(vectors):
                if not writer.is_alive() and not writing.is_set():  # the copy has begun: b writes now
                    writer.start()
                    assert writing.wait(60)
                    writer.join(1.0)  # done there, or waiting for this run to switch
                return tag(vectors)

            return tag_while_b_writes

        monkeypatch.setattr(milvus_classify, "make_tagger", make_tagger)
        a.classify(OLD, "simple", top_k=2, progress=False)
        writer.join(120)
        assert not writer.is_alive() and errors == []
        monkeypatch.undo()
        assert _ok_paths(a) == {str(p) for p in [*photos[1:], *more]}  # was: the two added lost, p0 back
        assert len(a.search("a photo", top_k=10)) == 5


def test_tag_reads_the_rows_a_chunk_at_a_time(tmp_path, tiny_encoder, monkeypatch) -> None:
    """No query of the run returns more than one chunk (1,024) of rows with their vectors: 1,100 photos here."""
    from pymilvus import MilvusClient

    from clipforge.library.milvus_writer import row_from_record
    from clipforge.library.store import ImageRecord

    photos = 1100
    store = f"milvus-lite:{tmp_path}/m.db#photos"
    with MilvusLibrary(store, tmp_path / "lib", tiny_encoder) as library:
        dim = library.encoder.embed_dim
        rng = np.random.default_rng(0)
        rows = []
        for i in range(photos):
            vector = rng.standard_normal(dim).astype(np.float32)
            record = ImageRecord(i + 1, f"/photos/p{i:04d}.jpg", f"{i:064x}", 1, 1, 8, 8, 0.0, "ok", None)
            rows.append(row_from_record(record, vector / np.linalg.norm(vector), dim))
        library.space.upsert(rows)
        del rows
        returned: list[int] = []
        real = MilvusClient.query

        def query(self, collection, *args, **kwargs):
            out = real(self, collection, *args, **kwargs)
            if "vector" in (kwargs.get("output_fields") or []):
                returned.append(len(out))
            return out

        monkeypatch.setattr(MilvusClient, "query", query)
        report = library.classify(NEW, "simple", top_k=2, progress=False)
        monkeypatch.undo()
        assert report.images == photos and sum(report.top1_counts.values()) == photos
        assert returned and max(returned) <= 1024 and sum(returned) == photos, returned  # was: [1100]
        assert len(library.search("a photo", top_k=photos, filter_tags=NEW)) == photos


def test_a_servers_rows_are_rewritten_a_chunk_at_a_time() -> None:
    """On a Milvus server `tag` rewrites the rows in place; `row_chunks` hands them over as the server's pages
    come, never reading on before a chunk is written (here a stand-in space counting the rows read)."""
    from clipforge.library.milvus_retag import CHUNK, row_chunks

    read = count()

    def iter_rows(filter, fields):
        assert filter == 'status == "ok"' and "vector" in fields
        for i in range(CHUNK * 2 + 5):
            next(read)
            yield {"path": f"/p/{i}", "status": "ok", "vector": [1.0, 0.0]}

    space = SimpleNamespace(store=SimpleNamespace(spec=SimpleNamespace(kind="milvus")), iter_rows=iter_rows)
    sizes = []
    for chunk in row_chunks(space, 'status == "ok"'):
        sizes.append(len(chunk))
        assert next(read) == sum(sizes)  # only this chunk's rows were read so far
        read = count(sum(sizes))
    assert sizes == [CHUNK, CHUNK, 5]
