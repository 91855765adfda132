"""The files a UI event names: opened only when they are this page's own uploads.

gradio hands an event's files to its handlers as `FileData` the client sent, with the server path
in it; with preprocessing off (`ui`), nothing has checked that path yet. `read_upload_file` is the
one place a handler turns one into bytes, and the one rule it follows: a regular file inside this
server's upload folder, read under the upload limit and checked like a REST upload.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from clipforge.server.errors import APIError
from clipforge.server.service import LibraryService
from clipforge.server.upload_paths import inside
from clipforge.server.uploads import SniffedImage, client_file_name, sniff_image

__all__ = ["client_name", "read_upload_file"]


def client_name(value: Any) -> str | None:
    """The file name the browser reported, cut like a REST upload's (a label; never used to open anything)."""
    return client_file_name(value.get("orig_name") if isinstance(value, dict) else None)


def read_upload_file(value: Any, service: LibraryService, upload_dir: str, what: str) -> SniffedImage:
    """The image in a `FileData` the browser sent, if it names a file this page uploaded.

    Anything else (a server path, a URL, a path that leaves the upload folder through `..` or a
    symlink, a FIFO) is refused without being opened; the bytes are then checked like a REST
    upload, so the message for a bad file is the API's own.
    """
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", None)
    if not isinstance(path, str) or not path or "\0" in path or not inside(path, upload_dir):
        raise APIError(400, "not_an_upload", f"{what} was not uploaded through this page; upload it again")
    real = os.path.realpath(path)
    limit = service.limits.max_upload_bytes
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):  # a FIFO or device is never opened
            raise APIError(
                400, "not_an_upload", f"{what} was not uploaded through this page; upload it again"
            )
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise APIError(400, "not_an_upload", f"{what} is no longer on the server; upload it again") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise APIError(
                400, "not_an_upload", f"{what} was not uploaded through this page; upload it again"
            )
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, "payload_too_large", f"{what} is larger than the limit of {limit:,} bytes")
    return sniff_image(data, service.limits, what)
