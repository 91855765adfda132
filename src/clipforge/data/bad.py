"""The one record of a bad image, and what counts as one (torch-free: decoding processes use it too).

`BadImage` is what every reader returns instead of raising for a file that cannot become pixels;
`DECODE_ERRORS` are the exceptions that mean "this file is bad" (never programming errors), and
`error_reason` turns one into the reason reports print.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from clipforge.data.names import path_text

__all__ = ["DECODE_ERRORS", "BadImage", "BadSample", "error_reason"]

# What a corrupt, truncated or hostile image file can raise while being decoded or transformed.
# Programming errors (TypeError, AttributeError, ...) are deliberately NOT in this list: they must
# surface, not be silently counted as "bad images".
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, OSError, EOFError, SyntaxError, struct.error, zlib.error,
    Image.DecompressionBombError, MemoryError,
)


@dataclass(frozen=True)
class BadImage:
    """An image that could not be turned into pixels: which file (or archive member) and why.

    The one shape of a bad image everywhere in clipforge: datasets return it instead of raising,
    the file reader (`clipforge.data.files`) yields it, reports list ``(path, reason)`` from it.
    `index` is the dataset position (-1 where there is none); `sha256` is set when the bytes were
    read and hashed before decoding failed.
    """

    path: str
    reason: str
    index: int = -1
    sha256: str | None = None

    @property
    def source(self) -> str:
        return self.path

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        """The JSON form every report uses (`index add`, `index stats`, `embed`, on either store): the path as
        lossless text, `names.path_text` (a name that is not UTF-8 as ``b64:`` + base64 of its bytes, as `search`
        and `index list` write it). Its ``\\xNN`` escapes were also the name of another file; lines for people
        use `names.display_path`."""
        return {"path": path_text(self.path), "reason": self.reason}


class BadSample(BadImage):
    """Older spelling, ``BadSample(index, source, reason)``: constructs a `BadImage`."""

    def __init__(self, index: int, source: str, reason: str) -> None:
        super().__init__(source, reason, index)


def error_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # ImageLoadError keeps the bare reason beside the file name
    if isinstance(reason, str) and reason:
        return reason
    text = str(exc).strip() or exc.__class__.__name__
    return text if text.startswith(exc.__class__.__name__) else f"{exc.__class__.__name__}: {text}"
