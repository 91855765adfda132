"""Which files count as images: the extensions Pillow (plus optional plugins) can open here.

Folder scanners use `IMAGE_EXTENSIONS` to decide what to index. It is a curated list (Pillow also
registers save-only or exotic formats such as PDF and EPS that must not be treated as photos),
intersected with what this installation can actually decode, so a ``.heic`` file is only listed
when pillow-heif is installed. Photos in a format this installation cannot read (an iPhone's ``.heic`` without
pillow-heif) are not silently left out: `unreadable_extension` names them for the scanner, which counts them,
and `reader_hint` says what would read them (`clipforge.library.scan` turns both into one notice).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Set
from functools import cached_property

from PIL import Image, features

__all__ = ["IMAGE_EXTENSIONS", "OPTIONAL_PLUGINS", "PHOTO_FORMATS", "is_image_path", "photo_formats", "reader_hint",
           "unreadable_extension"]

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
_OPENJPEG = "a Pillow built with OpenJPEG reads them"
_READERS = {
    ".heic": _HEIF, ".heif": _HEIF, ".hif": _HEIF,
    ".avif": "a Pillow built with libavif (11.3 or later), or `pip install pillow-avif-plugin`, reads them",
    ".jp2": _OPENJPEG, ".j2k": _OPENJPEG, ".jpx": _OPENJPEG,
    ".jxl": "clipforge reads no JPEG XL yet: convert them, e.g. with `djxl IMG.jxl IMG.png`",
}
"""Photo extensions a phone or camera writes that this installation may be unable to read, and what reads them.
Camera raw files (.cr2, .nef, .dng) are not here: they are the negatives beside the JPEGs, which rclip skips too."""


def unreadable_extension(path: object) -> str | None:
    """The lower-case extension of a photo this installation cannot read (``.heic`` without pillow-heif: a folder
    walk skipped half of an iPhone's photos without a word), else None (readable, or not a photo name)."""
    extension = _extension(path)
    return extension if extension in _READERS and extension not in IMAGE_EXTENSIONS else None


def reader_hint(extension: str) -> str:
    """What would read photos with `extension` (one of `unreadable_extension`'s answers), as a clause of a notice."""
    return _READERS.get(extension.lower(), "another image reader reads them")
