"""Results reach a stdout that cannot show every character: escaped, never lost.

A stdout whose encoding is not UTF-8 (``PYTHONIOENCODING=cp1252`` or ``ascii``, a C locale with
``PYTHONUTF8=0``, Windows writing to a redirected file in its ANSI code page) failed at the first result
holding a character it lacks: ``search``, ``classify``, ``index list`` and ``tag --list`` printed nothing,
``--json`` included, and exited 2 with Python's bare codec message (a `UnicodeEncodeError` is a
`ValueError`, which the error edge took for bad input).

`escape_unshowable_characters` (called once by `cli.main.main`) sets such a stdout's error handler to one that
writes ``\\uXXXX`` escapes (Python's ``backslashreplace``) and remembers that it did, so the command ends with
one notice on stderr saying how to see the characters. In a C locale Python gives stdout the ``surrogateescape``
handler, not ``strict``: it was left alone, so every result holding a Chinese name failed there as before (audit 65
portability #2). Such a stream keeps writing a byte Python could not decode (a surrogate escape, U+DC80..U+DCFF)
back as that byte, as it did, and escapes the rest. JSON is never escaped that way: `json_text` asks
`stdout_shows` first and, where stdout cannot show the document, writes it with JSON's own ``\\uXXXX``
escapes (``ensure_ascii``), so a script reads exactly the same values. A UTF-8 stdout is left alone.
"""

from __future__ import annotations

import codecs
import sys
from typing import TextIO

__all__ = ["ESCAPES", "ESCAPES_KEEPING_BYTES", "escape_unshowable_characters", "escaped_notice", "stdout_shows"]

ESCAPES = "clipforge-escape-unshowable"
ESCAPES_KEEPING_BYTES = "clipforge-escape-unshowable-keeping-bytes"
"""The handler for a stream that was ``surrogateescape``: escaped bytes written back, the rest escaped."""
_escaped: list[str] = []  # the encoding whose missing characters were escaped, once any was
_HANDLERS = {"strict": ESCAPES, "surrogateescape": ESCAPES_KEEPING_BYTES}


def _escape(error: UnicodeError) -> tuple[str, int]:
    if not _escaped:
        _escaped.append(getattr(error, "encoding", "") or "")
    return codecs.backslashreplace_errors(error)


def _escape_keeping_bytes(error: UnicodeError) -> tuple[str | bytes, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text, start = error.object, error.start
    end = start
    while end < error.end and 0xDC80 <= ord(text[end]) <= 0xDCFF:
        end += 1
    if end > start:  # bytes Python could not decode: the bytes themselves, as surrogateescape writes them
        return bytes(ord(char) - 0xDC00 for char in text[start:end]), end
    while end < error.end and not 0xDC80 <= ord(text[end]) <= 0xDCFF:
        end += 1
    return _escape(UnicodeEncodeError(error.encoding, text, start, end, error.reason))


codecs.register_error(ESCAPES, _escape)
codecs.register_error(ESCAPES_KEEPING_BYTES, _escape_keeping_bytes)


def _is_utf8(stream: TextIO) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def escape_unshowable_characters(stream: TextIO | None = None) -> None:
    """Have `stream` (stdout) escape the characters its encoding lacks instead of failing (module docstring)."""
    stream = sys.stdout if stream is None else stream
    _escaped.clear()  # a notice per command (tests run many in one process)
    reconfigure = getattr(stream, "reconfigure", None)
    handler = _HANDLERS.get(getattr(stream, "errors", None) or "")
    if reconfigure is None or handler is None or _is_utf8(stream):
        return
    reconfigure(errors=handler)


def stdout_shows(text: str) -> bool:
    """Whether stdout's encoding can write every character of `text` (always, for UTF-8)."""
    if _is_utf8(sys.stdout):
        return True
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except UnicodeEncodeError:
        return False
    except LookupError:
        return True
    return True


def escaped_notice() -> str | None:
    """The one notice after a command whose output had characters escaped, else None."""
    if not _escaped:
        return None
    encoding = getattr(sys.stdout, "encoding", "") or _escaped[0] or "this"  # cp1252, not its codec's "charmap"
    return (f"notice: stdout's encoding ({encoding}) cannot show some characters of this output: they are written "
            "as \\uXXXX escapes; set PYTHONIOENCODING=utf-8 (or PYTHONUTF8=1) to see them")
