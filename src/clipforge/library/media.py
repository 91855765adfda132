"""Image bytes, thumbnails and uploads, always addressed by record, never by a client's path.

A server hands out `/images/{id}` and `/thumb/{id}`; the path comes from the database, so a
request can only ever reach files the library indexed - and only while they still hold the
bytes that were indexed: an original is read as a regular file and served only if its size
and sha256 match the record (a file swapped for another, or for a link to /etc/passwd, is
refused until `index add --rehash` reads it again: its size and time may be the indexed ones, which a plain
`index add` trusts without reading). The refusal does not mark the record for the next add: a GET, from any
client the server lets in, never writes to the library (which may also be read-only to the server). Thumbnails
are cached by content hash (moving or duplicating a photo reuses its thumbnail) in a few size classes under a
byte budget, and a cached file is served only if it is one this library wrote (see `clipforge.library.thumbs`).
A thumbnail is served only while its original would be: a cache hit used to skip the file's checks, so a
deleted photo, one swapped for a FIFO or a link, and a second id holding a cached photo's bytes over a missing
file all kept their thumbnails. Hashing the photo on every hit would cost what the cache saves (a gallery of 50
five-megabyte photos: 250 MB read and hashed per view), so a hit whose file is the very one `read_original`
verified in this process - same device, inode, size, mtime and ctime: a swap changes the inode and a rewrite
the ctime, which no user can set back - reads nothing; any other is verified by `read_original` itself, so both
routes refuse alike.
Uploads are sniffed by decoding them - the client's content type is not trusted, and its file
name is kept only as a cleaned label - and stored under the content hash with the extension of
the format actually found.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from clipforge.atomic import remove_stale_temps, write_bytes_atomic
from clipforge.library.dbfile import display_path, not_writable
from clipforge.library.lock import library_lock
from clipforge.library.paths import LibraryPaths
from clipforge.library.store import ImageRecord
from clipforge.library.thumbs import embedded_icc_profile, thumb_cache, thumbnail_draft_size, thumbnail_jpeg
from clipforge.regular_file import FileTooLargeError, NotRegularFileError, read_regular_file

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["THUMB_SIZES", "ChangedFileError", "clean_upload_name", "forget_verified", "image_bytes", "read_original", "uploads_lock",
           "store_upload", "thumbnail_bytes"]

THUMB_SIZES = (16, 2048)  # inclusive bounds on the requested longest side
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff",
               "MPO": ".jpg", "AVIF": ".avif", "HEIF": ".heic"}  # AVIF uploads were kept as `.img`


class ChangedFileError(ValueError):
    """An indexed file no longer holds the bytes that were indexed (`reason` says it without the path)."""

    def __init__(self, record: ImageRecord) -> None:
        # --rehash: a file swapped for another of the same size and time is skipped unread by a plain add
        self.reason = "changed since it was indexed (run `clipforge index add --rehash` on it to read it again)"
        super().__init__(f"image {record.id}'s file {self.reason}")


def read_original(record: ImageRecord) -> bytes:
    """The bytes of an indexed photo, only while they are the indexed ones: FileNotFoundError when gone,
    NotRegularFileError (a ValueError) for a FIFO or a device, ChangedFileError when the size or the
    sha256 differs from the record (swapped for another file or for a link elsewhere)."""
    if record.status != "ok":
        raise ValueError(f"image {record.id} ({record.path}) was not indexed: {record.error}")
    before = _stamp(record.path)
    try:
        data = read_regular_file(record.path, max_bytes=record.size)  # a bigger file is refused unread
    except FileTooLargeError:
        raise ChangedFileError(record) from None
    if len(data) != record.size or not record.sha256 or hashlib.sha256(data).hexdigest() != record.sha256:
        raise ChangedFileError(record)
    if before is not None and _stamp(record.path) == before:  # not swapped while it was read
        _remember(record, before)
    return data


# -- files verified in this process (a thumbnail hit's check) ------------------------------------------------
_VERIFIED_MAX = 20_000
"""Files remembered (about 600 bytes each, 12 MB in all): a gallery's pages; an older one is hashed once more."""

_verified: OrderedDict[tuple[str, str, int], tuple[int, ...]] = OrderedDict()
_verified_lock = threading.Lock()


def _stamp(path: str) -> tuple[int, ...] | None:
    """What identifies the file `path` leads to now (links followed, as `read_original` opens it): device, inode,
    size, mtime and ctime in nanoseconds; None when it is absent or not a regular file. Rewriting a file changes
    its ctime (to the file system clock's tick), which no user can set back, and swapping it (rename, link)
    changes its inode."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _key(record: ImageRecord) -> tuple[str, str, int]:
    return record.path, record.sha256 or "", record.size


def _remember(record: ImageRecord, stamp: tuple[int, ...]) -> None:
    with _verified_lock:
        _verified[_key(record)] = stamp
        _verified.move_to_end(_key(record))
        while len(_verified) > _VERIFIED_MAX:
            _verified.popitem(last=False)


def _still_verified(record: ImageRecord) -> bool:
    """Whether `record`'s file is the one `read_original` last verified for it (one stat, nothing read)."""
    stamp = _stamp(record.path)
    with _verified_lock:
        if stamp is None or _verified.get(_key(record)) != stamp:
            return False
        _verified.move_to_end(_key(record))
    return True


def forget_verified() -> None:
    """Forget every verified file, as a process just started would (tests)."""
    with _verified_lock:
        _verified.clear()


def _probe(data: bytes) -> Image.Image:
    """An image file's header, opened as the loader opens one (`image.loading.open_header`, photo formats): Pillow's
    own `Image.open` warned DecompressionBombWarning on every original or upload of 89-179 megapixels (under
    clipforge's cap) and refused one past twice a global another library lowered (review 65)."""
    from clipforge.image.formats import photo_formats
    from clipforge.image.loading import open_header

    return open_header(io.BytesIO(data), photo_formats())


def image_bytes(record: ImageRecord) -> tuple[bytes, str]:
    """(file bytes, MIME type) of an indexed image (see `read_original` for what is refused)."""
    from PIL import Image

    from clipforge.image.costly import refusal

    data = read_original(record)
    if refusal(data) is not None:  # indexed before such files were refused: its header alone costs seconds
        return data, "application/octet-stream"
    try:  # the header only, as the loader opens one (`open_header`): no Pillow bomb warning per request
        with _probe(data) as probe:
            mime = Image.MIME.get(probe.format or "", "application/octet-stream")
    except Exception:
        mime = "application/octet-stream"
    return data, mime


def thumbnail_bytes(paths: LibraryPaths, record: ImageRecord, size: int = 256,
                    max_pixels: int | None = None) -> bytes:
    """A JPEG whose longest side is at most `size` (never enlarged), cached by size class under the
    library's thumbs folder (see `clipforge.library.thumbs`). Refused, with `read_original`'s errors, whenever
    the original is: a cached one is served only while the record's file is the one verified (module docstring)."""
    if not THUMB_SIZES[0] <= int(size) <= THUMB_SIZES[1]:
        raise ValueError(f"thumbnail size must be between {THUMB_SIZES[0]} and {THUMB_SIZES[1]}, got {size}")
    if record.status != "ok" or not record.sha256:
        raise ValueError(f"image {record.id} ({record.path}) was not indexed: {record.error}")
    original = None if _still_verified(record) else read_original(record)  # raises what the original route does

    def make(klass: int) -> bytes:
        from clipforge.image import load_image

        # A big JPEG is decoded at a reduced DCT scale, not whole (`thumbnail_draft_size`: both sides >= 1.5 x the
        # class, the preprocessing's own margin; a panorama's about 3 x its thumbnail): a 24-megapixel photo's
        # 256-pixel thumbnail decodes 1/64 of its pixels, 0.09 -> 0.04 s with reading and verifying the original,
        # for a route anyone may call. Transparency is shown over white, as image viewers show it (the RGB under
        # alpha 0 may be what someone erased; embeddings drop alpha, as the reference does), and the photo's colour
        # profile is applied (`thumbnail_jpeg`).
        data = original if original is not None else read_original(record)
        draft = thumbnail_draft_size(klass, record.width, record.height)
        limit = {"max_pixels": max_pixels} if max_pixels else {}
        image = load_image(io.BytesIO(data), draft_size=draft, alpha_background=(255, 255, 255), **limit)
        return thumbnail_jpeg(image, klass, embedded_icc_profile(data))

    return thumb_cache(paths.thumbs_dir).get(record.sha256, int(size), make)


_CHECK_DRAFT_SIZE = 64
"""The size an upload is decoded for to be checked (`store_upload`): any reduced scale reads every byte."""

_NAME_BYTES = 120  # of the stem, in UTF-8: far below NAME_MAX (255) with room for the extension


_SLASH_LIKE = frozenset("\uff0f\uff3c\ufe68\u2571\u2572\u244a\u29f8\u29f9\u2044\u2215\u2216\u29f5")
"""Non-ASCII characters drawn as a slash or backslash (full-width ／ ＼, small ﹨, box-drawing ╱ ╲, ...): a
name holding one reads as a path to whoever looks at it."""


_SLASH_NAMED = re.compile(r"\b(SOLIDUS|SLASH)\b")
"""What Unicode calls a character drawn as a slash: every such name says SOLIDUS or SLASH."""


def _kept(char: str) -> bool:
    """Whether `char` may stay in a stored upload's name. ASCII: letters, digits and `` -_.,()+@`` only (no
    quote, colon, percent or anything a shell or header reads). Beyond ASCII: printable letters, digits, marks
    and punctuation (Chinese and Japanese names use （）【】《》「」、，。！？：), and symbols such as emoji,
    but no space other than " ", no format or control character (a bidi override reverses how a name reads; a
    zero-width joiner hides in a name unseen), no maths sign (＜ ＞ ｜ ∕ mimic what file systems forbid) and
    nothing drawn as a slash (`_SLASH_LIKE`)."""
    if char.isascii():
        return char.isalnum() or char in " -_.,()+@"
    if not char.isprintable() or char in _SLASH_LIKE or _SLASH_NAMED.search(unicodedata.name(char, "")):
        return False  # by name too: ⼃ KANGXI RADICAL SLASH, ̸ COMBINING LONG SOLIDUS OVERLAY, 🙼, ⹊ (review)
    return unicodedata.category(char)[0] in "LNMP" or unicodedata.category(char) in ("So", "Sc", "Sk")


_ZWJ = "\u200d"


def _joins_emoji(text: str, i: int) -> bool:
    """Whether `text[i]` is a zero-width joiner inside an emoji sequence (👨‍👩‍👧: a symbol, its variation selector
    or skin tone, then ZWJ, then a symbol): shown as one glyph, not hidden, so kept (it was ``_``, splitting a
    family emoji into three). A ZWJ anywhere else is still replaced."""
    if text[i] != _ZWJ or i == 0 or i + 1 >= len(text):
        return False
    before, after = text[i - 1], text[i + 1]
    skin_tone = "\U0001F3FB" <= before <= "\U0001F3FF"  # the emoji modifiers; other Sk (^, `) are no emoji
    emoji_before = unicodedata.category(before) == "So" or skin_tone or before == "\ufe0f"
    return emoji_before and unicodedata.category(after) == "So"


def clean_upload_name(filename: str | None) -> str | None:
    """The stem of a client's file name, safe to keep as a file name: its last path component, NFC, the
    characters `_kept` allows (any other, such as controls, separators and ASCII quotes, as ``_``), no leading
    dot, at most 120 UTF-8 bytes. None when nothing is left. Full-width punctuation is kept: 上传 测试（一）.jpg
    was stored as 上传 测试_一.jpg while ASCII () were kept."""
    if not filename:
        return None
    name = unicodedata.normalize("NFC", str(filename).replace("\\", "/").rsplit("/", 1)[-1])
    stem = os.path.splitext(name)[0] if "." in name.lstrip(".") else name
    stem = "".join(c if _kept(c) or _joins_emoji(stem, i) else "_" for i, c in enumerate(stem))
    stem = stem.strip(" ._")
    # whole characters within the byte budget (no surrogate is left to encode: they are not printable)
    stem = stem.encode("utf-8")[:_NAME_BYTES].decode("utf-8", "ignore")
    stem = stem.rstrip(" ._" + _ZWJ)  # a joiner the cut left at the end joins nothing: unseen (review 63)
    return stem or None


def _holds(path: Path, data: bytes) -> bool:
    """Whether `path` is a regular file (not a link) holding exactly `data`: one stat, then one read only when the
    size matches. A partial file (a copy cut short, a file edited by hand) is not the upload."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size != len(data):
            return False
        return read_regular_file(path, max_bytes=len(data)) == data
    except (OSError, NotRegularFileError, FileTooLargeError):  # gone or swapped since the stat
        return False


def _existing_upload(folder: Path, sha: str, data: bytes) -> Path | None:
    """The finished file already holding these bytes (either layout), if any. A hidden name is never one:
    `clean_upload_name` strips leading dots, so it is a writer's temporary (`clipforge.atomic`), perhaps another
    server's still being written, or one a `kill -9` left half written (it was taken for the upload: indexed under
    its vanishing name, or answered "created" for good while the photo was never stored)."""
    named = folder / sha
    candidates: list[Path] = []
    if named.is_dir() and not named.is_symlink():
        candidates += sorted(named.iterdir())
    candidates += sorted(folder.glob(f"{sha}.*"))
    return next((p for p in candidates if not p.name.startswith(".") and _holds(p, data)), None)


_UPLOADS_LOCK = "uploads.lock"
"""The lock file, beside the library's ``library.lock``, that writers of uploads take turns on (`store_upload`): not
the library's lock, which an `index add` holds for its whole run, while an upload's turn lasts a lookup and a write."""


@contextlib.contextmanager
def uploads_lock(paths: LibraryPaths) -> Iterator[None]:
    """The turn of one writer of the uploads folder (`store_upload`, the server forgetting a failed upload's
    files), across processes, waiting at most SQLite's busy timeout: a holder suspended (Ctrl-Z, a hung disk)
    made a server's uploads and searches wait until it resumed (review 63). Past it, `LibraryBusyError` (503)."""
    from clipforge.library.dbfile import BUSY_TIMEOUT_S, LibraryBusyError
    from clipforge.library.lock import LockWaitTimeout

    try:
        with library_lock(paths.root / _UPLOADS_LOCK, timeout_s=BUSY_TIMEOUT_S):
            yield
    except LockWaitTimeout as exc:
        who = "another process" if exc.pid is None else f"another process (pid {exc.pid}: {exc.record or '?'})"
        raise LibraryBusyError(f"library {display_path(os.fspath(paths.root))} is busy: {who} has held its uploads "
                               f"for {exc.waited_s:g} s; the image was not stored; try again when it finishes") from None


def store_upload(paths: LibraryPaths, data: bytes, max_pixels: int | None = None,
                 filename: str | None = None) -> Path:
    """Check that `data` is a decodable image and keep it in the library's uploads folder.

    The file is ``uploads/<sha[:2]>/<sha256>/<name><ext>``: the content hash keeps two uploads apart and
    finds the same bytes again, `name` is the client's `filename` cleaned by `clean_upload_name` (so the
    photo shows as ``holiday.png``, not a hash), and `ext` comes from the format actually decoded. Without
    a usable name it is ``uploads/<sha[:2]>/<sha256><ext>``. Bytes already stored are not stored again: the
    finished file holding them is returned (never a writer's temporary, see `_existing_upload`), and writers
    take turns on ``uploads.lock`` so two processes storing the same bytes at once store one file. The
    temporaries of writers killed mid-upload (`atomic.remove_stale_temps`) go when an upload lands beside them.
    Raises `clipforge.image.ImageLoadError` (a ValueError) saying why when `data` is not an image, and
    `dbfile.LibraryWriteError` (an OSError, errno EACCES) naming what is read-only when this user may not write
    the library: the error a refused database write raises, which the REST answers 403 read_only_library.
    """

    from clipforge.image import load_image

    # Decoded to be checked (raises with the reason), a big JPEG at a reduced DCT scale: its whole entropy-coded
    # stream is still read, so truncation and corruption are caught, for 1/64 of the pixels (a 48-megapixel
    # upload through POST /api/images: 0.27 -> 0.12 s); the index then reads it as it reads every file.
    if max_pixels:
        load_image(io.BytesIO(data), max_pixels=max_pixels, draft_size=_CHECK_DRAFT_SIZE)
    else:
        load_image(io.BytesIO(data), draft_size=_CHECK_DRAFT_SIZE)
    with _probe(data) as probe:
        extension = _EXTENSIONS.get(probe.format or "", ".img")
    sha = hashlib.sha256(data).hexdigest()
    folder = paths.uploads_dir / sha[:2]
    stem = clean_upload_name(filename)
    target = folder / sha / f"{stem}{extension}" if stem else folder / f"{sha}{extension}"
    # Writers of uploads take turns (other processes too: two servers on one library), from the look for these
    # bytes to the rename of the new file: the second finds the first's file instead of storing them again. (A
    # read-only library is not locked: the write below says why it cannot be stored.)
    with uploads_lock(paths):
        for where in (folder / sha, folder):  # what writers killed mid-upload left; a live writer's stays
            with contextlib.suppress(OSError):
                remove_stale_temps(where, hostless_by_pid=False)
        existing = _existing_upload(folder, sha, data) if folder.is_dir() else None
        if existing is not None:
            return existing
        try:
            write_bytes_atomic(target, data)  # the umask decides who may read it, as for any file we write
        except OSError as exc:  # a read-only library: its own write error (a bare PermissionError named a folder)
            refused = not_writable(paths.root, exc)
            if refused is None:
                raise
            raise refused from exc
    return target
