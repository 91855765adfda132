"""A moved file is relinked on the Milvus store as on the embedded one: side by side on the same photos,
the re-run `add` reports `relinked`, embeds nothing, and the photo keeps its id and tags under its new
path (before, Milvus added the new path as a duplicate and kept the missing one as the search hit,
and `index prune` then dropped the photo's tags). A copy, whose original still exists, stays a duplicate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.library import Library  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402

LABELS = ["fish", "bird", "cat", "car"]
COUNTERS = ("added", "updated", "relinked", "touched", "unchanged", "failed", "embedded", "duplicates")


def _counters(report) -> tuple[int, ...]:
    return tuple(getattr(report, name) for name in COUNTERS)


def _pair(tmp_path: Path, tiny_encoder, images_factory) -> tuple[list[Path], Library, MilvusLibrary]:
    photos = images_factory(tmp_path / "photos", 4)
    embedded = Library(tmp_path / "lib", tiny_encoder)
    milvus = MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", tiny_encoder)
    for library in (embedded, milvus):
        library.add(tmp_path / "photos", workers=0, progress=False)
        library.classify(LABELS, top_k=3, progress=False)
    return photos, embedded, milvus


def _hit(library, photo: Path):
    return library.search(image=str(photo), top_k=1)[0]


def _counts(library) -> tuple[int, int, int]:
    stats = library.stats()
    return stats["images"]["ok"], stats["images"]["failed"], stats["distinct_contents"]


@pytest.mark.parametrize("target", ["sub/ostrich_moved.jpg", "renamed.jpg"])
def test_a_moved_file_is_relinked_keeping_id_and_tags(tmp_path, tiny_encoder, images_factory, target) -> None:
    photos, embedded, milvus = _pair(tmp_path, tiny_encoder, images_factory)
    libraries = (embedded, milvus)
    before = {id(lib): _hit(lib, photos[1]) for lib in libraries}
    for lib in libraries:
        assert before[id(lib)].path == str(photos[1]) and before[id(lib)].tags
    moved = tmp_path / "photos" / target
    moved.parent.mkdir(exist_ok=True)
    photos[1].rename(moved)

    reports = [library.add(tmp_path / "photos", workers=0, progress=False) for library in libraries]
    assert _counters(reports[1]) == _counters(reports[0])
    assert (reports[1].relinked, reports[1].added, reports[1].embedded, reports[1].unchanged) == (1, 0, 0, 3)

    for lib in libraries:
        hit, old = _hit(lib, moved), before[id(lib)]
        assert (hit.path, hit.duplicates, hit.id) == (str(moved), [], old.id)
        assert [t for t, _ in hit.tags] == [t for t, _ in old.tags]
        assert (hit.width, hit.height) == (old.width, old.height)
        top = old.tags[0][0]  # `search --tag` still finds it, under its new path
        assert str(moved) in [h.path for h in lib.search("a photo", top_k=10, filter_tags=top)]
    assert [t for t, _ in _hit(milvus, moved).tags] == [t for t, _ in _hit(embedded, moved).tags]
    assert milvus.get_path(str(photos[1])) is None
    assert milvus.get_path(str(moved)).added_at == pytest.approx(milvus.get_image(before[id(milvus)].id).added_at)
    assert _counts(milvus) == _counts(embedded) == (4, 0, 4)

    again = [library.add(tmp_path / "photos", workers=0, progress=False) for library in libraries]
    assert _counters(again[1]) == _counters(again[0])
    assert (again[1].unchanged, again[1].relinked, again[1].added) == (4, 0, 0)
    assert milvus.prune() == 0
    assert _counts(milvus) == _counts(embedded) == (4, 0, 4)
    embedded.close()
    milvus.close()


def test_a_copied_file_stays_a_duplicate(tmp_path, tiny_encoder, images_factory) -> None:
    photos, embedded, milvus = _pair(tmp_path, tiny_encoder, images_factory)
    copy = tmp_path / "photos" / "sub" / "copy.jpg"
    copy.parent.mkdir()
    shutil.copyfile(photos[1], copy)  # both paths exist: not a move
    reports = [library.add(tmp_path / "photos", workers=0, progress=False) for library in (embedded, milvus)]
    assert _counters(reports[1]) == _counters(reports[0])
    assert (reports[1].added, reports[1].duplicates, reports[1].relinked, reports[1].embedded) == (1, 1, 0, 0)
    for lib in (embedded, milvus):
        hit = _hit(lib, photos[1])
        assert (hit.path, hit.duplicates) == (str(photos[1]), [str(copy)])
    assert _counts(milvus) == _counts(embedded) == (5, 0, 4)
    embedded.close()
    milvus.close()


def test_the_move_reaches_every_model_space(tmp_path, images_factory) -> None:
    photos = images_factory(tmp_path / "photos", 3)
    store = f"milvus-lite:{tmp_path}/m.db"
    with MilvusLibrary(store, tmp_path / "mlib", "test-vit-tiny") as milvus:
        milvus.add(tmp_path / "photos", workers=0, progress=False)
    with MilvusLibrary(store, tmp_path / "mlib", "test-worldwide-tiny", new_space=True) as second:
        second.add(tmp_path / "photos", workers=0, progress=False)
        before = second.get_path(str(photos[2]))
    moved = tmp_path / "photos" / "sub" / "moved.jpg"
    moved.parent.mkdir()
    photos[2].rename(moved)
    with MilvusLibrary(store, tmp_path / "mlib", "test-vit-tiny") as milvus:
        report = milvus.add(tmp_path / "photos", workers=0, progress=False)
        assert (report.relinked, report.added, report.embedded) == (1, 0, 0)
    with MilvusLibrary(store, tmp_path / "mlib", "test-worldwide-tiny") as second:
        after = second.get_path(str(moved))
        assert second.get_path(str(photos[2])) is None
        assert after is not None and (after.id, after.sha256, after.added_at) == (
            before.id, before.sha256, before.added_at)
        assert second.prune() == 0
