"""The thumbnail cache: a few sizes per photo, a byte budget, and only our own files served.

Anyone who can reach a server may ask for `/thumb?size=N`, with no token, so what one request
can make the library store must be small and bounded:

- *Size classes.* A request is served from the smallest class (64, 128, 256, 512, 1024, 2048
  pixels) at least as large, resized in memory to the size asked for; only class files are
  written. A photo costs at most six cache files, not one per size 16-1024 (18 MB).
- *A byte budget.* The cache evicts its least recently used files (a hit refreshes a file's
  mtime, at most once an hour) once it outgrows `CLIPFORGE_THUMB_CACHE_MB` (default 512 MB),
  down to 80% of it. The running total is kept in memory, counted once per process by a walk
  of the folder on the first write, and recounted by each eviction.
- *Only our own files.* Whoever can write into the library could plant `thumbs/ab/x.jpg ->
  /etc/passwd` (or link a shard folder elsewhere). A cached file is served only when its real
  path lies inside the real thumbs folder, it is opened without following a link, it is a
  regular file with one name, and it starts like a JPEG; anything else is rebuilt from the
  photo (and replaced, when the folder is ours) or, outside the library, left alone.
- *Nothing where others can plant.* A `thumbs` folder that is itself a link was written through (each shard's
  real path lies inside the *resolved* folder) but never counted or evicted (the walk followed no link), so
  anonymous requests filled its target past the budget, and `thumbs -> /tmp` put files where other users could
  plant or read them. Refusing every link made the ordinary "thumbs moved to a bigger disk" decode the original
  on each request (60 ms for a 24-megapixel JPEG). A link is followed when its target is a folder of this user
  that no other user can write into (`_not_private`): the cache reads, writes, counts and evicts under that
  resolved folder, so the budget holds there. Any other target (`/tmp`, world- or group-writable, another user's,
  missing) is neither read nor written: each thumbnail is made in memory, and the log says why once.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from clipforge.atomic import remove_stale_temps, write_bytes_atomic
from clipforge.library.dbfile import display_path

if TYPE_CHECKING:
    from PIL import Image, ImageCms

__all__ = ["MAX_ICC_BYTES", "THUMB_CLASSES", "ThumbCache", "cache_budget_bytes", "embedded_icc_profile", "size_class",
           "thumb_cache", "thumbnail_draft_size", "thumbnail_jpeg"]

THUMB_CLASSES = (64, 128, 256, 512, 1024, 2048)
_DEFAULT_BUDGET_MB = 512
_TOUCH_AFTER_S = 3600.0
_JPEG_MAGIC = b"\xff\xd8\xff"

log = logging.getLogger(__name__)


def size_class(size: int) -> int:
    """The cached size that serves a request for `size` (the smallest class at least as large)."""
    return next((c for c in THUMB_CLASSES if c >= int(size)), THUMB_CLASSES[-1])


def cache_budget_bytes() -> int:
    """`CLIPFORGE_THUMB_CACHE_MB` (default 512) in bytes; a value that is not a number >= 0 is refused."""
    raw = os.environ.get("CLIPFORGE_THUMB_CACHE_MB", "").strip()
    if not raw:
        return _DEFAULT_BUDGET_MB << 20
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0 or megabytes == float("inf"):
        raise ValueError(f"CLIPFORGE_THUMB_CACHE_MB must be a number of megabytes (0 or more), got {raw!r}")
    return int(megabytes * (1 << 20))


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


_SHARD = re.compile(r"[0-9a-f]{2}")
_CACHED = re.compile(r"[0-9a-f]{64}_[0-9]+\.jpg")
"""The shard folders and file names `_name` makes: nothing else under the cache's folder is the cache's."""


def _name(sha256: str, klass: int) -> str:
    """A class file's path inside the cache folder: `ab/<sha256>_<class>.jpg`."""
    return f"{sha256[:2]}/{sha256}_{int(klass)}.jpg"


def _not_private(folder: str) -> str | None:
    """Why the resolved folder of a linked `thumbs` is no place for the cache (the words of the log line), or None
    when it is a folder of this user that no other user may write into: another user could plant a file at a
    thumbnail's name (served as that photo's), or fill the folder, in one they may write."""
    try:
        info = os.stat(folder)
    except OSError:
        return "which is not a folder"
    if not stat.S_ISDIR(info.st_mode):
        return "which is not a folder"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"a folder of another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"a folder other users can write into (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


class ThumbCache:
    """The thumbnails of one library folder (`thumb_cache(folder)` shares one per folder and process)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes of cached files, counted on the first write
        self._counted = ""  # the real folder `_total` counts
        self._said_linked = False  # the log said once that a linked thumbs folder is not cached

    def path(self, sha256: str, klass: int) -> Path:
        return self.folder / _name(sha256, klass)

    def get(self, sha256: str, size: int, make: Callable[[int], bytes]) -> bytes:
        """JPEG bytes, longest side at most `size`: the class file (built by `make(klass)` when absent or not
        ours), resized in memory when `size` is not itself a class."""
        klass = size_class(size)
        home = self._home()
        target = None if home is None else Path(home) / _name(sha256, klass)
        data = None if target is None else self._read(target, home)
        if data is None:
            data = make(klass)
            if target is not None:
                self._store(target, home, data)
        return data if klass == int(size) else _shrink(data, int(size))

    # -- reading ----------------------------------------------------------------------------
    def _home(self) -> str | None:
        """The real folder the cache lives in: the thumbs folder's, or, when that is a link, the folder it resolves
        to if this user owns it and no one else may write into it; None (the log says why, once) otherwise."""
        real = os.path.realpath(self.folder)
        if not os.path.islink(self.folder):
            return real
        why = _not_private(real)
        if why is None:
            return real
        with self._lock:
            if self._said_linked:
                return None
            self._said_linked = True
        log.warning("thumbnails are not cached: %s is a link to %s, %s, and no thumbnail is written where another "
                    "user could plant files (link it to a folder of your own that only you can write into to cache "
                    "them); each is made from its photo when asked for",
                    display_path(os.fspath(self.folder)), display_path(real), why)
        return None

    @staticmethod
    def _ours(target: Path, home: str) -> bool:
        """Whether `target`'s folder really is inside `home`, its shard no link elsewhere (the one rule `_read` and
        `_store` share: what is not ours is never read or written; `_files` counts no link)."""
        return _inside(os.path.realpath(target.parent) + os.sep + "x", home)

    def _read(self, target: Path, home: str) -> bytes | None:
        """The cached bytes, or None when absent or not a file this cache wrote (see module docstring)."""
        if not self._ours(target, home):
            return None
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(target, flags)
        except OSError:  # absent, or a symlink (ELOOP)
            return None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                return None
            data = f.read()
        if not data.startswith(_JPEG_MAGIC):
            return None
        if time.time() - info.st_mtime > _TOUCH_AFTER_S:  # recently used: evicted last
            with contextlib.suppress(OSError):
                os.utime(target)
        return data

    # -- writing and the budget -------------------------------------------------------------
    def _store(self, target: Path, home: str, data: bytes) -> None:
        if not self._ours(target, home):
            return  # a shard folder that is a link: never write through it
        try:  # the rename replaces a planted link or hard link by our own file
            write_bytes_atomic(target, data)
        except OSError:  # a read-only library or a full disk still serves thumbnails, uncached
            return
        self._account(home, len(data))

    def _account(self, home: str, added: int) -> None:
        budget = cache_budget_bytes()
        with self._lock:
            if self._total is None or self._counted != home:  # first write, or the link now leads elsewhere
                self._total, self._counted = sum(size for _, size, _ in self._files(home)), home
            else:
                self._total += added
            if self._total > budget:
                self._total = self._evict(home, int(budget * 0.8))

    @staticmethod
    def _files(home: str) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every cached file under `home`: only names this cache writes (`_name`:
        ``ab/<sha256>_<class>.jpg``), so a linked folder's other files are never counted or evicted (review 63: a
        ``thumbs`` linked to a photo folder had its oldest ``IMG_*.jpg`` deleted past the budget); links are not
        followed, temps of dead writers removed from the cache's shards alone."""
        out: list[tuple[float, int, Path]] = []
        if not os.path.isdir(home):
            return out
        for shard in os.scandir(home):
            if not (_SHARD.fullmatch(shard.name) and shard.is_dir(follow_symlinks=False)):
                continue
            with contextlib.suppress(OSError):
                remove_stale_temps(shard.path)
                for entry in os.scandir(shard.path):
                    if _CACHED.fullmatch(entry.name) and entry.name.startswith(shard.name) \
                            and entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        out.append((info.st_mtime, info.st_size, Path(entry.path)))
        return out

    def _evict(self, home: str, keep: int) -> int:
        """Delete least recently used files under `home` until at most `keep` bytes remain; returns the bytes left."""
        files = sorted(self._files(home))
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= keep:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                total -= size
        return total


def _shrink(data: bytes, size: int) -> bytes:
    """A class file resized in memory to a size between classes (it is sRGB already: no profile to apply)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return thumbnail_jpeg(image, size)


# -- making a thumbnail (`media.thumbnail_bytes` for a class file, `_shrink` for a size between classes) -------
_PANORAMA = 2
"""The longest aspect ratio (2:1) whose thumbnail is drafted for its class, as every photo was (`thumbnail_draft_size`)."""

MAX_ICC_BYTES = 1 << 16
"""Largest embedded colour profile applied (64 KiB): Display P3 is 536 bytes, Adobe RGB 560, a matrix/TRC profile
with 4096-entry curves some 25 KB; a bigger one is ignored, not parsed for every thumbnail."""

_SHAPER_TAGS = (b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC")
_PIPELINE_TAGS = (b"A2B", b"B2A", b"D2B", b"B2D")
_MAX_ICC_TAGS = 64


def _matrix_shaper(profile: bytes) -> bool:
    """Whether `profile` is a plain matrix/TRC RGB profile (three primaries and three tone curves: a camera's, a
    phone's Display P3, Adobe RGB), read from its tag table alone. Only those are applied: lcms prefers an
    A2B/D2B pipeline where one is present, and a 241 KB profile whose D2B0 chained 30,000 matrix stages took 84 s of
    CPU to build its transform, for one anonymous thumbnail request (review 64)."""
    if len(profile) < 132:
        return False
    count = int.from_bytes(profile[128:132], "big")
    if not 0 < count <= _MAX_ICC_TAGS or len(profile) < 132 + 12 * count:
        return False
    tags = {profile[132 + 12 * i:136 + 12 * i] for i in range(count)}
    return all(tag in tags for tag in _SHAPER_TAGS) and not any(tag[:3] in _PIPELINE_TAGS for tag in tags)


def thumbnail_draft_size(klass: int, width: int | None, height: int | None) -> int:
    """The `draft_size` a `klass` thumbnail of a `width` x `height` photo is decoded for (`load_image`: a big JPEG
    at the DCT scale that keeps its short side >= 1.5x it). The class itself for a photo up to 2:1, exactly as
    every photo was (both sides >= 1.5x the class); for a longer one (a panorama), twice the thumbnail's short side
    (rounded up), so the decode is still about 3x the thumbnail on each side, never under 1.5x. A 30000x3000
    panorama's 1024 class (1024x102) decoded all 90 megapixels (no scale keeps 3000 pixels >= 1.5 x 1024), 0.44 s
    and 399 MB for an anonymous request; now 1/8 of each side (3750x375), the scale of a 2:1 photo of the same
    long side: 0.13 s, 58 MB. Without a recorded size, the class."""
    if not width or not height:
        return klass
    short, long = sorted((int(width), int(height)))
    return min(klass, _PANORAMA * math.ceil(klass * short / long))


def thumbnail_jpeg(image: Image.Image, size: int, icc_profile: bytes | None = None) -> bytes:
    """`image` shrunk (never enlarged) to fit `size` x `size`, in sRGB, as the JPEG every thumbnail is: the one
    place thumbnails are resized and encoded. `icc_profile` (the photo's embedded one) is applied after the
    resize, on the thumbnail's pixels only (`_to_srgb`); the JPEG carries no profile and no metadata."""
    image.thumbnail((size, size))
    image = _to_srgb(image.convert("RGB"), icc_profile)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def embedded_icc_profile(data: bytes) -> bytes | None:
    """The colour profile embedded in an image file's bytes, read from its header (call it once the file has been
    decoded by `load_image`, whose structure checks bound what parsing it costs); None when there is none, or when
    the header cannot be read again. `load_image`'s image keeps it only in some modes (compositing over a
    background and 16-bit greyscale drop it)."""
    from clipforge.image.formats import photo_formats
    from clipforge.image.loading import open_header

    try:  # the openers `load_image` tried (all registered by now if it needed more than the common five), as it
        # opens: no Pillow bomb warning to silence (a `catch_warnings` per call raced between threads, audit 65)
        with open_header(io.BytesIO(data), photo_formats()) as header:
            profile = header.info.get("icc_profile")
    except Exception:  # a header parser's own error type; the photo decoded, so this costs only the colours
        return None
    return profile if isinstance(profile, bytes) and profile else None


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """The RGB `image`, whose numbers are in `icc_profile`'s colour space, converted to sRGB by ImageCms: a Display
    P3 photo (every iPhone's) had its P3 numbers shown as sRGB, washed out. Unchanged (today's thumbnail, never an
    error) when there is no profile, or it is over `MAX_ICC_BYTES`, does not parse, is not an RGB profile (a CMYK
    or grey photo was converted to RGB by Pillow's formulas already) or the conversion fails."""
    if not icc_profile or len(icc_profile) > MAX_ICC_BYTES or not _matrix_shaper(icc_profile):
        return image
    from PIL import ImageCms

    try:
        transform = _transform_to_srgb(icc_profile)
        return image if transform is None else ImageCms.applyTransform(image, transform)
    except MemoryError:
        raise
    except Exception as exc:  # ImageCms.PyCMSError, OSError, ValueError, TypeError ... from a malformed profile
        log.debug("thumbnail colour profile ignored (%s: %s)", type(exc).__name__, exc)
        return image


@functools.lru_cache(maxsize=16)
def _transform_to_srgb(icc_profile: bytes) -> ImageCms.ImageCmsTransform | None:
    """The transform from `icc_profile` (an RGB matrix/TRC profile) to sRGB, built once per profile (~3 ms: a
    library's photos share a handful, one per camera), or None when the profile is not an RGB one."""
    from PIL import ImageCms

    source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    if source.profile.xcolor_space.strip() != "RGB":
        return None
    return ImageCms.buildTransform(source, _srgb_profile(), "RGB", "RGB")


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


_CACHES: dict[str, ThumbCache] = {}
_CACHES_GUARD = threading.Lock()


def thumb_cache(folder: Path) -> ThumbCache:
    """The one cache object of `folder` in this process (so its byte count is shared)."""
    with _CACHES_GUARD:
        return _CACHES.setdefault(os.path.abspath(folder), ThumbCache(Path(folder)))
