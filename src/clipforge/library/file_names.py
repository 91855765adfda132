"""How file names are written into the library database and read back, in every locale.

File names are stored losslessly: as text when they are valid UTF-8, otherwise as their raw
bytes (a BLOB in the same column), so a name like b"caf\\xe9.jpg" is indexed, found again by
the next run, and shown escaped (``caf\\xe9.jpg``) wherever text is required.

The stored text is the name's bytes read as UTF-8, in any locale (`to_db`, `path_text`), and gives those bytes
back by UTF-8, then `os.fsdecode` (`from_db`, `text_path`). Handing the OS the text itself made Python encode it
with the locale's codec (ASCII in a C locale with ``PYTHONUTF8=0``): `os.path.exists` answered False and `index
prune` forgot every photo whose name was not ASCII (audit 65 portability #1). A name the OS cannot be given at all
is `UnusableNameError` (`file_exists`), never a file that is gone.

`name_bytes`, `path_text` (the ``b64:`` form of every --json report) and `display_path` live one layer down, in
`clipforge.data.names`, so a `BadImage` (data) writes the JSON name the library writes; they are re-exported here.
"""

from __future__ import annotations

import base64
import codecs
import os
import sys

from clipforge.data.names import display_path, name_bytes, path_text, utf8_name
from clipforge.errors import UserError

__all__ = ["UnusableNameError", "display_path", "file_exists", "from_db", "is_utf8_name", "name_bytes", "path_text",
           "text_path", "to_db"]

_FS_UTF8 = codecs.lookup(sys.getfilesystemencoding()).name == "utf-8"  # a stored text is then the OS's str as it is


class UnusableNameError(UserError, ValueError):
    """A file name holding a character this process's file-system encoding lacks: whether it is there is unknown."""

    http_status = 500  # the server's locale, not the request
    client_detail = "the server's locale cannot name a file of the library (not UTF-8): nothing was changed"


def to_db(path: str) -> str | bytes:
    """The value stored for a file name: its bytes read as UTF-8 text, or the raw bytes when they are not valid
    UTF-8 (the same value in every locale)."""
    raw = name_bytes(path)
    return raw if (text := utf8_name(raw)) is None else text


def from_db(value: str | bytes) -> str:
    """The file name as Python spells it in this process (undecodable bytes as surrogates, as `os.listdir` gives
    them): a stored text is the name's UTF-8, whatever this locale's codec."""
    if isinstance(value, bytes):
        return os.fsdecode(value)
    return value if _FS_UTF8 else os.fsdecode(value.encode("utf-8"))


def is_utf8_name(path: str) -> bool:
    """Whether `path` (as Python spells a file name: undecodable bytes as surrogates) is valid UTF-8."""
    return utf8_name(name_bytes(path)) is not None


def text_path(text: str) -> str:
    """The file name `path_text` wrote, as Python spells it in this process (`from_db`)."""
    return from_db(base64.b64decode(text[4:]) if text.startswith("b64:") else text)


def file_exists(path: str) -> bool:
    """Whether a file is at `path` (`os.path.exists`: a link to nothing is not), for deciding that a photo is gone.
    A name this process cannot hand to the OS is `UnusableNameError`, one line: `os.path.exists` answered False for
    it, and `index prune` forgot photos that were on disk."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise UnusableNameError(
            f"cannot look for {display_path(path)} on disk: its name holds characters this process's file-system "
            f"encoding ({sys.getfilesystemencoding()}) cannot write (a locale that is not UTF-8, such as LC_ALL=C "
            "with PYTHONUTF8=0); run it in a UTF-8 locale (LC_ALL=C.UTF-8) or with PYTHONUTF8=1") from None
    return os.path.exists(path)
