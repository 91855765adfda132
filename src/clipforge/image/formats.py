"""Which files count as images: the extensions Pillow (plus optional plugins) can open here.

Folder scanners use `IMAGE_EXTENSIONS` to decide what to index. It is a curated list (Pillow also
registers save-only or exotic formats such as PDF and EPS that must not be treated as photos),
intersected with what this installation can actually decode, so a ``.heic`` file is only listed
when pillow-heif is installed. Photos in a format this installation cannot read (an iPhone's ``.heic`` without
pillow-heif) are not silently left out: `unreadable_extension` names them for the scanner, which counts them,
and `reader_hint` says what would read them (`clipforge.library.scan` turns both into one notice). Camera RAW
files (`RAW_EXTENSIONS`) are named the same way: walks leave them out (the JPEG or HEIC a camera saves beside
each is the photo), and the notice counts them (audit 64: a card of RAW files only said "no image files").

A name is not the only clue: `iso_photo_format` reads an ISO-BMFF file's brand (HEIC/HEIF, AVIF), so a phone
photo is called what it is by the loader and the server alike, whatever its name (an iPhone HEIC exported as
``IMG_0004.JPG`` was "not an image" to the CLI), with `unreadable_photo_reason` saying what would read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Set
from functools import cached_property
from typing import NamedTuple

from PIL import Image, features

__all__ = ["IMAGE_EXTENSIONS", "ISO_PHOTOS", "OPTIONAL_PLUGINS", "PHOTO_FORMATS", "RAW_EXTENSIONS", "IsoPhoto",
           "is_image_path", "is_raw_extension", "iso_photo_format", "photo_formats", "reader_hint",
           "unreadable_extension", "unreadable_photo_reason"]

_CANDIDATES = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".bmp", ".dib",
    ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".jpx",
    ".avif", ".heic", ".heif", ".hif", ".mpo",
)


PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "DIB", "PPM", "ICO", "JPEG2000", "AVIF", "HEIF", "TGA")
"""Pillow's names of the formats of `_CANDIDATES` (MPO is the JPEG opener's; TGA, which has no signature, last):
the only openers `clipforge.image.loading` lets Pillow try. Pillow identifies a file by its bytes and tries
every opener it has, so a file named `x.jpg` in a photo folder could otherwise be FITS, PSD, SGI or one of
thirty other formats, some decoded in Python, none a photo."""


def photo_formats() -> tuple[str, ...]:
    """`PHOTO_FORMATS` whose openers Pillow has registered so far. Pillow's five common openers are always
    registered (`Image.preinit`); the rest once `Image.init()` has imported every plugin (30-80 ms), which
    `load_image` does only when a file is none of those registered."""
    Image.preinit()
    return tuple(name for name in PHOTO_FORMATS if name in Image.OPEN)


def _register_optional_plugins() -> tuple[str, ...]:
    """Register HEIF/AVIF openers when their packages are importable; return what was registered."""
    registered = []
    try:
        import pillow_heif  # type: ignore[import-not-found]

        pillow_heif.register_heif_opener()
        registered.append("pillow_heif")
    except Exception:  # optional: absent or broken installs must not break image loading
        pass
    if not features.check("avif"):  # Pillow >= 11.3 reads AVIF natively when built with libavif
        try:
            import pillow_avif  # type: ignore[import-not-found]  # noqa: F401  (registers on import)

            registered.append("pillow_avif")
        except Exception:
            pass
    return tuple(registered)


def _openable_extensions() -> frozenset[str]:
    Image.init()
    registered = Image.registered_extensions()
    # MPO (multi-picture JPEG from cameras and phones) has no opener of its own: the JPEG opener
    # recognises it, so it counts as openable whenever JPEG is.
    opener = {ext: "JPEG" if fmt == "MPO" else fmt for ext, fmt in registered.items()}
    return frozenset(ext for ext in _CANDIDATES if opener.get(ext) in Image.OPEN)


class _OpenableExtensions(Set[str]):
    """A read-only set of extensions, computed from Pillow's registry the first time it is read.

    `Image.init()` imports every Pillow plugin (30-80 ms); commands that never open an image
    (a text search, `models`, `--help`) should not pay for it just by importing the package.
    """

    @cached_property
    def _extensions(self) -> frozenset[str]:
        return _openable_extensions()

    def __contains__(self, item: object) -> bool:
        return item in self._extensions

    def __iter__(self) -> Iterator[str]:
        return iter(self._extensions)

    def __len__(self) -> int:
        return len(self._extensions)

    def __hash__(self) -> int:  # hashable and equal to the frozenset it stands for, as the name used to be
        return hash(self._extensions)

    @classmethod
    def _from_iterable(cls, it: Iterable[str]) -> frozenset[str]:  # `|`, `-`, `&`, `^` give plain frozensets
        return frozenset(it)

    def __repr__(self) -> str:
        return f"IMAGE_EXTENSIONS({sorted(self._extensions)})"


OPTIONAL_PLUGINS: tuple[str, ...] = _register_optional_plugins()
IMAGE_EXTENSIONS: Set[str] = _OpenableExtensions()


def _extension(path: object) -> str:
    name = str(path).lower()
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 and "/" not in name[dot:] else ""


def is_image_path(path: object) -> bool:
    """True when the file name ends in one of `IMAGE_EXTENSIONS` (case-insensitive). A name without an extension
    is answered without reading Pillow's registry (`Image.init()`: a text search need not pay for it)."""
    extension = _extension(path)
    return bool(extension) and extension in IMAGE_EXTENSIONS


_HEIF = "`pip install pillow-heif` lets clipforge read them"
_AVIF = "a Pillow built with libavif (11.3 or later), or `pip install pillow-avif-plugin`, reads them"
_OPENJPEG = "a Pillow built with OpenJPEG reads them"
_READERS = {
    ".heic": _HEIF, ".heif": _HEIF, ".hif": _HEIF,
    ".avif": _AVIF,
    ".jp2": _OPENJPEG, ".j2k": _OPENJPEG, ".jpx": _OPENJPEG,
    ".jxl": "clipforge reads no JPEG XL yet: convert them, e.g. with `djxl IMG.jxl IMG.png`",
}
"""Photo extensions a phone or camera writes that this installation may be unable to read, and what reads them."""

RAW_EXTENSIONS = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".rwl", ".raf", ".pef",
    ".srw", ".3fr", ".iiq", ".x3f", ".mrw", ".erf", ".kdc", ".dcr",
})
"""Camera RAW files: the negatives beside the JPEGs (or HEICs) a camera saves, which rclip skips too. Walks leave
them out and count them (`unreadable_extension`); clipforge decodes none (a DNG named outright is read as the
TIFF it is, often its small preview)."""

_RAW = "clipforge reads the JPEG/HEIC a camera saves beside them; export RAW-only shots to JPEG"


def is_raw_extension(extension: str) -> bool:
    """Whether `extension` (".cr2", any case) is a camera RAW file's (`RAW_EXTENSIONS`)."""
    return extension.lower() in RAW_EXTENSIONS


def unreadable_extension(path: object) -> str | None:
    """The lower-case extension of a photo a folder walk leaves out and says so: one this installation cannot read
    (``.heic`` without pillow-heif: a walk skipped half of an iPhone's photos without a word) or a camera RAW file
    (`RAW_EXTENSIONS`); else None (readable, or not a photo name)."""
    extension = _extension(path)
    if extension in RAW_EXTENSIONS:
        return extension
    return extension if extension in _READERS and extension not in IMAGE_EXTENSIONS else None


def reader_hint(extension: str) -> str:
    """What would read photos with `extension` (one of `unreadable_extension`'s answers), as a clause of a notice."""
    extension = extension.lower()
    return _RAW if extension in RAW_EXTENSIONS else _READERS.get(extension, "another image reader reads them")


class IsoPhoto(NamedTuple):
    """A phone photo format in an ISO-BMFF box that Pillow reads only with a plugin (or a build option)."""

    name: str  # for people
    article: str  # "a HEIC/HEIF photo", "an AVIF photo"
    extension: str  # the one `reader_hint` knows
    package: str  # what `pip install` brings


ISO_PHOTOS = {
    "AVIF": IsoPhoto("AVIF", "an", ".avif", "pillow-avif-plugin"),
    "HEIF": IsoPhoto("HEIC/HEIF", "a", ".heic", "pillow-heif"),
}
"""Pillow's format name -> how people call it and what reads it: an iPhone's and many Android phones' camera
default (HEIC/HEIF), and AVIF."""

_AVIF_BRANDS = frozenset({b"avif", b"avis"})  # AVIF's win: libavif also writes `mif1`/`miaf`
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1",
                          b"mif2", b"heif"})


def iso_photo_format(data: bytes) -> str | None:
    """"HEIF" or "AVIF" (a key of `ISO_PHOTOS`) when `data` starts with an ISO-BMFF `ftyp` box naming one of their
    brands (major or compatible), else None (a Live Photo's .MOV, an MP4): read from the first box only, nothing
    decoded. The loader and the server both ask it, so a photo is named by its bytes, not by its file name."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    end = min(len(data), size if 16 <= size <= 4096 else 16)
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}
    return "AVIF" if brands & _AVIF_BRANDS else "HEIF" if brands & _HEIF_BRANDS else None


def unreadable_photo_reason(fmt: str, reader: str = "this installation") -> str:
    """Why a photo of `fmt` (a key of `ISO_PHOTOS`) that `reader` has no opener for is not read, and what reads it:
    one wording for the loader's failure reason and the server's 415 (``reader="this server"``)."""
    photo = ISO_PHOTOS[fmt]
    return (f"{photo.article} {photo.name} photo (a phone camera's format), which {reader} cannot read: "
            f"{reader_hint(photo.extension)}")
