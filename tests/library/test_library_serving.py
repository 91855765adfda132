"""What a library serves: its own thumbnails and the indexed bytes, nothing else (issue 21, items 8 and 13).

With write access to the library folder one could plant `thumbs/ab/<sha>_256.jpg -> /etc/passwd`
(or link a whole shard folder elsewhere) and have the server hand it out; an indexed photo
swapped for another file (or a link to a secret) was served as-is. And every thumbnail size
16-1024 was cached separately (18 MB per photo), without bound.
"""

from __future__ import annotations

import io
import os
import shutil

import pytest
from PIL import Image

from clipforge.library import Library
from clipforge.library.media import ChangedFileError
from clipforge.library.thumbs import THUMB_CLASSES, size_class, thumb_cache


@pytest.fixture()
def served(tmp_path, tiny_encoder, images_factory):
    photos = images_factory(tmp_path / "photos", 3)
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    yield library, photos, secret
    library.close()


def _record(library, photo):
    return library.store.image_by_path(str(photo))


def _cached_files(library) -> list:
    return sorted(p for p in library.paths.thumbs_dir.rglob("*") if not p.is_dir())


def test_symlink_planted_in_thumbs_is_never_served(served):
    library, photos, secret = served
    record = _record(library, photos[0])
    first = library.thumbnail(record.id, size=64)
    (cached,) = _cached_files(library)
    cached.unlink()
    cached.symlink_to(secret)
    again = library.thumbnail(record.id, size=64)
    assert secret.read_bytes() not in again and again == first  # rebuilt from the photo
    assert not cached.is_symlink() and cached.read_bytes() == first  # and the link replaced by our file


def test_shard_folder_linked_out_of_the_library_is_neither_read_nor_written(served, tmp_path):
    library, photos, secret = served
    record = _record(library, photos[1])
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = outside / f"{record.sha256}_64.jpg"
    planted.write_bytes(b"\xff\xd8\xff" + secret.read_bytes())  # even with a JPEG's first bytes
    shard = library.paths.thumbs_dir / record.sha256[:2]
    library.paths.thumbs_dir.mkdir(parents=True, exist_ok=True)
    shard.symlink_to(outside, target_is_directory=True)
    data = library.thumbnail(record.id, size=64)
    assert secret.read_bytes() not in data
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
    assert sorted(p.name for p in outside.iterdir()) == [planted.name]  # nothing written through the link


def test_hard_link_or_foreign_bytes_in_thumbs_are_rebuilt(served):
    library, photos, secret = served
    record = _record(library, photos[2])
    first = library.thumbnail(record.id, size=128)
    (cached,) = _cached_files(library)
    cached.unlink()
    os.link(secret, cached)  # a second name for another file
    assert library.thumbnail(record.id, size=128) == first
    cached.write_bytes(b"not a jpeg")
    assert library.thumbnail(record.id, size=128) == first


@pytest.mark.parametrize("how", ["same size and mtime", "symlink to a secret", "other photo"])
def test_original_swapped_after_indexing_is_refused(served, how):
    library, photos, secret = served
    record = _record(library, photos[0])
    before = os.stat(photos[0])
    if how == "same size and mtime":  # only the content hash can tell
        data = bytearray(photos[0].read_bytes())
        data[-20] ^= 0xFF
        photos[0].write_bytes(bytes(data))
        os.utime(photos[0], ns=(before.st_atime_ns, before.st_mtime_ns))
    elif how == "symlink to a secret":
        photos[0].unlink()
        photos[0].symlink_to(secret)
    else:
        shutil.copyfile(photos[1], photos[0])
    with pytest.raises(ChangedFileError, match=f"image {record.id}'s file changed since it was indexed"):
        library.image_bytes(record.id)
    with pytest.raises(ChangedFileError):
        library.thumbnail(record.id, size=64)  # nothing cached yet: built only from the indexed bytes


def test_thumbnails_are_cached_in_size_classes_only(served):
    library, photos, _ = served
    record = _record(library, photos[0])
    for size in range(16, 1025, 7):  # 144 sizes
        data = library.thumbnail(record.id, size=size)
        with Image.open(io.BytesIO(data)) as image:
            assert max(image.size) <= size and image.format == "JPEG"
    names = sorted(p.name for p in _cached_files(library))
    assert names == sorted(f"{record.sha256}_{c}.jpg" for c in THUMB_CLASSES if c <= 1024)
    assert [size_class(s) for s in (16, 64, 65, 256, 257, 1024, 2048)] == [64, 64, 128, 256, 512, 1024, 2048]


def test_thumbnail_cache_keeps_to_its_byte_budget_evicting_least_recently_used(served, monkeypatch):
    library, photos, _ = served
    ids = [_record(library, p).id for p in photos]
    sizes = {}
    for image_id in ids:
        sizes[image_id] = len(library.thumbnail(image_id, size=256))
    thumb_cache(library.paths.thumbs_dir)._total = None  # recount on the next write
    budget = sum(sizes.values()) + 100  # room for these three, not for a fourth class file
    monkeypatch.setenv("CLIPFORGE_THUMB_CACHE_MB", str(budget / (1 << 20)))
    oldest = _cached_files(library)
    for i, path in enumerate(sorted(oldest, key=lambda p: ids.index(
            next(r for r in ids if library.store.image(r).sha256 in p.name)))):
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # ids[0] least recently used
    library.thumbnail(ids[2], size=512)  # a new class file pushes the cache over its budget
    left = _cached_files(library)
    total = sum(p.stat().st_size for p in left)
    assert total <= budget
    sha0 = library.store.image(ids[0]).sha256
    assert not any(sha0 in p.name for p in left)  # the least recently used went first
    assert any(p.name.endswith("_512.jpg") for p in left)


def test_bad_budget_setting_is_refused(served, monkeypatch):
    library, photos, _ = served
    monkeypatch.setenv("CLIPFORGE_THUMB_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="CLIPFORGE_THUMB_CACHE_MB must be a number of megabytes"):
        library.thumbnail(_record(library, photos[0]).id, size=64)


def test_a_big_jpeg_thumbnail_is_decoded_at_a_reduced_scale(tmp_path, tiny_encoder, largest_jpeg_decode, shared_data):
    """`/thumb` is anonymous: a 6-megapixel photo's 256-pixel thumbnail decoded all 6 M pixels (a 24 MP photo:
    0.09 s a class, measured). Now a JPEG is decoded at the DCT scale that keeps both sides >= 1.5 x the class,
    and the thumbnail stays what the whole decode gives (> 35 dB PSNR; about 45 dB on a real photo)."""
    import numpy as np

    from clipforge.image import load_image

    photo = sorted((shared_data / "imagenet_sample" / "images").iterdir())[5]  # a real photo's detail
    source = Image.open(photo).convert("RGB")
    (tmp_path / "photos").mkdir()
    path = tmp_path / "photos" / "big.jpg"
    source.resize((3000, 2000), Image.Resampling.BICUBIC).save(path, quality=90)
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    largest = largest_jpeg_decode
    try:
        data = library.thumbnail(_record(library, path).id, size=256)
    finally:
        library.close()
    assert 0 < largest[0] <= 3000 * 2000 // 16, f"decoded {largest[0]:,} pixels for a 256-pixel thumbnail"
    whole = load_image(str(path))
    whole.thumbnail((256, 256))
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == whole.size == (256, 171)
        error = np.asarray(thumb, float) - np.asarray(whole, float)
    psnr = 10 * np.log10(255 ** 2 / np.mean(error ** 2))
    assert psnr > 35, psnr


def test_an_original_indexed_before_crafted_files_were_refused_is_served_without_parsing(tmp_path, tiny_encoder,
                                                                                        monkeypatch):
    """A GIF of 20,000 one-byte comment blocks, indexed by an older version (here: with the structure check
    switched off), is still served by `/api/images/{id}` (anonymous) as its bytes, typed
    application/octet-stream: Pillow never parses its header (its blocks cost seconds)."""
    from PIL import GifImagePlugin

    import clipforge.image.loading as loading

    buffer = io.BytesIO()
    Image.new("P", (16, 16)).save(buffer, "GIF")
    small = buffer.getvalue()
    at = small.index(b",")
    crafted = small[:at] + b"\x21\xfe" + b"\x01x" * 20_000 + b"\x00" + small[at:]
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "old.gif").write_bytes(crafted)
    with Library(tmp_path / "lib", tiny_encoder) as library:
        with monkeypatch.context() as older:
            older.setattr(loading, "source_refusal", lambda source: None)
            assert library.add(tmp_path / "photos", workers=0, progress=False).added == 1
        parsed: list[int] = []
        monkeypatch.setattr(GifImagePlugin.GifImageFile, "_open", lambda self: parsed.append(1) or 1 / 0)
        data, mime = library.image_bytes(_record(library, tmp_path / "photos" / "old.gif").id)
    assert (data, mime) == (crafted, "application/octet-stream") and not parsed
