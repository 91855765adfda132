"""One image file -> its uint8 crop, or the reason it has none: what every reader of user files runs.

`read_file` reads the bytes once (never blocking on a FIFO: `read_regular_file`), hashes those
same bytes when asked (the library's content key describes exactly what was decoded), and decodes
them with the model's `Preprocess`. It imports neither torch nor the dataset adapters, so the same
function serves `ImageFileReader` in DataLoader workers and the decoding that a command starts
before torch has finished importing (`clipforge.data.prefetch`).
"""

from __future__ import annotations

import errno
import hashlib
import io
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from clipforge.image.loading import MAX_IMAGE_FILE_BYTES
from clipforge.regular_file import FileTooLargeError, NotRegularFileError, read_regular_file

from .bad import DECODE_ERRORS, BadImage, error_reason

__all__ = ["DecodedFile", "decode_crop", "read_file"]


@dataclass
class DecodedFile:
    """A file read (and, unless its bytes were already embedded, decoded) for the model.

    `pixels` is the uint8 [R, R, 3] crop (or what a custom preprocess returned); None when the
    bytes were in `skip_shas`. `width`/`height` are the upright full size of the picture.
    """

    path: str
    size: int
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    pixels: Any = None
    index: int = -1


def _read_error(exc: OSError) -> str:
    if isinstance(exc, PermissionError) or exc.errno == errno.EACCES:
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    return f"cannot read file ({exc.strerror or exc})"


def decode_crop(preprocess: Any, data: bytes, label: str) -> tuple[Any, int, int]:
    """(pixels, width, height) of encoded image bytes; raises DECODE_ERRORS on a bad image.

    With a `clipforge.image.Preprocess` the pixels are its uint8 numpy crop; any other callable
    gets the decoded PIL image and returns what it returns (a float tensor).
    """
    stream = io.BytesIO(data)
    stream.name = label  # error messages name the file, not "<bytes>"
    if hasattr(preprocess, "decode") and hasattr(preprocess, "decoded_pixels"):
        decoded = preprocess.decode(stream)
        width, height = decoded.source_size
        return preprocess.decoded_pixels(decoded), width, height
    from clipforge.image import load_image  # a custom preprocess: PIL image -> float tensor

    image = load_image(stream)
    return preprocess(image), image.size[0], image.size[1]


def read_file(path: str, preprocess: Any, *, hash: bool = False, skip_shas: Container[str] = frozenset(),
              index: int = -1) -> DecodedFile | BadImage:
    """`path` -> `DecodedFile` (pixels None when its sha256 is in `skip_shas`) or `BadImage`; never raises
    for a bad file (programming errors do raise)."""
    try:
        data = read_regular_file(path, MAX_IMAGE_FILE_BYTES)  # never blocks on a FIFO swapped in after a scan
    except (NotRegularFileError, FileTooLargeError) as exc:
        return BadImage(path, exc.reason, index)
    except OSError as exc:
        return BadImage(path, _read_error(exc), index)
    sha = hashlib.sha256(data).hexdigest() if hash else None
    if not data:
        return BadImage(path, "file is empty (0 bytes)", index, sha)
    out = DecodedFile(path, len(data), sha, index=index)
    if sha is not None and sha in skip_shas:
        return out
    try:
        out.pixels, out.width, out.height = decode_crop(preprocess, data, path)
    except DECODE_ERRORS as exc:
        return BadImage(path, error_reason(exc), index, sha)
    return out
