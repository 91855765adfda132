"""What a folder scan says about the files it found but cannot show or read well: one notice each.

Two cases were silent. Photos in a format this installation cannot read (an iPhone's ``.heic`` without
pillow-heif) were left out of every folder walk without a word, so half of a phone's photos were simply not
there; and names that are not UTF-8 (a zip made on Windows, unpacked on Linux: GBK bytes) were indexed and then
shown half-decoded (``\\xb7羰\\xd5\\xd5Ƭ.jpg`` for 风景照片.jpg), with nothing saying why or how to fix it.
Both are counted by `clipforge.library.scan.scan_paths` and said here as a `Notice` (one ``notice:`` line in the
CLI; `--quiet` hides it), naming the extension and what reads it, or the likely encoding and the command that
renames the files. Neither changes what is indexed: unreadable photos stay out, odd names stay in.

Camera RAW files (``.dng``, ``.cr2``, ``.nef``, ...: `clipforge.image.formats.RAW_EXTENSIONS`) are counted by the
same walk and said in the same notice, in a sentence of their own: a card of RAW files only said "no image files"
(audit 64). They stay out of walks and are not failures; the JPEG or HEIC a camera saves beside each is the photo.
"""

from __future__ import annotations

import os
import re
import shlex
import unicodedata
from collections import Counter
from collections.abc import Sequence

from clipforge.errors import Notice
from clipforge.library.dbfile import is_utf8_name
from clipforge.text.typed import typed_text

__all__ = ["NotUtf8NamesNotice", "UnreadablePhotosNotice", "is_utf8_name", "not_utf8_sentence", "printable_line",
           "unreadable_sentence"]


class UnreadablePhotosNotice(Notice):
    """A scan met photos (by extension) that this installation cannot read, or camera RAW files: skipped in folder
    walks."""


class NotUtf8NamesNotice(Notice):
    """A scan found files whose names are not UTF-8: indexed, but shown with escapes."""


def _files(count: int, extension: str) -> str:
    return f"{count} {extension} file{'' if count == 1 else 's'}"


def unreadable_sentence(walked: Counter[str], named: Counter[str]) -> str:
    """One sentence for the photos a scan met in formats this installation cannot read: `walked` (extension ->
    files skipped in folder walks) and `named` (those named outright: they are tried anyway), grouped by what
    would read them (`clipforge.image.formats.reader_hint`); camera RAW files in a clause of their own
    (`_raw_clause`)."""
    from clipforge.image.formats import is_raw_extension, reader_hint

    raw = [Counter({e: n for e, n in counts.items() if is_raw_extension(e)}) for counts in (walked, named)]
    walked, named = walked - raw[0], named - raw[1]
    if not (walked or named):
        return _raw_clause(*raw)
    groups: dict[str, list[str]] = {}
    for extension, count in sorted((walked + named).items(), key=lambda item: (-item[1], item[0])):
        groups.setdefault(reader_hint(extension), []).append(_files(count, extension))
    what = "; ".join(f"{', '.join(files)} ({hint})" for hint, files in groups.items())
    skipped, tried = sum(walked.values()), sum(named.values())
    also = f"; and {_raw_clause(*raw)}" if any(raw) else ""
    if not skipped:
        return (f"{tried} {'photo' if tried == 1 else 'photos'} named {'is' if tried == 1 else 'are'} in a format "
                f"this installation cannot read (tried anyway): {what}{also}")
    more = f", and {tried} more named outright {'is' if tried == 1 else 'are'} tried anyway" if tried else ""
    return (f"skipped {skipped} {'photo' if skipped == 1 else 'photos'} in a format this installation cannot "
            f"read{more}: {what}{also}")


def _raw_clause(walked: Counter[str], named: Counter[str]) -> str:
    """The camera RAW files of a scan: how many a walk skipped and how many named outright are tried anyway (a DNG
    is a TIFF, often holding only a small preview), their extensions, and what to use instead."""
    from clipforge.image.formats import reader_hint

    skipped, tried = sum(walked.values()), sum(named.values())
    extensions = ", ".join(sorted(walked + named))
    files = "file" if (skipped or tried) == 1 else "files"
    hint = reader_hint(".dng")
    if not skipped:
        return f"{tried} camera RAW {files} named ({extensions}) {'is' if tried == 1 else 'are'} tried anyway: {hint}"
    more = f", and {tried} more named outright {'is' if tried == 1 else 'are'} tried anyway" if tried else ""
    return f"skipped {skipped} camera RAW {files}{more} ({extensions}): {hint}"


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def _guess(raw: bytes) -> tuple[str, str] | None:
    """(encoding, decoded name) for a name's bytes that read cleanly as GBK (Chinese Windows) with Chinese in
    them, else as Windows-1252 (an old Western disk); None when neither reads."""
    try:
        text = raw.decode("gbk")
        if _CJK.search(text):
            return "gbk", text
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        return None
    return ("latin1", text) if text.isprintable() else None


def _odd_part(path: str) -> str:
    """The last component of `path` that is not UTF-8 (its name, or the folder whose name is not)."""
    return next((part for part in reversed(path.split(os.sep)) if not is_utf8_name(part)), os.path.basename(path))


_TERMINAL_ACTS_ON = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
"""Beyond the control characters: the line and paragraph separators (a new line to some terminals and editors)
and the bidi controls (an override shows ``gpj.exe`` as ``exe.jpg``)."""


def printable_line(text: str) -> str:
    """`text` on one line with nothing a terminal acts on: a control character (an ESC colour code, a newline in a
    name), a line separator or a bidi control is written as its escape (review: a GBK name holding `\\e[31m\\n`
    split the notice and coloured the terminal). Every other character is shown as it is, spaces (an ideographic
    space in a Japanese name, U+3000) and joiners (👨‍👩‍👧) included: `str.isprintable` refused those, and
    `classify` showed ``写真\\u30001.jpg`` (review 63)."""
    if text.isprintable():
        return text
    text = typed_text(text)  # bytes Python could not decode that are UTF-8 (a C locale's names): the text they are
    return "".join(c.encode("unicode_escape").decode("ascii") if _acts_on_terminal(c) else c for c in text)


def _acts_on_terminal(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _TERMINAL_ACTS_ON


def not_utf8_sentence(names: Sequence[str]) -> str:
    """One sentence for the files of a scan whose names are not UTF-8 (`names`, at least one, sorted): how many,
    one of them as shown, the encoding most of them read cleanly in (`_guess`) and the command that renames them."""
    from clipforge.library.dbfile import display_path

    guesses = [(name, _guess(os.fsencode(_odd_part(name)))) for name in names]
    found = Counter(guess[0] for _, guess in guesses if guess is not None)
    encoding = found.most_common(1)[0][0] if found else None
    example, guess = next(((n, g) for n, g in guesses if g is not None and g[0] == encoding), guesses[0])
    count = len(names)
    folder = os.path.commonpath([os.path.dirname(name) for name in names])
    target = shlex.quote(folder) if is_utf8_name(folder) and folder.isprintable() else "FOLDER"  # typeable, or a stand-in
    head = (f"{count} file {'name is' if count == 1 else 'names are'} not UTF-8 (indexed all the same; shown with "
            f"\\xNN escapes, e.g. {printable_line(display_path(example))}; JSON writes them as b64:...)")
    if guess is None:
        return f"{head}: `convmv -f ENCODING -t utf-8 -r --notest {target}` renames them"
    source = ("perhaps a zip made on Windows (`unzip -O GBK` unpacks one with the right names)" if encoding == "gbk"
              else "perhaps copied from an old Windows or Mac disk")
    return (f"{head}: {source}; read as {guess[0].upper()}, {printable_line(display_path(_odd_part(example)))} is "
            f"{printable_line(guess[1])}; "
            f"`convmv -f {guess[0]} -t utf-8 -r --notest {target}` renames them")
