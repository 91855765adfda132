"""Turning bytes from a client into a decoded image, or a 4xx that says what was wrong.

The client's content type is ignored and its file name decides nothing: the format is identified
from the bytes by Pillow, restricted to the photo formats we mean to accept (Pillow also opens
formats such as EPS that hand the data to external programs). The declared pixel count is
checked on the header, before any pixel is decoded, so a 60-byte PNG claiming 20000x20000
pixels costs nothing. Nothing is decoded here: the bytes go on to the library, whose one image reader
decodes a query exactly as `index add` decodes a file (a large JPEG at a reduced DCT scale, only the centre
crop resampled), so a photo searched for gets its own vector back and a 48-megapixel JPEG costs a
1/64-size decode instead of 144 MB of pixels. A truncated or corrupt image fails there, and
`LibraryService` names it (422).

The file name is kept only as a label (`client_file_name` cuts it to its last component and a bounded
length; the library's `clean_upload_name` turns that into the stem of a file under its uploads folder).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from clipforge.image import ImageLoadError
from clipforge.image.costly import refusal as costly_refusal
from clipforge.image.formats import ISO_PHOTOS, iso_photo_format, unreadable_photo_reason
from clipforge.image.loading import open_header
from clipforge.server.errors import APIError
from clipforge.server.limits import ServerLimits

__all__ = [
    "ACCEPTED_FORMATS",
    "MAX_NAME_CHARS",
    "SniffedImage",
    "UnreadablePhoto",
    "client_file_name",
    "iso_photo_format",
    "read_upload",
    "sniff_image",
]

_BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_OPTIONAL_FORMATS = ("AVIF", "HEIF")
_CHUNK = 1 << 20
MAX_NAME_CHARS = 255  # of a client's file name handed to the library (which keeps at most 120 bytes of it)


def _accepted_formats() -> tuple[str, ...]:
    import clipforge.image.formats  # noqa: F401  (registers HEIF/AVIF openers when installed)

    Image.init()
    return _BASE_FORMATS + tuple(f for f in _OPTIONAL_FORMATS if f in Image.OPEN)


ACCEPTED_FORMATS: tuple[str, ...] = _accepted_formats()


class UnreadablePhoto(APIError):
    """415 for a phone photo in a format this installation cannot read (HEIC without pillow-heif): its detail says
    which and what the server's operator can do; `format`, `what` and `package` let the web page say it in the
    browser's language (`ui_handlers`). Still a `not_an_image` refusal for clients that branch on the code."""

    def __init__(self, what: str, fmt: str) -> None:
        photo = ISO_PHOTOS[fmt]  # the brand check and the wording are the image layer's, the loader's too
        super().__init__(415, "not_an_image",
                         f"{what} is {unreadable_photo_reason(fmt, 'this server')} (the server's operator installs "
                         f"it and restarts the server); send it as a JPEG or PNG instead")
        self.what, self.format, self.package = what, photo.name, photo.package


@dataclass(frozen=True)
class SniffedImage:
    """An upload whose header passed: its bytes, what they really are, and what the client called it
    (`what`: "query image", "upload", ... as the error messages name it)."""

    data: bytes
    format: str
    width: int
    height: int
    what: str = "image"


async def read_upload(upload: Any, limits: ServerLimits, what: str = "image") -> bytes:
    """All bytes of a FastAPI `UploadFile`, refusing (413) as soon as they pass the limit."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await upload.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > limits.max_upload_bytes:
            raise APIError(413, "payload_too_large",
                           f"{what} is larger than the limit of {limits.max_upload_bytes:,} bytes")
        chunks.append(chunk)
    if not total:
        raise APIError(400, "empty_file", f"{what} is empty (0 bytes)")
    return b"".join(chunks)


def client_file_name(raw: str | None) -> str | None:
    """The last path component of the file name a client sent, at most `MAX_NAME_CHARS` characters, or None.

    Attacker input, cut here in linear time before anything else reads it: a name is a label, never a
    path (the library's `clean_upload_name` keeps letters, digits and a few marks of it, NFC, as the stem
    of a file under its own uploads folder). Both separators count (`C:\\x\\photo.jpg` is `photo.jpg`).
    """
    if not raw:
        return None
    name = str(raw).replace("\\", "/").rsplit("/", 1)[-1][:MAX_NAME_CHARS]
    return name if name.strip(" .") else None


def _bomb_detail(exc: Exception, what: str, limits: ServerLimits) -> str:
    # Pillow's own guard fired first (over twice its global limit); its message holds the count.
    match = re.search(r"\((\d+) pixels\)", str(exc))
    declared = f"{int(match.group(1)):,} pixels" if match else "more pixels than Pillow allows"
    return f"{what} declares {declared}, more than the limit of {limits.max_pixels:,}"


def _open_header(data: bytes, what: str, limits: ServerLimits) -> Image.Image:
    """The upload's header, opened as the library's loader opens a file (`loading.open_header`): Pillow's global
    bomb check is not run, so its warning needs no ``catch_warnings`` (which raced between the server's threads,
    audit 65) and `sniff_image` holds the size against `limits.max_pixels`."""
    try:
        return open_header(io.BytesIO(data), ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        fmt = iso_photo_format(data)
        if fmt is not None and fmt not in ACCEPTED_FORMATS:  # never decoded: named, with what would read it
            raise UnreadablePhoto(what, fmt) from None
        raise APIError(415, "not_an_image",
                       f"{what} is not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)}); "
                       f"the format is read from the bytes, not from the file name") from None
    except Image.DecompressionBombError as exc:  # an opener's own check while opening (a GIF frame off its screen)
        raise APIError(413, "too_many_pixels", _bomb_detail(exc, what, limits)) from None
    except Exception as exc:  # header parsers raise assorted types on garbage
        if isinstance(exc, EOFError) or "truncat" in str(exc).lower():
            reason = f"truncated ({type(exc).__name__}: {exc})"
            raise ImageLoadError(f"{what} is {reason}", path=what, reason=reason) from None
        reason = f"unreadable image header ({type(exc).__name__}: {exc})"
        raise ImageLoadError(f"{what} has an {reason}", path=what, reason=reason) from None


def sniff_image(data: bytes, limits: ServerLimits, what: str = "image") -> SniffedImage:
    """Identify and bound `data` from its header; an APIError (400/413/415) or an `ImageLoadError` (422: an
    unreadable header) names the problem. The pixels are decoded later, by the library (module docstring)."""
    if not data:
        raise APIError(400, "empty_file", f"{what} is empty (0 bytes)")
    if len(data) > limits.max_upload_bytes:
        raise APIError(413, "payload_too_large", f"{what} is larger than the limit of {limits.max_upload_bytes:,} bytes")
    refused = costly_refusal(data)  # a file crafted to cost seconds to parse or minutes to decode: before Pillow
    if refused is not None:
        raise ImageLoadError(f"{what} could not be decoded: {refused}", path=what, reason=refused)
    with _open_header(data, what, limits) as header:
        fmt = str(header.format)
        width, height = header.size
    if width * height > limits.max_pixels:
        raise APIError(413, "too_many_pixels",
                       f"{what} declares {width}x{height} = {width * height:,} pixels, more than the limit of "
                       f"{limits.max_pixels:,}")
    return SniffedImage(data=data, format=fmt, width=width, height=height, what=what)
