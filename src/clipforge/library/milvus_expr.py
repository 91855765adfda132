"""Milvus filter expressions built from file names: string literals and "under this folder" conditions.

Every path a Milvus store compares in an expression passes through here, because two kinds of names
broke the expressions written inline before:

- A name with a line break (``new\\nline.jpg``; any byte but ``/`` and NUL is legal on Linux): Milvus's
  parser refuses a raw newline or carriage return inside a literal ("unterminated string literal"), so
  one such file failed a whole `index add` of its folder. `quote` writes them as ``\\n`` and ``\\r``,
  the only escapes besides ``\\\\`` and ``\\"`` that milvus-lite reads (it refuses ``\\x01``, ``\\001``,
  ``\\u0001``, ``\\a``): every other character goes in raw, which both engines accept.
- A name that is not UTF-8 is stored under the key ``b64:`` + base64 of its bytes
  (`milvus_store.path_key`), which ``path like "folder/%"`` never matches, and whose surrogates pymilvus
  cannot send at all. `under_expr` adds a ``b64:`` prefix that holds exactly the folder's files (the
  base64 of the folder's bytes, cut to whole 3-byte groups, is a prefix of every key below it) and drops
  the text condition for a folder that has no text form.

Callers keep testing the paths they get exactly (`scan.is_under`): the conditions here may match more
(``_`` in milvus-lite patterns, a backslash widened to any character, the base64 group boundary).
"""

from __future__ import annotations

import base64
import os

from clipforge.library.dbfile import is_utf8_name, path_text

__all__ = ["like_prefix", "quote", "under_expr"]


def quote(value: str) -> str:
    """A Milvus filter-expression string literal of `value` (text: not-UTF-8 names go in as their key)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


def like_prefix(folder: str) -> str:
    """The LIKE pattern (before `quote`) of the paths in `folder` and below: its `%` and `_` escaped, and a
    backslash, whose escaping Milvus versions read differently, widened to `_` (any one character; callers
    test the paths they get exactly)."""
    prefix = folder.rstrip(os.sep) + os.sep
    return "".join("\\" + c if c in "%_" else "_" if c == "\\" else c for c in prefix) + "%"


def text_form(path: str) -> bool:
    """Whether `path` is stored under its own name (valid UTF-8) rather than a ``b64:`` key."""
    return is_utf8_name(path)


def b64_prefix(folder: str) -> str:
    """The LIKE pattern of the ``b64:`` keys of the not-UTF-8 names in `folder` and below (a superset)."""
    raw = os.fsencode(folder.rstrip(os.sep) + os.sep)
    whole = raw[: len(raw) // 3 * 3]  # base64 of whole 3-byte groups does not depend on what follows
    return "b64:" + base64.b64encode(whole).decode("ascii") + "%"  # the alphabet holds no % or _


def under_expr(folder: str) -> str:
    """A condition true for every stored path in `folder` and below (and maybe a few others: test exactly)."""
    names = [f"path like {quote(like_prefix(path_text(folder)))}"] if text_form(folder) else []
    return "(" + " or ".join([*names, f"path like {quote(b64_prefix(folder))}"]) + ")"
