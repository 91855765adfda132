"""How a file name becomes text: losslessly for what scripts read (`path_text`), readably for people (`display_path`).

A Linux file name is bytes; Python spells one that is not UTF-8 with surrogate escapes (``os.listdir``), which JSON,
parquet and Milvus cannot hold. Two texts are made of it, one rule each:

- `path_text`: the name's bytes as UTF-8 text, or ``b64:`` + base64 of its bytes when they are not UTF-8 (a real name
  is a path, never starting so). Every ``--json`` report, a Milvus key and an export's parquet use it, and
  ``clipforge.library.file_names.text_path`` gives the name back. `BadImage.to_dict` wrote ``\\xNN`` escapes instead,
  which a name really holding the four characters ``\\xe9`` also gives: two files, one string, neither opened by it
  (audit 66 scripter #1).
- `display_path`: the bytes read as UTF-8 with undecodable ones shown as ``\\xNN``, for stderr, error lines and the
  REST API's ``filename``: readable, not meant to be opened.

Here, at the data layer, so `BadImage` (data) writes the form the library writes; ``clipforge.library.file_names``
re-exports these with the database's own rules (`to_db`, `from_db`). Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import os

__all__ = ["display_path", "name_bytes", "path_text", "utf8_name"]


def name_bytes(path: str) -> bytes:
    """The bytes file name `path` stands for: `os.fsencode` (undecodable bytes as their surrogate escapes), or, for
    a name holding a character this process's file-system encoding lacks (text in a C locale), its UTF-8."""
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")


def utf8_name(raw: bytes) -> str | None:
    """`raw` read as UTF-8, or None when it is not valid UTF-8."""
    with contextlib.suppress(UnicodeDecodeError):
        return raw.decode("utf-8")
    return None


def path_text(path: str) -> str:
    """A file name as lossless UTF-8 text, for what holds text only (every --json report, a Milvus key, an export's
    parquet and JSON): its bytes as UTF-8 text, or ``b64:`` + base64 of its bytes when they are not UTF-8. The same
    text in every locale."""
    raw = name_bytes(path)
    text = utf8_name(raw)
    return text if text is not None else "b64:" + base64.b64encode(raw).decode("ascii")


def display_path(path: str) -> str:
    """`path` as printable UTF-8 text: its bytes read as UTF-8 (in any locale), undecodable bytes shown as \\xNN."""
    return name_bytes(path).decode("utf-8", "backslashreplace")
