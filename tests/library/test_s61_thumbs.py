"""A thumbnail is refused exactly when its original is (audit61 attacker2 #2), and a cached one stays cheap.

The cache is keyed by content hash, and only a miss read the photo: a deleted photo, one swapped for a FIFO or
for a link to another file, and a second id holding the same bytes as a cached photo whose own file was gone
all kept their thumbnails (up to 1024 px) while the original answered 404. Now the record's file is checked
first, with `read_original`'s own refusals; a hit whose file is the very one verified before (device, inode,
size, times) reads nothing, so the gallery does not hash every photo on every view.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from clipforge.library import Library
from clipforge.library import media as media_module

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")


def _refusal(call) -> tuple[type[BaseException], str]:
    """The class and message `call()` raised (fails the test when it returned)."""
    with pytest.raises((OSError, ValueError)) as caught:
        call()
    return type(caught.value), str(caught.value)


@pytest.fixture()
def lib(tmp_path, tiny_encoder, images_factory):
    photos = images_factory(tmp_path / "photos", 3)
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    yield library, photos
    library.close()


def _id(library: Library, path: Path) -> int:
    record = library.store.image_by_path(str(path))
    assert record is not None and record.status == "ok"
    return record.id


def _same_refusal(library: Library, image_id: int) -> tuple[type[BaseException], str]:
    """The original's refusal, checked to be the thumbnail's too (class and words), at every size class the tests
    cache (a class not cached yet was always refused: its miss reads the photo)."""
    original = _refusal(lambda: library.image_bytes(image_id))
    for size in (64, 128, 256, 512, 1024, 40):
        assert _refusal(lambda size=size: library.thumbnail(image_id, size)) == original
    return original


def test_a_deleted_photo_loses_its_cached_thumbnail(lib):
    library, photos = lib
    image_id = _id(library, photos[1])
    assert library.thumbnail(image_id, 1024)[:3] == b"\xff\xd8\xff"  # cached now
    photos[1].unlink()
    kind, message = _same_refusal(library, image_id)
    assert kind is FileNotFoundError and "No such file or directory" in message


@needs_fifo
def test_a_photo_swapped_for_a_fifo_loses_its_cached_thumbnail(lib):
    library, photos = lib
    image_id = _id(library, photos[1])
    library.thumbnail(image_id, 1024)
    photos[1].unlink()
    os.mkfifo(photos[1])
    assert _same_refusal(library, image_id)[1] == f"{photos[1]} is not a regular file (a FIFO)"


def test_a_photo_swapped_for_a_link_to_another_file_loses_its_cached_thumbnail(lib, tmp_path):
    library, photos = lib
    image_id = _id(library, photos[1])
    library.thumbnail(image_id, 256)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    for target in (secret, photos[2]):  # another file, then another indexed photo
        photos[1].unlink()
        photos[1].symlink_to(target)
        kind, message = _same_refusal(library, image_id)
        assert kind is media_module.ChangedFileError and "changed since it was indexed" in message


def test_a_same_size_same_time_swap_is_refused_too(lib):
    """Other bytes under the recorded size and mtime (what a plain `index add` trusts unread): the original is
    refused by its sha256, and so is the thumbnail, though its stamp alone looks unchanged."""
    library, photos = lib
    image_id = _id(library, photos[1])
    record = library.store.image(image_id)
    library.thumbnail(image_id, 64)
    data = bytearray(photos[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    swapped = photos[1].with_name("swap.tmp")
    swapped.write_bytes(bytes(data))
    os.utime(swapped, ns=(record.mtime_ns, record.mtime_ns))
    os.replace(swapped, photos[1])
    assert (os.stat(photos[1]).st_size, os.stat(photos[1]).st_mtime_ns) == (record.size, record.mtime_ns)
    assert _same_refusal(library, image_id)[0] is media_module.ChangedFileError


@needs_fifo
def test_a_second_id_with_the_same_bytes_does_not_borrow_the_first_ones_thumbnail(lib, tmp_path):
    library, photos = lib
    twin = tmp_path / "photos" / "twin.png"
    shutil.copyfile(photos[0], twin)
    library.add(tmp_path / "photos", workers=0, progress=False)
    first, second = _id(library, photos[0]), _id(library, twin)
    assert first != second and library.store.image(first).sha256 == library.store.image(second).sha256
    cached = library.thumbnail(first, 512)
    twin.unlink()
    kind, _ = _same_refusal(library, second)
    assert kind is FileNotFoundError
    os.mkfifo(twin)
    assert _same_refusal(library, second)[1] == f"{twin} is not a regular file (a FIFO)"
    assert library.thumbnail(first, 512) == cached  # the first photo's own file is intact


def test_an_intact_photo_is_served_from_the_cache_without_reading_it_again(lib, monkeypatch):
    library, photos = lib
    image_id = _id(library, photos[1])
    made = library.thumbnail(image_id, 256)
    reads: list[str] = []
    real_read = media_module.read_regular_file
    monkeypatch.setattr(media_module, "read_regular_file", lambda path, **kw: reads.append(path) or real_read(path,
                                                                                                            **kw))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached thumbnail was decoded again")

    monkeypatch.setattr("clipforge.image.load_image", no_decoding)
    for _ in range(3):
        assert library.thumbnail(image_id, 256) == made
    assert reads == [], "a cache hit read (and hashed) the original"
    # A process that has not verified this file yet (a server just started) reads it once, then no more.
    media_module.forget_verified()
    assert library.thumbnail(image_id, 256) == made
    assert library.thumbnail(image_id, 256) == made
    assert reads == [str(photos[1])]
    # A touched file whose bytes are the indexed ones is still served (the original is too), after one read.
    os.utime(photos[1], ns=(1_000_000_000, 1_000_000_000))
    assert library.thumbnail(image_id, 256) == made and library.image_bytes(image_id)[0] == photos[1].read_bytes()
    assert library.thumbnail(image_id, 256) == made
    assert reads == [str(photos[1])] * 3  # the thumbnail's verification, then the original route's own read


def test_a_rewritten_file_is_verified_again(lib):
    """In place, keeping the inode: its times change, so the next hit reads it (and refuses other bytes)."""
    library, photos = lib
    image_id = _id(library, photos[2])
    library.thumbnail(image_id, 128)
    original = photos[2].read_bytes()
    time.sleep(0.05)  # past the file system clock's tick since the photo was written: the rewrite's ctime differs
    with open(photos[2], "r+b") as handle:
        handle.seek(len(original) // 2)
        handle.write(bytes([original[len(original) // 2] ^ 0xFF]))
    assert hashlib.sha256(photos[2].read_bytes()).hexdigest() != library.store.image(image_id).sha256
    assert _same_refusal(library, image_id)[0] is media_module.ChangedFileError


@needs_fifo
def test_milvus_thumbnails_are_refused_like_their_originals(tmp_path, tiny_encoder, images_factory):
    """The Milvus store serves thumbnails through the same `media.thumbnail_bytes`: its records get the same
    checks."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from clipforge.library.milvus_library import MilvusLibrary

    photos = images_factory(tmp_path / "photos", 2)
    with MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "mlib", tiny_encoder) as milvus:
        milvus.add(tmp_path / "photos", workers=0, progress=False)
        ids = {milvus.get_path(str(p)).id: p for p in photos}
        for image_id in ids:
            milvus.thumbnail(image_id, 256)
        gone, fifo = ids
        ids[gone].unlink()
        ids[fifo].unlink()
        os.mkfifo(ids[fifo])
        assert _same_refusal(milvus, gone)[0] is FileNotFoundError
        assert _same_refusal(milvus, fifo)[1] == f"{ids[fifo]} is not a regular file (a FIFO)"
