"""Image bytes, thumbnails and uploads, always addressed by record, never by a client's path.

A server hands out `/images/{id}` and `/thumb/{id}`; the path comes from the database, so a
request can only ever reach files the library indexed. Thumbnails are cached by content hash
(moving or duplicating a photo reuses its thumbnail) and written atomically. Uploads are
sniffed by decoding them - the client's file name and content type are not trusted - and
stored under the content hash with the extension of the format actually found.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path

from clipforge.atomic import write_bytes_atomic
from clipforge.data.regular import read_regular_file
from clipforge.library.paths import LibraryPaths
from clipforge.library.store import ImageRecord

__all__ = ["THUMB_SIZES", "image_bytes", "store_upload", "thumbnail_bytes"]

THUMB_SIZES = (16, 2048)  # inclusive bounds on the requested longest side
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff",
               "MPO": ".jpg"}


def image_bytes(record: ImageRecord) -> tuple[bytes, str]:
    """(file bytes, MIME type) of an indexed image; FileNotFoundError when the file is gone, ValueError
    when it is no longer a regular file."""
    from PIL import Image

    if record.status != "ok":
        raise ValueError(f"image {record.id} ({record.path}) was not indexed: {record.error}")
    data = read_regular_file(record.path)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            mime = Image.MIME.get(probe.format or "", "application/octet-stream")
    except Exception:
        mime = "application/octet-stream"
    return data, mime


def thumbnail_bytes(paths: LibraryPaths, record: ImageRecord, size: int = 256,
                    max_pixels: int | None = None) -> bytes:
    """A JPEG whose longest side is at most `size`, cached under the library's thumbs folder."""
    from clipforge.image import load_image

    if not THUMB_SIZES[0] <= int(size) <= THUMB_SIZES[1]:
        raise ValueError(f"thumbnail size must be between {THUMB_SIZES[0]} and {THUMB_SIZES[1]}, got {size}")
    if record.status != "ok" or not record.sha256:
        raise ValueError(f"image {record.id} ({record.path}) was not indexed: {record.error}")
    cached = paths.thumbs_dir / record.sha256[:2] / f"{record.sha256}_{int(size)}.jpg"
    if cached.is_file():
        return cached.read_bytes()
    source = io.BytesIO(read_regular_file(record.path))
    image = load_image(source, max_pixels=max_pixels) if max_pixels else load_image(source)
    image.thumbnail((int(size), int(size)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    with contextlib.suppress(OSError):  # a read-only library still serves thumbnails, just uncached
        write_bytes_atomic(cached, data)
    return data


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
