"""A library whose `thumbs/` folder is itself a symlink (audit 63 filesystem #1).

The cache wrote through the link (the real path of each shard lay inside the *resolved* thumbs folder) but never
counted or evicted there (its walk skips a linked folder), so anonymous `/thumb` requests grew the link's target
past `CLIPFORGE_THUMB_CACHE_MB` without bound, and `thumbs -> /tmp` put files outside the library. The documented
rule (docs/security.md: a thumbnail is never written through a link), as for a shard folder linked elsewhere: a
linked thumbs folder is neither read nor written, thumbnails are made in memory for each request, and the log says
so once.
"""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image

from clipforge.library import Library
from clipforge.library.thumbs import thumb_cache

_SIZES = (40, 64, 100, 128, 256, 300, 512, 1024, 2048)


@pytest.fixture()
def photos(tmp_path, images_factory):
    return images_factory(tmp_path / "photos", 4)


def _indexed(root, encoder, photos) -> Library:
    library = Library(root, encoder)
    library.add(photos[0].parent, workers=0, progress=False)
    return library


def _files(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _every_thumbnail(library: Library) -> int:
    """Ask for every photo at every size (twice); each answer is a JPEG no larger than asked. Returns the count."""
    answered = 0
    for _ in range(2):
        for record in library.store.list_images(status="ok"):
            for size in _SIZES:
                data = library.thumbnail(record.id, size=size)
                with Image.open(io.BytesIO(data)) as image:
                    assert image.format == "JPEG" and 0 < max(image.size) <= size
                answered += 1
    return answered


def test_a_linked_thumbs_folder_is_never_written_and_thumbnails_are_still_answered(tmp_path, tiny_encoder, photos,
                                                                                  monkeypatch, caplog):
    monkeypatch.setenv("CLIPFORGE_THUMB_CACHE_MB", "0.001")  # ~1 kB: about one class file
    elsewhere = tmp_path / "thumbs_elsewhere"  # e.g. moved to a bigger disk
    elsewhere.mkdir()
    with _indexed(tmp_path / "lib", tiny_encoder, photos) as library:
        thumbs = library.paths.thumbs_dir
        if thumbs.exists():
            thumbs.rmdir()
        thumbs.symlink_to(elsewhere, target_is_directory=True)
        with caplog.at_level(logging.WARNING, logger="clipforge.library.thumbs"):
            assert _every_thumbnail(library) == 2 * 4 * len(_SIZES)
    assert _files(elsewhere) == []  # was 4 photos x 6 classes, never counted nor evicted
    warned = [r.getMessage() for r in caplog.records if r.name == "clipforge.library.thumbs"]
    assert warned == [f"thumbnails are not cached: {thumbs} is a link, and nothing is written through one (make it a "
                      "folder inside the library to cache them); each is made from its photo when asked for"]


def test_a_file_planted_under_a_linked_thumbs_folder_is_not_served(tmp_path, tiny_encoder, photos):
    elsewhere = tmp_path / "tmp"
    elsewhere.mkdir()
    with _indexed(tmp_path / "lib", tiny_encoder, photos) as library:
        record = library.store.image_by_path(str(photos[1]))
        made = library.thumbnail(record.id, size=64)  # cached in the ordinary folder
        thumbs = library.paths.thumbs_dir
        (planted,) = _files(thumbs)
        secret = b"\xff\xd8\xff" + b"root:x:0:0:root:/root:/bin/bash\n"  # a JPEG's first bytes
        (elsewhere / planted.parent.name).mkdir()
        (elsewhere / planted.parent.name / planted.name).write_bytes(secret)
        planted.unlink()
        planted.parent.rmdir()
        thumbs.rmdir()
        thumbs.symlink_to(elsewhere, target_is_directory=True)
        assert library.thumbnail(record.id, size=64) == made  # made from the photo again, not the planted bytes
    assert (elsewhere / planted.parent.name / planted.name).read_bytes() == secret  # left alone


def test_a_library_reached_through_a_link_still_caches_within_its_budget(tmp_path, tiny_encoder, photos, monkeypatch):
    """Only the thumbs folder itself being a link stops the cache: a library folder given by a linked path (its
    thumbs/ an ordinary folder inside it) caches, counts and evicts as before."""
    real = tmp_path / "disk" / "lib"
    real.parent.mkdir()
    _indexed(real, tiny_encoder, photos).close()
    linked = tmp_path / "lib"
    linked.symlink_to(real, target_is_directory=True)
    budget_mb = 0.01  # ~10 kB: a few class files, not all 24
    monkeypatch.setenv("CLIPFORGE_THUMB_CACHE_MB", str(budget_mb))
    with Library(linked, tiny_encoder) as library:
        _every_thumbnail(library)
        assert thumb_cache(library.paths.thumbs_dir)._total == sum(p.stat().st_size for p in _files(real / "thumbs"))
    kept = _files(real / "thumbs")
    assert kept and all(p.suffix == ".jpg" and not p.is_symlink() for p in kept)
    assert sum(p.stat().st_size for p in kept) <= budget_mb * (1 << 20)
