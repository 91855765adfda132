"""Image decoding for datasets: files and archive members (zip, tar shards; bytes) both go
through `clipforge.image.load_image`, so orientation, colour and error reasons agree everywhere.

Zip archives are read member by member with one `ZipFile` handle per process: a handle opened
in the parent and inherited by forked DataLoader workers would share one file offset between
processes and return garbage, so the handle is keyed by pid and reopened after a fork.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from PIL import Image

__all__ = ["ZipReader", "load_bytes", "load_path"]


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


class ZipReader:
    """Picklable reader of members of one zip file, safe across DataLoader worker processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_handle": None, "_pid": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def handle(self) -> zipfile.ZipFile:
        if self._handle is None or self._pid != os.getpid():
            self._handle = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._handle

    def names(self) -> list[str]:
        return self.handle.namelist()

    def read(self, member: str) -> bytes:
        return self.handle.read(member)

    def load_image(self, member: str) -> Image.Image:
        try:
            data = self.read(member)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise _load_error(f"{self.path}::{member}", str(exc)) from exc
        return load_bytes(data, f"{self.path}::{member}")

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
