"""What the store hands out for one file: `ImageRecord` (a row of `images`) and `FileState`.

Plain frozen values, so a record read on one thread can be passed to any other and never
changes under its reader. File names are stored losslessly (text when valid UTF-8, else raw
bytes, see `clipforge.library.dbfile.to_db`); a record always holds them as `str`, and
`to_dict` shows the ones that are not UTF-8 with backslash escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from clipforge.library.dbfile import from_db, path_text

__all__ = ["IMAGE_COLUMNS", "FileState", "ImageRecord", "image_record"]


@dataclass(frozen=True)
class ImageRecord:
    """One file known to the library (status 'ok' = embedded, 'failed' = `error` says why)."""

    id: int
    path: str
    sha256: str | None
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    added_at: float
    status: str
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; a path that is not valid UTF-8 is ``b64:`` + base64 of its bytes (`dbfile.path_text`): shown
        with backslash escapes, `caf\\xe9.jpg` (Latin-1) was also the name of a file literally called so."""
        data = asdict(self)
        data["path"] = path_text(self.path)
        return data


@dataclass(frozen=True)
class FileState:
    """What incremental indexing needs to decide "unchanged" without opening the file."""

    id: int
    size: int
    mtime_ns: int
    status: str
    sha256: str | None


IMAGE_COLUMNS = "id, path, sha256, size, mtime_ns, width, height, added_at, status, error"


def image_record(row: Sequence[Any]) -> ImageRecord:
    """The record of one row selected as `IMAGE_COLUMNS` (its path read back from text or bytes)."""
    return ImageRecord(row[0], from_db(row[1]), *row[2:])
