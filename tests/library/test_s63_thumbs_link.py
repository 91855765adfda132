"""A library whose `thumbs/` folder is itself a symlink (audit 63 filesystem #1, review 63 revserver #3).

The cache wrote through the link (the real path of each shard lay inside the *resolved* thumbs folder) but never
counted or evicted there (its walk skipped a linked folder), so anonymous `/thumb` requests grew the link's target
past `CLIPFORGE_THUMB_CACHE_MB` without bound, `thumbs -> /tmp` put files outside the library where others could
plant them, and a file planted there was served. The first fix read and wrote no linked `thumbs/` at all, and so
decoded the original on every request for the ordinary setup "thumbs moved to a bigger disk" (60 ms for a 24 MP
JPEG, every gallery view). Now a link to a folder of this user that no other user can write into is cached, counted
and evicted under the folder it resolves to; any other target (world- or group-writable, `/tmp`-like with the
sticky bit, another user's, missing) is neither read nor written, and the log says why once.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from clipforge.library import Library
from clipforge.library.thumbs import thumb_cache

_SIZES = (40, 64, 100, 128, 256, 300, 512, 1024, 2048)
_SECRET = b"\xff\xd8\xff" + b"root:x:0:0:root:/root:/bin/bash\n"  # a JPEG's first bytes, then someone's secret


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


def _linked(library: Library, target: Path) -> Path:
    """Make the library's `thumbs/` a link to `target` (as after moving it to a bigger disk); returns the link."""
    thumbs = library.paths.thumbs_dir
    if thumbs.exists():
        shutil.rmtree(thumbs)
    thumbs.symlink_to(target, target_is_directory=True)
    return thumbs


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="JPEG")
    return out.getvalue()


def _not_cached(thumbs: Path, target: Path, why: str) -> str:
    return (f"thumbnails are not cached: {thumbs} is a link to {target}, {why}, and no thumbnail is written where "
            "another user could plant files (link it to a folder of your own that only you can write into to cache "
            "them); each is made from its photo when asked for")


def test_a_thumbs_folder_linked_to_a_private_folder_caches_within_the_budget(tmp_path, tiny_encoder, photos,
                                                                            monkeypatch, caplog):
    budget_mb = 0.01  # ~10 kB: a few class files, not all 24
    monkeypatch.setenv("CLIPFORGE_THUMB_CACHE_MB", str(budget_mb))
    big_disk = tmp_path / "big_disk" / "thumbs"
    big_disk.mkdir(parents=True)
    big_disk.chmod(0o755)  # this user's, nobody else may write into it
    with _indexed(tmp_path / "lib", tiny_encoder, photos) as library, \
            caplog.at_level(logging.WARNING, logger="clipforge.library.thumbs"):
        _linked(library, big_disk)
        assert _every_thumbnail(library) == 2 * 4 * len(_SIZES)
        assert thumb_cache(library.paths.thumbs_dir)._total == sum(p.stat().st_size for p in _files(big_disk))
        record = library.store.image_by_path(str(photos[2]))
        made = library.thumbnail(record.id, size=64)
        cached = big_disk / record.sha256[:2] / f"{record.sha256}_64.jpg"
        assert cached.read_bytes() == made  # written under the folder the link resolves to
        cached.write_bytes(_jpeg((0, 0, 255)))  # the cache's own file, changed: the next answer is read from it
        assert library.thumbnail(record.id, size=64) == _jpeg((0, 0, 255))
    kept = _files(big_disk)
    assert kept and all(p.suffix == ".jpg" and p.is_file() and not p.is_symlink() for p in kept)
    assert sum(p.stat().st_size for p in kept) <= budget_mb * (1 << 20)  # counted and evicted there
    assert [r.getMessage() for r in caplog.records if r.name == "clipforge.library.thumbs"] == []


def test_links_planted_under_a_private_linked_folder_are_not_served_but_replaced(tmp_path, tiny_encoder, photos):
    big_disk = tmp_path / "big_disk"
    big_disk.mkdir()
    big_disk.chmod(0o700)
    secret = tmp_path / "secret"
    secret.write_bytes(_SECRET)
    with _indexed(tmp_path / "lib", tiny_encoder, photos) as library:
        _linked(library, big_disk)
        record = library.store.image_by_path(str(photos[1]))
        made = {size: library.thumbnail(record.id, size=size) for size in (64, 128)}
        shard = big_disk / record.sha256[:2]
        (shard / f"{record.sha256}_64.jpg").unlink()
        (shard / f"{record.sha256}_64.jpg").symlink_to(secret)  # a symbolic link to a secret
        (shard / f"{record.sha256}_128.jpg").unlink()
        os.link(secret, shard / f"{record.sha256}_128.jpg")  # and a hard one
        assert {size: library.thumbnail(record.id, size=size) for size in (64, 128)} == made
        for size in (64, 128):
            replaced = shard / f"{record.sha256}_{size}.jpg"
            assert not replaced.is_symlink() and replaced.stat().st_nlink == 1
            assert replaced.read_bytes() == made[size]
    assert secret.read_bytes() == _SECRET and secret.stat().st_nlink == 1


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775], ids=["world-writable", "sticky-like-tmp", "group-writable"])
def test_a_thumbs_folder_linked_to_a_folder_others_can_write_is_never_read_or_written(tmp_path, tiny_encoder, photos,
                                                                                     monkeypatch, caplog, mode):
    monkeypatch.setenv("CLIPFORGE_THUMB_CACHE_MB", "0.001")
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(mode)
    with _indexed(tmp_path / "lib", tiny_encoder, photos) as library, \
            caplog.at_level(logging.WARNING, logger="clipforge.library.thumbs"):
        record = library.store.image_by_path(str(photos[1]))
        made = library.thumbnail(record.id, size=64)  # in the library's own thumbs/, before the link
        thumbs = _linked(library, shared)
        planted = shared / record.sha256[:2] / f"{record.sha256}_64.jpg"  # another user's file at the cache's name
        planted.parent.mkdir()
        planted.write_bytes(_SECRET)
        assert _every_thumbnail(library) == 2 * 4 * len(_SIZES)
        answer = library.thumbnail(record.id, size=64)
    assert answer == made  # made from the photo, not the planted bytes
    assert _files(shared) == [planted] and planted.read_bytes() == _SECRET  # nothing written, the plant left alone
    warned = [r.getMessage() for r in caplog.records if r.name == "clipforge.library.thumbs"]
    assert warned == [_not_cached(thumbs, shared, f"a folder other users can write into (mode {mode:04o})")]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a folder away needs root")
def test_a_thumbs_folder_linked_to_another_users_folder_is_never_written(tmp_path, tiny_encoder, photos, caplog):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o755)
    os.chown(theirs, 65534, 65534)
    with _indexed(tmp_path / "lib", tiny_encoder, photos) as library, \
            caplog.at_level(logging.WARNING, logger="clipforge.library.thumbs"):
        thumbs = _linked(library, theirs)
        assert _every_thumbnail(library) == 2 * 4 * len(_SIZES)
    assert _files(theirs) == []
    warned = [r.getMessage() for r in caplog.records if r.name == "clipforge.library.thumbs"]
    assert warned == [_not_cached(thumbs, theirs, "a folder of another user (uid 65534)")]


def test_a_thumbs_link_to_nothing_is_answered_uncached(tmp_path, tiny_encoder, photos, caplog):
    with _indexed(tmp_path / "lib", tiny_encoder, photos) as library, \
            caplog.at_level(logging.WARNING, logger="clipforge.library.thumbs"):
        thumbs = _linked(library, tmp_path / "unplugged")
        assert _every_thumbnail(library) == 2 * 4 * len(_SIZES)
    assert not (tmp_path / "unplugged").exists()
    warned = [r.getMessage() for r in caplog.records if r.name == "clipforge.library.thumbs"]
    assert warned == [_not_cached(thumbs, tmp_path / "unplugged", "which is not a folder")]


def test_a_library_reached_through_a_link_still_caches_within_its_budget(tmp_path, tiny_encoder, photos, monkeypatch):
    """Only the thumbs folder itself being a link is checked: a library folder given by a linked path (its
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


def test_files_the_cache_did_not_write_are_never_counted_or_evicted(tmp_path, tiny_encoder, photos, monkeypatch):
    """A `thumbs/` linked to a folder that holds other files (a photo folder, a disk's root): past the budget the
    cache evicted the oldest ``*.jpg`` of every subfolder, the user's photos included (review 63, revfix #1)."""
    monkeypatch.setenv("CLIPFORGE_THUMB_CACHE_MB", "0.01")
    disk = tmp_path / "disk"
    (disk / "2024").mkdir(parents=True)
    disk.chmod(0o755)
    (disk / "ab").mkdir()
    theirs = [disk / "IMG_0001.jpg", disk / "2024" / "IMG_0002.jpg", disk / "ab" / "holiday.jpg",
              disk / "ab" / ("ab" + "0" * 62 + "_64.JPG")]  # a name like ours but not one
    for i, path in enumerate(theirs):
        path.write_bytes(_jpeg((i * 40, 10, 10)) * 50)  # bigger than the whole budget
        os.utime(path, (1, 1))  # older than anything the cache writes: the first to go
    with _indexed(tmp_path / "lib", tiny_encoder, photos) as library:
        _linked(library, disk)
        assert _every_thumbnail(library) == 2 * 4 * len(_SIZES)
    assert all(path.read_bytes() == _jpeg((i * 40, 10, 10)) * 50 for i, path in enumerate(theirs))
    ours = [p for p in _files(disk) if p not in theirs]
    assert ours and sum(p.stat().st_size for p in ours) <= 0.01 * (1 << 20)  # the budget still held for its own
