"""Image bytes, thumbnails and uploads, always addressed by record, never by a client's path.

A server hands out `/images/{id}` and `/thumb/{id}`; the path comes from the database, so a
request can only ever reach files the library indexed - and only while they still hold the
bytes that were indexed: an original is read as a regular file and served only if its size
and sha256 match the record (a file swapped for another, or for a link to /etc/passwd, is
refused until `index add` sees it again). Thumbnails are cached by content hash (moving or
duplicating a photo reuses its thumbnail) in a few size classes under a byte budget, and a
cached file is served only if it is one this library wrote (see `clipforge.library.thumbs`).
Uploads are sniffed by decoding them - the client's file name and content type are not
trusted - and stored under the content hash with the extension of the format actually found.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from clipforge.atomic import write_bytes_atomic
from clipforge.data.regular import read_regular_file
from clipforge.library.paths import LibraryPaths
from clipforge.library.store import ImageRecord
from clipforge.library.thumbs import thumb_cache

__all__ = ["THUMB_SIZES", "ChangedFileError", "image_bytes", "read_original", "store_upload", "thumbnail_bytes"]

THUMB_SIZES = (16, 2048)  # inclusive bounds on the requested longest side
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff",
               "MPO": ".jpg"}


class ChangedFileError(ValueError):
    """An indexed file no longer holds the bytes that were indexed (`reason` says it without the path)."""

    def __init__(self, record: ImageRecord) -> None:
        self.reason = "changed since it was indexed (run `clipforge index add` on it again)"
        super().__init__(f"image {record.id}'s file {self.reason}")


def read_original(record: ImageRecord) -> bytes:
    """The bytes of an indexed photo, only while they are the indexed ones: FileNotFoundError when gone,
    NotRegularFileError (a ValueError) for a FIFO or a device, ChangedFileError when the size or the
    sha256 differs from the record (swapped for another file or for a link elsewhere)."""
    if record.status != "ok":
        raise ValueError(f"image {record.id} ({record.path}) was not indexed: {record.error}")
    data = read_regular_file(record.path)
    if len(data) != record.size or not record.sha256 or hashlib.sha256(data).hexdigest() != record.sha256:
        raise ChangedFileError(record)
    return data


def image_bytes(record: ImageRecord) -> tuple[bytes, str]:
    """(file bytes, MIME type) of an indexed image (see `read_original` for what is refused)."""
    from PIL import Image

    data = read_original(record)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            mime = Image.MIME.get(probe.format or "", "application/octet-stream")
    except Exception:
        mime = "application/octet-stream"
    return data, mime


def thumbnail_bytes(paths: LibraryPaths, record: ImageRecord, size: int = 256,
                    max_pixels: int | None = None) -> bytes:
    """A JPEG whose longest side is at most `size` (never enlarged), cached by size class under the
    library's thumbs folder (see `clipforge.library.thumbs`)."""
    if not THUMB_SIZES[0] <= int(size) <= THUMB_SIZES[1]:
        raise ValueError(f"thumbnail size must be between {THUMB_SIZES[0]} and {THUMB_SIZES[1]}, got {size}")
    if record.status != "ok" or not record.sha256:
        raise ValueError(f"image {record.id} ({record.path}) was not indexed: {record.error}")

    def make(klass: int) -> bytes:
        from clipforge.image import load_image

        source = io.BytesIO(read_original(record))
        image = load_image(source, max_pixels=max_pixels) if max_pixels else load_image(source)
        image.thumbnail((klass, klass))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()

    return thumb_cache(paths.thumbs_dir).get(record.sha256, int(size), make)


def store_upload(paths: LibraryPaths, data: bytes, max_pixels: int | None = None) -> Path:
    """Check that `data` is a decodable image and keep it in the library's uploads folder.

    Raises `clipforge.image.ImageLoadError` (a ValueError) saying why when it is not.
    """
    from PIL import Image

    from clipforge.image import load_image

    if max_pixels:
        load_image(io.BytesIO(data), max_pixels=max_pixels)  # raises with the reason
    else:
        load_image(io.BytesIO(data))
    with Image.open(io.BytesIO(data)) as probe:
        extension = _EXTENSIONS.get(probe.format or "", ".img")
    sha = hashlib.sha256(data).hexdigest()
    target = paths.uploads_dir / sha[:2] / f"{sha}{extension}"
    if not target.is_file():
        write_bytes_atomic(target, data)
        os.chmod(target, 0o644)
    return target
