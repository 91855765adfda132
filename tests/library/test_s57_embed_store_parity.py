"""The embedded store and milvus-lite answer alike on the same photos (audit 57, finding 10a/b): `index stats`'
space line counts vectors per distinct content on both (milvus-lite counted rows: 4 for 3 contents), and
`index add` says on both how many indexed photos of the folders named are gone from disk (milvus-lite said
nothing); a photo moved inside the folder is relinked, not counted gone."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.library import Library  # noqa: E402
from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from tests.library.conftest import write_images  # noqa: E402


@pytest.fixture()
def both(tmp_path, tiny_encoder):
    """(embedded, milvus-lite, photos, made): 3 photos and a byte-identical copy of the first, added to both."""
    photos = tmp_path / "photos"
    made = write_images(photos, 3)
    shutil.copyfile(made[0], photos / "copy_of_first.png")  # byte-identical: one content, one vector
    embedded = Library(tmp_path / "lib", tiny_encoder)
    milvus = MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", tiny_encoder)
    for library in (embedded, milvus):
        library.add(photos, workers=0, progress=False)
    yield embedded, milvus, photos, made
    milvus.close()
    embedded.close()


def test_the_space_line_counts_vectors_per_content_on_both(both) -> None:
    embedded, milvus, _, _ = both
    spaces = [library.stats()["spaces"] for library in (embedded, milvus)]
    assert [s[0]["images"] for s in spaces] == [3, 3]
    assert [library.stats()["distinct_contents"] for library in (embedded, milvus)] == [3, 3]


def test_index_add_says_how_many_are_gone_on_both(both) -> None:
    embedded, milvus, photos, made = both
    made[1].unlink()  # gone
    made[2].rename(photos / f"moved{made[2].suffix}")  # relinked, not gone
    reports = [library.add(photos, workers=0, progress=False) for library in (embedded, milvus)]
    assert [(r.gone, r.relinked) for r in reports] == [(1, 1), (1, 1)]
    lines = [r.summary_line() for r in reports]
    assert all(line.endswith("; 1 indexed photo in these folders is gone from disk (`clipforge index prune` "
                             "forgets them)") for line in lines), lines
    # a file named alone (no folder) counts no gone photo, on either store
    reports = [library.add(photos / "copy_of_first.png", workers=0, progress=False) for library in (embedded, milvus)]
    assert [r.gone for r in reports] == [0, 0]
