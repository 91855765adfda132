"""Image decoding for datasets: files and archive members (zip, tar shards; bytes) both go
through `clipforge.image.load_image`, so orientation, colour and error reasons agree everywhere.

Zip archives are read member by member with one `ZipFile` handle per process: a handle opened
in the parent and inherited by forked DataLoader workers would share one file offset between
processes and return garbage, so the handle is keyed by pid and reopened after a fork.

A member is read with a bound (audit 62): one that declares more than `MAX_MEMBER_BYTES` uncompressed is a bad
sample before a byte of it is inflated (a 2 MB zip holding FFD8 + 2 GiB of zeros took `eval zeroshot` to 4.5 GB),
and no more than the bound is ever read of one. The member list names each member once: `ZipFile.namelist()` keeps
a repeated name and `read(name)` returns its last copy every time, so the image was scored twice; names that are
absolute or climb with '..' are left out. Both are counted in `ZipReader.skipped` and one warning line.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path

from PIL import Image

from clipforge.image.loading import MAX_IMAGE_FILE_BYTES
from clipforge.regular_file import file_size_text

__all__ = ["MAX_MEMBER_BYTES", "ZipReader", "load_bytes", "load_path"]

MAX_MEMBER_BYTES = MAX_IMAGE_FILE_BYTES
"""The most read of one zip member: the bound every image file is read with."""

_UNSAFE = "absolute or '..' path"
_REPEATED = "repeated name"
_SHOWN = 5  # names listed in the warning before "..."


def load_path(path: str | Path) -> Image.Image:
    from clipforge.image import load_image

    return load_image(path)


def _load_error(name: str, reason: str) -> Exception:
    from clipforge.image import ImageLoadError

    return ImageLoadError(f"cannot load image {name}: {reason}", path=name, reason=reason)


def load_bytes(data: bytes, name: str) -> Image.Image:
    """Decode encoded image bytes (an archive member called `name`) like a file on disk."""
    from clipforge.image import load_image

    buffer = io.BytesIO(data)
    buffer.name = name  # load_image names file objects by their .name in its errors
    return load_image(buffer)


class MemberTooLargeError(ValueError):
    """A zip member over `MAX_MEMBER_BYTES`; the message is the reason, without the zip's name."""

    def __init__(self, declared: int, inflated_past: bool = False) -> None:
        limit = file_size_text(MAX_MEMBER_BYTES)
        if inflated_past:  # it declared less than comes out of it
            super().__init__(f"member inflates to more than the {limit} read at most, although it declares "
                             f"{file_size_text(declared)}")
        else:  # refused by what it declares, before a byte is inflated
            super().__init__(f"member is {file_size_text(declared)} uncompressed, larger than the {limit} read at most")


def _is_unsafe(name: str) -> bool:
    """Whether a member name is absolute (/x, \\x, C:x) or climbs out of the archive ('..' as a part)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts


def _listing(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    return ", ".join(unique[:_SHOWN]) + (f", ... ({len(unique)} names)" if len(unique) > _SHOWN else "")


def _skipped_line(path: Path, unsafe: list[str], repeated: list[str]) -> str:
    parts = []
    if repeated:
        n = len(repeated)
        parts.append(f"{n} repeated member name{'s' if n != 1 else ''} read once ({_listing(repeated)}; "
                     f"{'its' if len(set(repeated)) == 1 else 'each'} last copy is what is read)")
    if unsafe:
        n = len(unsafe)
        parts.append(f"{n} member{'s' if n != 1 else ''} with an {_UNSAFE} left out ({_listing(unsafe)})")
    return f"{path}: " + "; ".join(parts)


class ZipReader:
    """Picklable reader of members of one zip file, safe across DataLoader worker processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: zipfile.ZipFile | None = None
        self._pid: int | None = None
        self.skipped: list[tuple[str, str]] = []

    def __getstate__(self) -> dict:
        return {"path": self.path, "_handle": None, "_pid": None, "skipped": self.skipped}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def handle(self) -> zipfile.ZipFile:
        if self._handle is None or self._pid != os.getpid():
            self._handle = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._handle

    def names(self) -> list[str]:
        """Each member name once, in the zip's order, without absolute or '..' names; what was left out is
        `self.skipped` ((name, reason) per entry left out) and is said in one warning line."""
        seen: set[str] = set()
        names: list[str] = []
        unsafe, repeated = [], []
        for name in self.handle.namelist():
            if _is_unsafe(name):
                unsafe.append(name)
            elif name in seen:
                repeated.append(name)
            else:
                seen.add(name)
                names.append(name)
        self.skipped = [(n, _UNSAFE) for n in unsafe] + [(n, _REPEATED) for n in repeated]
        if self.skipped:
            warnings.warn(_skipped_line(self.path, unsafe, repeated), stacklevel=2)
        return names

    def read(self, member: str) -> bytes:
        """The bytes of `member`, at most `MAX_MEMBER_BYTES` of them (`MemberTooLargeError` past that: by its
        declared size before anything is inflated, and by what comes out, for a member that declares less)."""
        info = self.handle.getinfo(member)
        if info.file_size > MAX_MEMBER_BYTES:
            raise MemberTooLargeError(info.file_size)
        with self.handle.open(member) as f:  # by name: its errors name the member, not a ZipInfo
            data = f.read(MAX_MEMBER_BYTES + 1)
        if len(data) > MAX_MEMBER_BYTES:  # CPython's zipfile stops at the declared size (a CRC error): not relied on
            raise MemberTooLargeError(info.file_size, inflated_past=True)
        return data

    def load_image(self, member: str) -> Image.Image:
        label = f"{self.path}::{member}"
        try:
            data = self.read(member)
        except MemberTooLargeError as exc:
            raise _load_error(label, str(exc)) from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a CRC or size that does not match its bytes
            raise _load_error(label, f"damaged zip member ({exc})") from exc
        except (KeyError, OSError, RuntimeError) as exc:  # RuntimeError: encrypted; NotImplementedError: its method
            raise _load_error(label, str(exc)) from exc
        return load_bytes(data, label)

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
