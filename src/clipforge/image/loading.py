"""Decode an image file to an upright 8-bit RGB PIL image, or fail with a reason a person can act on.

Everything that reads images from disk (datasets, the library indexer, the CLI, the server) goes
through here so that they all agree on orientation, colour and limits, and so that a batch job can
count bad files by `ImageLoadError.reason` instead of crashing on the first one.

The pixel limit is our own `max_pixels` argument, never Pillow's process-wide
``Image.MAX_IMAGE_PIXELS``: whatever another library set that global to, the same file loads (or
is refused) the same way here. Pillow's check of that global is not run on an open (`open_header`), so it
neither refuses nor warns, and no warning filter is touched (a per-open ``catch_warnings`` raced between threads).
Two openers check a size of their own (a GIF frame beyond its screen, an icon's picture): a refusal there is
retried with the global lifted, and a frame between 1x and 2x the global still gets Pillow's warning (rare).

A path is opened as every reader of user files opens one, `regular_file.open_regular_file` (a FIFO, socket or
device refused by its type before it is opened, the open non-blocking, type and size checked again on the open
descriptor), and Pillow reads what it needs from that file object: no open of it by name can block or be raced
(audit 63: it was stat-ed, then opened by name up to three times, so a file swapped for a FIFO meanwhile hung
`eval` for ever, and a FIFO, a socket or a device was "file is empty (0 bytes)"). Pillow does not memory-map a
file object (its map reopened the file by name, and a file truncated under a map kills the process: SIGBUS).
"""

from __future__ import annotations

import io
import math
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from clipforge.errors import UserError
from clipforge.image import netpbm
from clipforge.image.costly import source_refusal
from clipforge.image.formats import iso_photo_format, photo_formats, unreadable_photo_reason
from clipforge.image.geometry import exif_orientation, orientation_transpose, transpose_box, transposed_size
from clipforge.image.modes import to_rgb
from clipforge.regular_file import FileTooLargeError, NotRegularFileError, open_regular_file

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_IMAGE_FILE_BYTES", "DRAFT_MARGIN", "Decoded", "ImageLoadError", "ImageSource", "decode_image",
           "load_image", "open_header"]

MAX_IMAGE_FILE_BYTES = 1 << 30
"""Largest image file read (1 GiB): an uncompressed 16-bit RGB photo at the default pixel cap is 1.07 GB, a
compressed one far less. Readers refuse a bigger file before reading a byte of it (`regular_file`: a 2 GB
sparse file named ``x.jpg`` cost 4.4 GB of memory to index)."""

# Pillow's own hard limit with its default settings (2 * 89,478,485): ~179 megapixels, ~540 MB as RGB.
DEFAULT_MAX_PIXELS = 178_956_970

ImageSource = str | os.PathLike | bytes | bytearray | IO[bytes]

# A draft keeps the shortest side >= DRAFT_MARGIN x the target, so the exact bicubic resize that
# follows still anti-aliases. Measured on the 121 imagenet_sample JPEGs big enough to draft at 224,
# pixel-space cosine to the exact path: margin 1.0 -> min 0.9871 (below our 0.99 bar),
# 1.25 -> 0.9951, 1.5 -> 0.9997; the 12-megapixel speed-up barely changes (3.8x -> 3.6x).
DRAFT_MARGIN = 1.5
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
# Not WebP: its file object holds libwebp's two full canvases (RGBA) for as long as the image lives, 13 bytes a
# pixel held where a copy holds 4 (a 12-megapixel WebP: 155 -> 60 MB held after `load_image` returned).
_KEEP_AS_IS_FORMATS = frozenset({"JPEG", "PNG"})
_PIL_GLOBAL_LOCK = threading.Lock()


class ImageLoadError(UserError, ValueError):
    """An image could not be loaded. ``str(err)`` names the file and the reason; ``err.path`` and
    ``err.reason`` hold them separately so batch jobs can count failures by reason.

    The REST API answers it 422 ``image_load_error`` wherever it arises (an upload's own check or the
    library's), so a bad image has one error shape for a client as for the CLI."""

    http_status = 422

    def __init__(self, message: str, *, path: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason if reason is not None else message


@dataclass(frozen=True)
class Decoded:
    """A decoded upright RGB image plus where the full-resolution picture lies inside it.

    After a JPEG draft the decoded image is smaller than the file's picture; `source_size` is the
    full-resolution (upright) size and `box` the region of `image` that covers the whole picture,
    so resizing ``image`` over ``box`` reproduces the geometry of a full decode. `box` is None when
    no draft happened.
    """

    image: Image.Image
    source_size: tuple[int, int]
    box: tuple[float, float, float, float] | None = None

    @property
    def drafted(self) -> bool:
        return self.box is not None


def _label(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source))
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<file object>"


def _fail(label: str, reason: str) -> ImageLoadError:
    return ImageLoadError(f"cannot load image {label}: {reason}", path=label, reason=reason)


def _read_path(path: str, label: str) -> IO[bytes]:
    """The file opened as `read_regular_file` opens it (a FIFO, socket or device refused by its type, never
    waited for; a file over `MAX_IMAGE_FILE_BYTES` refused before a byte is read), for Pillow to read what it
    needs from (a copy of the whole file's bytes stayed alive through the decode: +138 MB for a 144 MB TIFF)."""
    try:
        return open_regular_file(path, MAX_IMAGE_FILE_BYTES)
    except NotRegularFileError as exc:
        raise _fail(label, "is a directory, not an image file" if exc.kind == "a directory" else exc.reason) from None
    except FileTooLargeError as exc:
        raise _fail(label, exc.reason) from None
    except FileNotFoundError:
        raise _fail(label, "file not found") from None
    except PermissionError:
        raise _fail(label, "permission denied") from None
    except IsADirectoryError:
        raise _fail(label, "is a directory, not an image file") from None
    except OSError as exc:
        raise _fail(label, f"cannot access file ({exc.strerror or exc})") from None


def _check_stream(stream: IO[bytes], label: str) -> None:
    try:
        if not stream.seekable():
            return
        position = stream.tell()
        first = stream.read(1)
        stream.seek(position)
    except (OSError, ValueError, AttributeError):
        return
    if not first:
        raise _fail(label, "file is empty (0 bytes)")


_ARCHIVES = ((b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "a zip archive"), (b"\x1f\x8b", "a gzip file"),
             (b"7z\xbc\xaf\x27\x1c", "a 7z archive"), (b"Rar!\x1a\x07", "a RAR archive"),
             (b"\xfd7zXZ\x00", "an xz file"), (b"\x28\xb5\x2f\xfd", "a zstd file"))


def _unrecognised(source: IO[bytes], start: int) -> str:
    """Why Pillow knew no format: an archive is said as one (a webdataset shard or a zip of photos handed to
    `embed` or `index add` read as "unrecognised"), since unpacking it is what to do; a phone photo in a format
    no opener here reads (HEIC without pillow-heif) as what it is and what reads it, by its ISO-BMFF brand
    (`formats.iso_photo_format`, the server's check too: an iPhone HEIC named ``IMG_0004.JPG``, or given to
    `search --image`, was "not an image")."""
    try:
        source.seek(start)
        head = source.read(4096)
    except (OSError, ValueError):
        head = b""
    photo = iso_photo_format(head)
    if photo is not None and photo not in Image.OPEN:  # Pillow tried every photo opener it has (`_open_photo`)
        return unreadable_photo_reason(photo)
    kind = next((name for magic, name in _ARCHIVES if head.startswith(magic)), None)
    if kind is None and head[257:262] == b"ustar":
        kind = "a tar archive"
    if kind is not None:
        return f"{kind}, not an image (archives are not read: unpack it first)"
    return "not an image (unrecognised or unsupported format)"


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return bool(stream.seekable())
    except (OSError, ValueError, AttributeError):
        return False


def _pil_open(source: IO[bytes]) -> Image.Image:
    """`_open_photo`, where `max_pixels` decides, not Pillow's process-wide ``Image.MAX_IMAGE_PIXELS``: the open
    runs no global check on the size it reads (`open_header`), and the rare opener that checks a size of its own
    while opening (a GIF frame beyond its screen, an icon's picture) and refuses is retried with the global lifted
    (under a lock; header parsing only)."""
    start = source.tell() if source.seekable() else None
    try:
        return _open_photo(source, start)
    except Image.DecompressionBombError:
        if start is not None:
            source.seek(start)
        with _PIL_GLOBAL_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return _open_photo(source, start)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


# what `Image.open` takes from an opener as "not my format", going on to the next one
_NOT_THIS_FORMAT = (SyntaxError, IndexError, TypeError, struct.error)


def open_header(source: IO[bytes], formats: Sequence[str]) -> Image.Image:
    """``Image.open(source, formats=formats)`` for a seekable binary file object, without Pillow's process-wide
    decompression-bomb check of the size it reads: every caller holds that size against its own limit.

    Not ``Image.open`` inside ``warnings.catch_warnings()`` (to silence the check's DecompressionBombWarning), as
    every open here was: before Python 3.14 that saves and restores the whole global filter list, and threads
    opening images at once restored each other's lists (audit 65: an ``ignore DecompressionBombWarning`` filter
    was left behind for good, silencing the application's own bomb warnings). The loop is `Image.open`'s own:
    from the start of the file, each opener whose ``accept`` takes the first 16 bytes is tried in turn; the
    errors Pillow reads as "not this format" go on to the next. Raises ``UnidentifiedImageError`` when none opens
    it, and whatever else an opener raises. Openers that check a size themselves while opening still do so.
    """
    source.seek(0)  # as Image.open: an image starts at the start of its file object
    prefix = source.read(16)
    for name in formats:
        name = name.upper()
        if name not in Image.OPEN:
            Image.init()
        factory, accept = Image.OPEN.get(name, (None, None))
        try:  # `accept` inside, as Image.open: DIB's reads 4 bytes, a 1-3 byte file is "not this format"
            verdict = factory is not None and (not accept or accept(prefix))
            if not verdict or isinstance(verdict, str):  # a str: "this format's reader is not installed"
                continue
            source.seek(0)
            return factory(source, "")
        except _NOT_THIS_FORMAT:
            continue
    raise UnidentifiedImageError(f"cannot identify image file {source!r}")


def _open_photo(source: IO[bytes], start: int | None) -> Image.Image:
    """`open_header` trying the photo formats' openers only (`formats.PHOTO_FORMATS`): those registered first,
    then, for a file none of them knows, every photo opener once Pillow has imported all its plugins."""
    try:
        return open_header(source, photo_formats())
    except UnidentifiedImageError:
        if not Image.init():  # every plugin was registered already: no other photo opener to try
            raise
    if start is not None:
        source.seek(start)
    return open_header(source, photo_formats())


def _open(source: bytes | bytearray | IO[bytes], label: str) -> Image.Image:
    opened = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else source
    if not _seekable(opened):  # read whole, as Pillow would, so its structure can be checked first
        opened = io.BytesIO(opened.read())
    _check_stream(opened, label)
    refused = source_refusal(opened)  # crafted to cost minutes (`costly`): refused before Pillow parses it
    if refused is not None:
        raise _fail(label, refused)
    start = opened.tell()
    try:
        return _pil_open(opened)
    except UnidentifiedImageError:
        raise _fail(label, _unrecognised(opened, start)) from None
    except FileNotFoundError:
        raise _fail(label, "file not found") from None
    except PermissionError:
        raise _fail(label, "permission denied") from None
    except IsADirectoryError:
        raise _fail(label, "is a directory, not an image file") from None
    except Exception as exc:  # header parsers raise assorted types on garbage
        if isinstance(exc, EOFError) or "truncat" in str(exc).lower():
            raise _fail(label, _decode_reason(exc)) from None
        raise _fail(label, f"unreadable image header ({type(exc).__name__}: {exc})") from None


def _decode_reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, EOFError) or "truncat" in text.lower():
        return f"truncated image data ({text or type(exc).__name__})"
    return f"corrupt image data ({type(exc).__name__}: {text})"


def decode_image(
    source: ImageSource,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    *,
    alpha_background: tuple[int, int, int] | None = None,
) -> Decoded:
    """`load_image` that also reports the draft geometry (see `Decoded`); used by `Preprocess.load`."""
    label = _label(source)
    if isinstance(source, (str, os.PathLike)):
        with _read_path(os.fspath(source), label) as stream:  # closed once decoded: no image keeps the file's bytes
            return _decode(stream, label, max_pixels, draft_size, alpha_background)
    return _decode(source, label, max_pixels, draft_size, alpha_background)


def _decode(
    source: bytes | bytearray | IO[bytes],
    label: str,
    max_pixels: int | None,
    draft_size: int | None,
    alpha_background: tuple[int, int, int] | None,
) -> Decoded:
    image = _open(source, label)
    try:
        return _decode_opened(image, label, max_pixels, draft_size, alpha_background)
    except BaseException:
        image.close()
        raise


def _decode_opened(
    image: Image.Image,
    label: str,
    max_pixels: int | None,
    draft_size: int | None,
    alpha_background: tuple[int, int, int] | None,
) -> Decoded:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise _fail(
            label,
            f"too many pixels ({width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,}, a guard against decompression bombs: `--max-pixels N` of index add, embed, classify, "
            f"similarity or serve, or max_pixels= in the API, allows more)",
        )
    box = None
    failure: BaseException | None = None
    try:
        request = math.ceil(draft_size * DRAFT_MARGIN) if draft_size else 0
        if request and image.format in _DRAFT_FORMATS and min(width, height) >= 2 * request:
            drafted = image.draft("RGB", (request, request))
            if drafted is not None and image.size != (width, height):
                box = drafted[1]
        if netpbm.decodes(image):  # binary PGM/PPM samples Pillow would scale in Python: numpy, the same values
            decoded = netpbm.decode(image)
            image.close()
            image = decoded
        else:
            image.load()
    except MemoryError:
        raise
    except Exception as exc:  # Pillow signals bad data with OSError, SyntaxError, ValueError, EOFError...
        failure = exc
    if failure is not None:
        raise _fail(label, _decode_reason(failure)) from failure

    method = orientation_transpose(exif_orientation(image))
    source_size = transposed_size((width, height), method)
    if box is not None:
        box = transpose_box(box, image.size, method)
    result = ImageOps.exif_transpose(image) if method is not None else image
    try:
        result = to_rgb(result, alpha_background)
    except (ValueError, OSError) as exc:
        raise _fail(label, f"cannot convert colour mode {result.mode} to RGB ({exc})") from exc
    if result is image:
        keep = (
            image.format in _KEEP_AS_IS_FORMATS
            and not getattr(image, "is_animated", False)
            and getattr(image, "map", None) is None
        )
        if keep:
            return Decoded(image, source_size, box)
        result = image.copy()
    image.close()  # result is a separate in-memory image; release the file now, not at GC time
    return Decoded(result, source_size, box)


def load_image(
    path_or_file: ImageSource,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    *,
    alpha_background: tuple[int, int, int] | None = None,
) -> Image.Image:
    """Open an image file (path, file object or bytes) as an upright 8-bit RGB PIL image.

    - any Pillow mode becomes RGB as the reference does (``convert("RGB")``: alpha dropped), except
      that 16/32-bit greyscale is rescaled instead of clipped; pass `alpha_background` (an RGB
      tuple) to composite transparent images over that colour instead;
    - EXIF orientation is applied; animated GIF/WebP/APNG give their first frame;
    - files whose declared size exceeds `max_pixels` are refused before decoding (None: no cap);
    - `draft_size`: the size the caller will resize the shortest side to. A JPEG big enough is
      decoded at a reduced DCT scale (1/2, 1/4 or 1/8, Pillow's ``draft``) that keeps its shortest
      side >= ``DRAFT_MARGIN * draft_size`` (1.5x: the exact resize that follows still filters
      properly) - several times faster for camera photos. Other formats are never drafted.

    Raises `ImageLoadError` (a ValueError) naming the file and the reason: file not found,
    permission denied, empty file, "not a regular file (a FIFO)" (a socket, a device: a path is read
    as `regular_file.read_regular_file` reads, never waiting on one), not an image, truncated or
    corrupt data, too many pixels.
    A file object's ``name`` attribute, when present, is used as its label in messages.
    Truncated files are refused unless Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set.
    """
    return decode_image(path_or_file, max_pixels, draft_size, alpha_background=alpha_background).image
