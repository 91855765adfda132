"""Incremental indexing: exact counts for new, unchanged, changed, duplicated, moved and bad files."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3

import numpy as np
import pytest

import clipforge.data.reading as decode_module
import clipforge.library.indexer as indexer_module
from clipforge.library import Library


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(library: Library) -> dict[str, tuple[str, str | None]]:
    return {r.path: (r.status, r.error) for r in library.store.list_images(status=None)}


def test_incremental_add_counts(tmp_path, tiny_encoder, images_factory, monkeypatch):
    photos = images_factory(tmp_path / "photos", 12, formats=("png", "jpg", "webp", "gif", "bmp", "tiff"))
    library = Library(tmp_path / "lib", tiny_encoder)
    first = library.add(tmp_path / "photos", batch_size=5, workers=0, progress=False)
    assert (first.added, first.embedded, first.duplicates, first.failed, first.unchanged) == (12, 12, 0, 0, 0)
    assert library.store.status_counts() == {"ok": 12, "failed": 0}
    assert {r.sha256 for r in library.list_images()} == {_sha(p) for p in photos}

    # Second run: nothing is read - the decoding dataset is never even built.
    class Forbidden:
        def __init__(self, *a, **k):
            raise AssertionError("unchanged files must be skipped without reading")

    monkeypatch.setattr(indexer_module, "ImageFileReader", Forbidden)
    second = library.add(tmp_path / "photos", workers=0, progress=False)
    assert (second.unchanged, second.added, second.embedded, second.considered) == (12, 0, 0, 12)
    monkeypatch.undo()

    # One file rewritten with new bytes, one only touched (same bytes, new mtime), two new files.
    images_factory(tmp_path / "other", 1, seed=99, formats=("png",))
    shutil.copyfile(tmp_path / "other" / "img000.png", photos[0])
    stat = os.stat(photos[1])
    os.utime(photos[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    images_factory(tmp_path / "photos", 2, seed=7, prefix="new", formats=("jpg",))
    third = library.add(tmp_path / "photos", workers=0, progress=False)
    assert (third.updated, third.touched, third.added, third.unchanged, third.embedded) == (1, 1, 2, 10, 3)
    assert library.store.image_by_path(str(photos[0])).sha256 == _sha(photos[0])
    # The replaced content's vector is gone; one vector per distinct content remains.
    assert library.stats()["distinct_contents"] == 14 == library.store.status_counts()["ok"]
    assert third.summary_line().startswith(
        "added 2 files, updated 1, relinked 0, skipped 11 unchanged, failed 0; embedded 3, duplicates 0 in "
    )


def test_duplicates_are_embedded_once_and_returned_as_one_hit(tmp_path, tiny_encoder, images_factory):
    photos = images_factory(tmp_path / "photos", 5, formats=("png",))
    (tmp_path / "photos" / "sub").mkdir()
    copies = [tmp_path / "photos" / "copy_a.png", tmp_path / "photos" / "sub" / "copy_b.png"]
    for copy in copies:
        shutil.copyfile(photos[2], copy)
    library = Library(tmp_path / "lib", tiny_encoder)
    report = library.add(tmp_path / "photos", recursive=True, batch_size=2, workers=0, progress=False)
    assert (report.added, report.embedded, report.duplicates) == (7, 5, 2)
    assert library.store.embedding_count(tiny_encoder.fingerprint) == 5
    hits = library.search(image=photos[2], top_k=3)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert sorted([hits[0].path, *hits[0].duplicates]) == sorted(str(p) for p in [photos[2], *copies])
    assert len({h.sha256 for h in hits}) == 3  # every hit is a different content
    # Non-recursive add sees only the top level: the sub-folder copy is not considered.
    again = library.add(tmp_path / "photos", recursive=False, workers=0, progress=False)
    assert again.considered == 6 and again.unchanged == 6
    # The default walks sub-folders, as `clipforge embed` does.
    assert library.add(tmp_path / "photos", workers=0, progress=False).unchanged == 7


def test_moved_files_are_relinked_keeping_id_and_tags(tmp_path, tiny_encoder, images_factory):
    photos = images_factory(tmp_path / "photos", 6, formats=("png",))
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    library.classify("cat,dog", templates="simple", progress=False)
    before = library.store.image_by_path(str(photos[3]))
    tags_before = library.tags(before.id)
    (tmp_path / "album").mkdir()
    moved = tmp_path / "album" / "renamed.png"
    os.rename(photos[3], moved)
    report = library.add(tmp_path / "album", workers=0, progress=False)
    assert (report.relinked, report.added, report.embedded) == (1, 0, 0)
    after = library.get_image(before.id)
    assert after.path == str(moved) and after.sha256 == before.sha256
    assert library.tags(before.id) == tags_before and len(tags_before) == 2
    assert library.store.image_by_path(str(photos[3])) is None
    assert library.prune() == 0  # nothing dangles
    assert library.store.status_counts()["ok"] == 6


def test_bad_files_are_recorded_with_reasons_and_never_stop_the_run(tmp_path, tiny_encoder, images_factory,
                                                                    bad_files_factory):
    photos = images_factory(tmp_path / "photos", 6, formats=("jpg", "png"))
    expected = bad_files_factory(tmp_path / "photos", photos[0])
    library = Library(tmp_path / "lib", tiny_encoder)
    report = library.add(tmp_path / "photos", batch_size=3, workers=2, progress=False)
    assert (report.added, report.failed) == (6, 4)
    rows = _rows(library)
    for name, word in expected.items():
        status, error = rows[str(tmp_path / "photos" / name)]
        assert status == "failed" and word in error, (name, error)
    assert all(rows[str(p)] == ("ok", None) for p in photos)
    assert "failed 4:" in report.summary_line() and "too many pixels (1)" in report.summary_line()
    # Failed files are not re-read while unchanged, unless asked.
    assert library.add(tmp_path / "photos", workers=0, progress=False).unchanged == 10
    retried = library.add(tmp_path / "photos", workers=0, progress=False, retry_failed=True)
    assert (retried.failed, retried.unchanged) == (4, 6)
    # A bad file replaced by a good image becomes searchable.
    shutil.copyfile(photos[1], tmp_path / "photos" / "notes.jpg")
    fixed = library.add(tmp_path / "photos", workers=0, progress=False)
    assert (fixed.updated, fixed.failed, fixed.embedded) == (1, 0, 0)
    assert _rows(library)[str(tmp_path / "photos" / "notes.jpg")] == ("ok", None)


def test_pixel_cap_is_configurable(tmp_path, tiny_encoder, images_factory):
    images_factory(tmp_path / "photos", 2, formats=("png",))  # 48x40 and 49x41
    library = Library(tmp_path / "lib", tiny_encoder, max_pixels=48 * 40)
    report = library.add(tmp_path / "photos", workers=0, progress=False)
    assert (report.added, report.failed) == (1, 1)
    assert "too many pixels" in report.failures[0][1]
    # it said "pass a larger max_pixels", a name that classify, embed and eval users have no flag for; then
    # "`index add --max-pixels N` or `serve --max-pixels N`", flags similarity and embed users did not have
    assert "`--max-pixels N` of index add, embed, classify, similarity or serve," in report.failures[0][1]


def test_unreadable_file_is_recorded(tmp_path, tiny_encoder, images_factory, monkeypatch):
    photos = images_factory(tmp_path / "photos", 3, formats=("png",))
    locked = str(photos[1])
    real_read = decode_module.read_regular_file

    def guarded_read(path, *bound):  # what opening a file of mode 000 does (root ignores chmod)
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_read(path, *bound)

    monkeypatch.setattr(decode_module, "read_regular_file", guarded_read)
    library = Library(tmp_path / "lib", tiny_encoder)
    report = library.add(tmp_path / "photos", workers=0, progress=False)
    assert (report.added, report.failed) == (2, 1)
    assert _rows(library)[locked] == ("failed", "permission denied")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read mode-000 files")
def test_unreadable_file_real_permissions(tmp_path, tiny_encoder, images_factory):
    photos = images_factory(tmp_path / "photos", 2, formats=("png",))
    os.chmod(photos[0], 0)
    try:
        report = Library(tmp_path / "lib", tiny_encoder).add(tmp_path / "photos", workers=0, progress=False)
    finally:
        os.chmod(photos[0], 0o644)
    assert report.failures == [(str(photos[0]), "permission denied")]


def test_remove_and_prune(tmp_path, tiny_encoder, images_factory):
    photos = images_factory(tmp_path / "photos", 4, formats=("png",))
    extra = images_factory(tmp_path / "photos" / "sub", 3, seed=3, formats=("jpg",))
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", recursive=True, workers=0, progress=False)
    first = library.store.image_by_path(str(photos[0]))
    assert library.remove(first.id) == 1
    assert library.remove(photos[1]) == 1
    assert library.remove(tmp_path / "photos" / "sub") == 3
    assert library.store.status_counts()["ok"] == 2
    assert library.store.embedding_count(tiny_encoder.fingerprint) == 2  # orphan vectors dropped
    assert {h.path for h in library.search(image=extra[0], top_k=10)} == {str(photos[2]), str(photos[3])}
    photos[2].unlink()
    assert library.prune() == 1
    assert [h.path for h in library.search("anything", top_k=10)] == [str(photos[3])]
    assert os.path.exists(photos[3])  # removing never touches files


def test_vectors_match_direct_encoding_and_float16_option(tmp_path, tiny_encoder, images_factory):
    from clipforge.image import load_image

    photos = images_factory(tmp_path / "photos", 4)
    library = Library(tmp_path / "lib", tiny_encoder, vector_dtype="float16")
    library.add(tmp_path / "photos", workers=0, progress=False)
    stored = library.store.vectors_for_shas(tiny_encoder.fingerprint, [_sha(p) for p in photos])
    direct = tiny_encoder.encode_images([load_image(p) for p in photos])
    for row, path in enumerate(photos):
        np.testing.assert_allclose(stored[_sha(path)], direct[row], atol=2e-3)
    conn = sqlite3.connect(library.paths.db)
    assert {r for (r,) in conn.execute("SELECT DISTINCT length(vector) FROM embeddings")} == {2 * 32}
    assert library.stats()["model"]["vector_dtype"] == "float16"
