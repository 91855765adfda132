"""Audit 65 of the Milvus store, moving a photo library from the embedded store (milvus-lite here).

1. A released collection (an admin's `release_collection`, or a milvus-lite server restarted: its collections come
   back released) failed every search and page of a running `serve` until another process opened the store; the
   store now loads it once and makes the request again.
2. Of identical photos, Milvus showed the one whose path sorts first, gone from disk or not; it now shows what the
   embedded store shows: the oldest record (the embedded store's lowest id; a Milvus row's `added_at`) whose file
   is still there.
3. Tags with equal counts were listed in the order rows were met (`index stats`, `tag --list`, the `tag` summary)
   and the model spaces default first; both now come in the embedded store's order (count then label; creation).
4. A collection name with a trailing newline passed the "letters, digits and _" check (`$` matches before it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.library import Library  # noqa: E402
from clipforge.library.backend import parse_store  # noqa: E402
from clipforge.library.encoder import resolve_encoder  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from clipforge.library.milvus_store import MilvusStore, StoreConnectionError, StoreUnavailableError  # noqa: E402
from clipforge.library.milvus_writer import row_from_record  # noqa: E402
from clipforge.library.store import ImageRecord  # noqa: E402
from tests.library.conftest import write_images  # noqa: E402

LABELS = ["fish", "bird", "cat", "car"]


def _open(kind: str, root: Path, encoder, **kwargs: object) -> Library | MilvusLibrary:
    if kind == "embedded":
        return Library(root / "lib", encoder, **kwargs)
    return MilvusLibrary(f"milvus-lite:{root}/m.db", root / "mlib", encoder, **kwargs)


def _pair(root: Path, encoder) -> tuple[Library, MilvusLibrary]:
    return _open("embedded", root, encoder), _open("milvus", root, encoder)


def _shown(hits) -> list[tuple[str, list[str], list[str], list[tuple[str, float]]]]:
    return [(h.path, h.duplicates, h.same_file, [(t, round(s, 4)) for t, s in h.tags]) for h in hits]


# -- 1. a released collection -----------------------------------------------------------------------------------
def test_a_released_collection_is_loaded_again_and_the_request_served(tmp_path, tiny_encoder) -> None:
    write_images(tmp_path / "photos", 3)
    milvus = MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", tiny_encoder)
    try:
        milvus.add(tmp_path / "photos", workers=0, progress=False)
        before = [(h.path, round(h.score, 5)) for h in milvus.search("a photo", top_k=2)]
        pages = [r.path for r in milvus.list_images()]
        client = milvus.milvus.client
        for name in client.list_collections():  # as a restarted milvus-lite server has them: every one released
            client.release_collection(name)
        assert {client.get_load_state(n)["state"].name for n in client.list_collections()} == {"NotLoad"}
        milvus._changed()  # no cached page or stats: each is read from the store
        assert [(h.path, round(h.score, 5)) for h in milvus.search("a photo", top_k=2)] == before
        assert [r.path for r in milvus.list_images()] == pages
        assert milvus.stats()["images"] == {"ok": 3, "failed": 0}
    finally:
        milvus.close()


class _Client:
    """A server's answers: 'collection not loaded' (Milvus 2.3+, code 101) until `load_collection` is called."""

    def __init__(self, load_fails: BaseException | None = None, stays_released: bool = False) -> None:
        self.loads: list[str] = []
        self.load_fails, self.stays_released, self.loaded = load_fails, stays_released, False

    def load_collection(self, name: str) -> None:
        self.loads.append(name)
        if self.load_fails is not None:
            raise self.load_fails
        self.loaded = not self.stays_released

    def query(self, name: str, **kwargs: object) -> list[dict[str, int]]:
        from pymilvus.exceptions import MilvusException

        if not self.loaded:
            raise MilvusException(code=101, message=f"failed to query: collection not loaded[collection={name}]")
        return [{"count(*)": 7}]


def _server_store(client: _Client) -> MilvusStore:
    store = MilvusStore.__new__(MilvusStore)  # no connection: the calls go to `client`
    store.spec, store.client = parse_store("milvus://db.example:19530/photos"), client
    return store


def test_a_servers_not_loaded_answer_loads_the_collection_once_and_asks_again() -> None:
    client = _Client()
    store = _server_store(client)
    assert store.call(client.query, "photos_m1", filter='path != ""', output_fields=["count(*)"]) == [{"count(*)": 7}]
    assert client.loads == ["photos_m1"]


def test_a_collection_that_stays_released_is_one_line_after_one_load() -> None:
    client = _Client(stays_released=True)
    with pytest.raises(StoreUnavailableError) as failed:
        _server_store(client).call(client.query, "photos_m1", filter='path != ""')
    assert client.loads == ["photos_m1"]  # once: no loop
    assert str(failed.value) == ("Milvus store milvus://db.example:19530/photos failed (failed to query: collection "
                                 "not loaded[collection=photos_m1])")


def test_a_server_that_does_not_answer_the_load_is_still_a_connection_error() -> None:
    """The 503 with Retry-After of a server that went away (`StoreConnectionError`) is kept."""
    from pymilvus.exceptions import MilvusException

    client = _Client(load_fails=MilvusException(code=2, message="Fail connecting to server on db.example:19530, "
                                                                "illegal connection params or server unavailable"))
    with pytest.raises(StoreConnectionError):
        _server_store(client).call(client.query, "photos_m1", filter='path != ""')
    assert client.loads == ["photos_m1"]


# -- 2. which of identical photos a hit shows -------------------------------------------------------------------
def test_identical_photos_show_the_oldest_copy_on_disk_as_the_embedded_store(tmp_path, tiny_encoder) -> None:
    photos = write_images(tmp_path / "photos", 4)
    embedded, milvus = _pair(tmp_path, tiny_encoder)
    # Added later, and sorting before photos/ by path: a copy in a folder with LIKE wildcards, and a hard link.
    copy = tmp_path / "p2" / "x_%extra" / photos[0].name
    link = tmp_path / "p3" / "hard.jpg"
    try:
        for library in (embedded, milvus):
            library.add(tmp_path / "photos", workers=0, progress=False)
            library.classify(LABELS, top_k=2, progress=False)
        copy.parent.mkdir(parents=True)
        shutil.copyfile(photos[0], copy)
        link.parent.mkdir()
        os.link(photos[1], link)
        for library in (embedded, milvus):
            library.add(tmp_path / "p2", workers=0, progress=False)
            library.add(tmp_path / "p3", workers=0, progress=False)

        def shown(photo: Path):
            answers = [_shown(library.search(image=str(photo), top_k=1)) for library in (embedded, milvus)]
            assert answers[1] == answers[0]
            assert answers[0][0][3]  # tagged: the tags of the row shown are compared
            return answers[0][0][:3]

        assert shown(photos[0]) == (str(photos[0]), [str(copy)], [])
        assert shown(photos[1]) == (str(photos[1]), [], [str(link)])
        every = [_shown(library.search("a photo", top_k=10)) for library in (embedded, milvus)]
        assert every[1] == every[0] and len(every[0]) == 4

        held = tmp_path / "held.png"
        shutil.move(copy, held)  # the copy that sorts first is gone: the oldest still stands for the bytes
        assert shown(held) == (str(photos[0]), [str(copy)], [])
        shutil.move(held, copy)
        shutil.move(photos[0], held)  # the oldest is gone: the copy on disk stands for them, never "missing"
        assert shown(held) == (str(copy), [str(photos[0])], [])
        photos[1].unlink()  # the link's other name is gone: the link is the file
        assert shown(link) == (str(link), [str(photos[1])], [])
    finally:
        milvus.close()
        embedded.close()


def test_rows_stored_in_one_write_keep_the_order_they_were_written(tmp_path, tiny_encoder, monkeypatch) -> None:
    """A batch's rows were stamped within one step of the clock (0.24 us here, 16 ms on Windows; a clock that
    stands still here): tied, they were ordered by path, not as written, where the embedded store's ids differ."""
    import clipforge.library.milvus_store as store_module

    milvus = MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", tiny_encoder)
    try:
        space = milvus.milvus.add_space(tiny_encoder.fingerprint, "test-vit-tiny", int(tiny_encoder.embed_dim))
        paths = [f"/photos/{(i * 37) % 100:02d}.jpg" for i in range(100)]  # written out of path order
        monkeypatch.setattr(store_module.time, "time", lambda: 1_800_000_000.0)
        space.upsert([row_from_record(ImageRecord(i + 1, p, f"{i:064x}", 1, 1, 8, 8, 0.0, "ok", None),
                                      [1.0] + [0.0] * (int(tiny_encoder.embed_dim) - 1), int(space.dim))
                      for i, p in enumerate(paths)])
        monkeypatch.undo()
        rows = space.query('path != ""', ["path", "added_at"])
        assert [r["path"] for r in sorted(rows, key=lambda r: (r["added_at"], r["path"]))] == paths
    finally:
        milvus.close()


# -- 3. the order of ties and of model spaces -------------------------------------------------------------------
def test_tags_with_equal_counts_are_listed_by_label(tmp_path, tiny_encoder) -> None:
    """Rows met in the order zebra, zebra, apple, apple, mango (each row's vector is its label's prompt, so `tag`
    gives it that label again): listed apple, zebra (2 each), then mango, as the embedded store orders them."""
    milvus = MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", tiny_encoder)
    try:
        dim = int(tiny_encoder.embed_dim)
        space = milvus.milvus.add_space(tiny_encoder.fingerprint, "test-vit-tiny", dim)
        tops = ["zebra", "zebra", "apple", "apple", "mango"]
        vectors = tiny_encoder.encode_texts([f"a photo of a {label}." for label in tops])
        space.upsert([row_from_record(ImageRecord(i + 1, f"/p/{i}.jpg", f"{i:064x}", 1, 1, 8, 8, 0.0, "ok", None),
                                      vector, dim, [(label, 0.9)])
                      for i, (label, vector) in enumerate(zip(tops, vectors, strict=True))])
        want = [("apple", 2), ("zebra", 2), ("mango", 1)]
        assert list(milvus.stats()["tags"].items()) == want
        assert list(milvus.tag_counts().items()) == want
        report = milvus.classify(["zebra", "mango", "apple"], templates="a photo of a {}.", top_k=1, progress=False)
        assert list(report.top1_counts.items()) == want  # the `tag` summary line
        assert list(milvus.stats()["tags"].items()) == want
    finally:
        milvus.close()


def test_the_tag_summary_and_stats_list_as_the_embedded_store(tmp_path, tiny_encoder) -> None:
    write_images(tmp_path / "photos", 9)
    labels = ["zebra", "yak", "apple", "mango", "kiwi", "bee", "owl"]
    embedded, milvus = _pair(tmp_path, tiny_encoder)
    try:
        reports = []
        for library in (embedded, milvus):
            library.add(tmp_path / "photos", workers=0, progress=False)
            reports.append(library.classify(labels, templates="a photo of a {}.", top_k=2, progress=False))
        counts = list(reports[0].top1_counts.items())
        assert len({n for _, n in counts}) < len(counts)  # ties to break
        assert counts == sorted(counts, key=lambda kv: (-kv[1], kv[0]))
        assert list(reports[1].top1_counts.items()) == counts
        assert list(milvus.stats()["tags"].items()) == list(embedded.stats()["tags"].items()) == counts
    finally:
        milvus.close()
        embedded.close()


def test_model_spaces_are_listed_in_creation_order_on_both_stores(tmp_path, tiny_encoder) -> None:
    """The default made of the second space: the embedded store still lists the first space first."""
    write_images(tmp_path / "photos", 2)
    other = resolve_encoder("test-rn-tiny")
    listed = []
    for kind in ("embedded", "milvus"):
        root = tmp_path / kind
        for encoder in (tiny_encoder, other):
            library = _open(kind, root, encoder, new_space=encoder is other)
            try:
                library.add(tmp_path / "photos", workers=0, progress=False)
            finally:
                library.close()
        library = _open(kind, root, tiny_encoder)
        try:
            library.set_default("test-rn-tiny")
            listed.append([(s["name"], s["default"]) for s in library.spaces()])
            assert [(s["name"], s["default"]) for s in library.stats()["spaces"]] == listed[-1]
        finally:
            library.close()
    assert listed[1] == listed[0] == [("test-vit-tiny", False), ("test-rn-tiny", True)]


# -- 4. a collection name with a trailing newline -----------------------------------------------------------------
@pytest.mark.parametrize("spec", ["milvus-lite:/x/n.db#abc\n", "milvus://db.example:19530/abc\n"])
def test_a_collection_name_ending_in_a_newline_is_refused(spec) -> None:
    with pytest.raises(ValueError) as refused:
        parse_store(spec)
    assert str(refused.value) == (f"--store {spec!r}: collection 'abc\\n' must be letters, digits and _ (not "
                                  "starting with a digit) (expected milvus://HOST:PORT/COLLECTION or "
                                  "milvus-lite:PATH.db)")


def test_milvus_pages_and_ids_are_checked_as_the_embedded_stores(tmp_path, tiny_encoder) -> None:
    """Review 65 (revapi): the embedded store's checks of a page and an id did not reach the Milvus library:
    `list_images(limit=-1)` gave every image but the last (a slice from the end), `offset=-5` the last five, and
    `get_image(10**30)` Milvus's parse error said as a store that is down (StoreUnavailableError)."""
    write_images(tmp_path / "photos", 3)
    milvus = MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", tiny_encoder)
    try:
        milvus.add([str(tmp_path / "photos")], progress=False)
        assert len(milvus.list_images()) == 3
        for kwargs, said in (({"limit": -1}, "limit must be 0 or more (None: no limit), got -1"),
                             ({"offset": -5}, "offset must be 0 or more, got -5")):
            with pytest.raises(ValueError) as error:
                milvus.list_images(**kwargs)
            assert str(error.value) == said
        assert milvus.get_image(10**30) is None
        with pytest.raises(KeyError):
            milvus.thumbnail(10**30)
        first = milvus.list_images(limit=1)[0]
        assert milvus.get_image(first.id).path == first.path  # a real id still found
    finally:
        milvus.close()


# -- review 65 (revmilvus): a space filled later, and a copy out of Milvus ----------------------------------------
def test_a_space_filled_later_shows_the_copy_the_embedded_store_shows(tmp_path, tiny_encoder) -> None:
    """Finding 1: a second model space stamped its own `added_at` in the order it was filled (path order), so its
    hits showed the copy that sorts first; the embedded store's ids are per file, shared by every space. A file's
    row in a later space now takes the time its row in another space holds."""
    photos = write_images(tmp_path / "photos", 3)
    copy = tmp_path / "a_copy" / photos[0].name  # identical bytes, sorting before photos/, added after them
    copy.parent.mkdir()
    shutil.copyfile(photos[0], copy)
    other = resolve_encoder("test-rn-tiny")
    seen = []
    for kind in ("embedded", "milvus"):
        root = tmp_path / kind
        library = _open(kind, root, tiny_encoder)
        try:
            library.add(tmp_path / "photos", workers=0, progress=False)
            library.add(tmp_path / "a_copy", workers=0, progress=False)
        finally:
            library.close()
        library = _open(kind, root, other, new_space=True)
        try:  # the later space filled in path order: the copy is written to it first
            library.add([tmp_path / "a_copy", tmp_path / "photos"], workers=0, progress=False)
            seen.append((_shown(library.search(image=str(photos[0]), top_k=1)),
                         [r.path for r in library.list_images(status=None)]))
        finally:
            library.close()
    assert seen[1] == seen[0]
    assert seen[0] == ([(str(photos[0]), [str(copy)], [], [])], [*map(str, photos), str(copy)])


def test_a_copy_out_of_milvus_numbers_its_records_oldest_first(tmp_path, tiny_encoder) -> None:
    """Finding 2: `index copy` to an embedded library numbered the records in the order the collection returned
    them (after a `tag` run on milvus-lite, not the order they were added), so the copy listed them, and showed
    another of identical photos, unlike its source. It now writes them oldest first, `(added_at, path)`."""
    from clipforge.library.transfer import copy_library

    photos = write_images(tmp_path / "photos", 3)
    copy = tmp_path / "a_copy" / photos[0].name
    milvus = _open("milvus", tmp_path, tiny_encoder)
    try:
        milvus.add(tmp_path / "photos", workers=0, progress=False)
        copy.parent.mkdir()
        shutil.copyfile(photos[0], copy)
        milvus.add(tmp_path / "a_copy", workers=0, progress=False)
        milvus.classify(LABELS, top_k=2, progress=False)  # a `tag` run: the rows move to a new collection
        source = (_shown(milvus.search(image=str(photos[0]), top_k=1)),
                  [r.path for r in milvus.list_images(status=None)], [r.path for r in milvus.iter_images()])
    finally:
        milvus.close()
    copy_library(f"milvus-lite:{tmp_path}/m.db", to_library=tmp_path / "copied", progress=False)
    copied = Library(tmp_path / "copied", tiny_encoder)
    try:
        records = list(copied.iter_images())
        assert [r.id for r in records] == [1, 2, 3, 4]
        assert (_shown(copied.search(image=str(photos[0]), top_k=1)),
                [r.path for r in copied.list_images(status=None)], [r.path for r in records]) == source
    finally:
        copied.close()
    assert source[0][0][:3] == (str(photos[0]), [str(copy)], [])
    assert source[1] == [*map(str, photos), str(copy)]


def test_a_failed_file_keeps_its_time_and_place_as_the_embedded_store(tmp_path, tiny_encoder) -> None:
    """Finding 3: a failed file's row was stamped anew by every rewrite (`--retry-failed`), moving it to the end
    of `index list`, and a batch's failed rows were stamped after its photos; the embedded store writes a batch's
    failures first and keeps a record's time. Both stores now list a_bad, b, c, before and after the retry."""
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a_bad.jpg").write_bytes(b"junk")
    write_images(tmp_path / "p", 1, prefix="b")
    listed = []
    for kind in ("embedded", "milvus"):
        library = _open(kind, tmp_path / kind, tiny_encoder)
        try:
            library.add(tmp_path / "p", workers=0, progress=False)
            write_images(tmp_path / "p", 1, seed=1, prefix="c")
            library.add(tmp_path / "p", workers=0, progress=False)
            first = [(r.path, r.status, r.added_at) for r in library.iter_images()]
            library.add(tmp_path / "p", workers=0, progress=False, retry_failed=True)
            assert [(r.path, r.status, r.added_at) for r in library.iter_images()] == first
            listed.append([(Path(path).name, status) for path, status, _ in first])
        finally:
            library.close()
        (tmp_path / "p" / "c000.png").unlink()
    assert listed[1] == listed[0] == [("a_bad.jpg", "failed"), ("b000.png", "ok"), ("c000.png", "ok")]
