"""Labels as people type them, and the small text files that hold labels or prompt templates.

One home for the rules, so `clipforge classify`, `clipforge tag`, search's tag filters, the REST API and
the web UI read "猫，狗、鸟" the same way (they used to disagree about blanks, duplicates and separators):

- A label string is split on the ASCII comma, on the two commas a Chinese or Japanese input method types:
  the full-width comma "，" (U+FF0C) and the enumeration comma "、" (U+3001, or its half-width "､" U+FF64),
  and on the Arabic comma "،" (U+060C, Arabic, Persian and Urdu keyboards). Only the string form is
  split; an item of a list (a JSON body, a stored vocabulary) is one label and may hold any comma.
- Each label is stripped (Unicode blanks, the ideographic space included); an empty item between
  separators ("cat,,dog", a trailing comma) is ignored, and so is one of invisible characters only (a zero-width
  joiner, a bidi control, a NUL: `text.typed.has_visible`), which a model reads as an empty prompt; a repeated
  label is dropped, first one kept:
  a duplicate would split one class's probability in two. Repeats are compared in Unicode NFKC form:
  "café" typed precomposed or as e + U+0301, "ｃａｔ" and "cat" are one label to a tokenizer (ftfy normalises
  them), and were scored as two halves of one. `label_key` is that form, the one a tag filter compares too.
- A string with no label at all is one clear error naming the flag or field (`LabelsError`).
- A file of labels or templates is UTF-8, a leading byte-order mark ignored (Windows Notepad writes
  one), or UTF-16 with its byte-order mark (Notepad's "Unicode", Excel's "Unicode text": the mark names
  the encoding); a file in another encoding, a folder, or broken JSON is one line naming the file and
  what was expected, never a bare codec or parser message. Other encodings are not guessed (a legacy
  European file could be mis-read), but a file that reads as Chinese in GBK/GB18030, Chinese Windows'
  default, is said to look like it, with how to convert it (`looks_like_gb18030`).

Standard library only (besides `clipforge.errors` and `clipforge.text.typed`, as plain): a floor every layer may import.
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clipforge.errors import UserError
from clipforge.text.typed import has_visible

__all__ = ["LABEL_SEPARATORS", "LabelsError", "MissingTextFileError", "TextFileError", "gb18030_advice", "label_key",
           "looks_like_gb18030", "parse_json_file", "read_text_file", "split_labels", "stored_tag_forms"]

LABEL_SEPARATORS = (",", "\uff0c", "\u3001", "\uff64", "\u060c")
"""What separates labels in a string: ",", the full-width "，", the enumeration comma "、" (and its half-width
"､"), the Arabic comma "،"."""
_SEPARATOR = re.compile("[" + "".join(LABEL_SEPARATORS) + "]")
_SEPARATOR_NAMES = ", ".join(map(repr, LABEL_SEPARATORS[:-1])) + f" or {LABEL_SEPARATORS[-1]!r}"
_EXAMPLE = "'cat,dog,car' or '猫，狗，汽车'"


class LabelsError(UserError, ValueError):
    """No label in what was given; the message names the flag or field."""


class TextFileError(UserError, ValueError):
    """A labels or templates file that cannot be read as expected (a folder, not UTF-8, broken JSON)."""


class MissingTextFileError(UserError, FileNotFoundError):
    """A labels or templates file that does not exist."""


def split_labels(labels: str | Iterable[object] | None, what: str = "labels", *, required: bool = True) -> list[str]:
    """Unique, stripped, non-empty labels in their first order, from a separated string or a list.

    `what` names the flag or field in the error raised when there is no label and `required` is true;
    with `required=False` no label gives ``[]`` (an optional filter). Duplicates are found with a dict keyed by
    the NFKC form (the first spelling kept), so the cost stays linear in the number of items however long an
    anonymous request's string is.
    """
    items = _SEPARATOR.split(labels) if isinstance(labels, str) else (str(item) for item in labels or ())
    first: dict[str, str] = {}
    for item in items:
        if (label := item.strip()) and has_visible(label):
            first.setdefault(label_key(label), label)
    out = list(first.values())
    if not out and required:
        if isinstance(labels, str):
            shown = labels if len(labels) <= 60 else labels[:60] + "..."
            raise LabelsError(f"{what} {shown!r}: no label in it; expected comma-separated labels "
                              f"({_SEPARATOR_NAMES} between them), e.g. {_EXAMPLE}")
        raise LabelsError(f"{what}: no label given; expected at least one non-blank label, e.g. {_EXAMPLE}")
    return out


def label_key(label: str) -> str:
    """The form two labels are one label in (Unicode NFKC): "café" precomposed or as e + U+0301, "ｃａｔ" and "cat"
    are the same ids to a tokenizer. `split_labels` drops repeats by it; a tag filter matches stored tags by it
    (`search --tag` with NFD "café" found nothing on a library tagged with the NFC one)."""
    return unicodedata.normalize("NFKC", label.strip())


def stored_tag_forms(labels: Sequence[str], stored: Iterable[str]) -> list[str]:
    """A tag filter's `labels` as the stored tags spell them: every label of `stored` whose Unicode NFKC form
    (`label_key`, the form label repeats are compared in) is one of theirs, then each label that has no
    stored form, as typed (it matches nothing, and `no_results_reason` says so). `search --tag` with NFD "café" found
    nothing on a library tagged with the NFC one, nor "cat" where "ｃａｔ" was stored; stored tags keep the spelling
    typed (libraries tagged before included), so the query is mapped to them, not they to it."""
    wanted = {label_key(label): label for label in labels}
    forms = [label for label in dict.fromkeys(stored) if label_key(label) in wanted]
    found = {label_key(label) for label in forms}
    return forms + [label for key, label in wanted.items() if key not in found]


def read_text_file(path: str | Path, what: str, expected: str) -> str:
    """The text of a small user file (labels, templates) as UTF-8, a leading BOM dropped.

    `what` names the file's role ("labels file"), `expected` its content ("a file of labels"); every
    failure is one line naming the file, so a GBK file or a folder given by mistake says so.
    """
    path = Path(path)
    if path.is_dir():
        raise TextFileError(f"{what} {path} is a folder, expected {expected}")
    if not path.is_file():
        raise MissingTextFileError(f"{what} {path} does not exist")
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 (or UTF-32) that says so with its byte-order mark
        codec = "utf-32" if data.startswith(b"\xff\xfe\x00\x00") else "utf-16"
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            raise TextFileError(f"{what} {path} starts with a {codec.upper()} byte-order mark but is not {codec.upper()}"
                                f" text (byte {exc.start}); save it as UTF-8, expected {expected}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f"line {line} has byte 0x{data[exc.start]:02x}"
        if advice := gb18030_advice(path, data):  # said, never decoded: a legacy European file could be mis-read
            raise TextFileError(f"{what} {path} is not UTF-8 text ({where}) but {advice[0]}; expected {expected} in "
                                f"UTF-8: {advice[1]}") from None
        raise TextFileError(f"{what} {path} is not UTF-8 text ({where}; save it as UTF-8), expected {expected}") \
            from None
    _warn_if_gbk_read_as_utf8(path, data, text, what)
    return text


# GBK pairs that are valid UTF-8 are two-byte sequences of U+0080-U+07FF; Chinese in GBK reads as Latin-1 and Latin
# Extended letters there (猫 = C3 A8 = è), never as Cyrillic, Greek, kana or emoji, which UTF-8 files hold
_LATIN_ONLY = re.compile(r"[\x00-\u024f]*")
_IN_LATIN_WORD = re.compile(r"[A-Za-z][\x80-\u024f]|[\x80-\u024f][A-Za-z]")  # crème, Straße: accented words


def _warn_if_gbk_read_as_utf8(path: Path, data: bytes, text: str, what: str) -> None:
    """A notice when bytes that are valid UTF-8 read as Latin letters there but as Chinese in GBK: "猫 鹿 牛" saved
    as GBK is also UTF-8 for "ţ è ¹", classified without a word (audit 59). Only where the UTF-8 reading is what GBK
    Chinese gives (Latin-1 and Latin Extended letters standing alone, not inside Latin words): Russian, Greek,
    Japanese and emoji files were told they look like GBK (review). Said, not refused: a label of single accented
    letters ("ç", "ñ") reads so too, so the user decides from the two readings shown."""
    if text.isascii() or not _LATIN_ONLY.fullmatch(text) or _IN_LATIN_WORD.search(text) \
            or not looks_like_gb18030(data):
        return
    import warnings

    from clipforge.errors import Notice

    shown, chinese = " ".join(text.split())[:40], " ".join(data.decode("gb18030").split())[:40]
    warnings.warn(Notice(f"{what} {path} reads as UTF-8 {shown!r}, but as GBK it reads {chinese!r}: if the first "
                         f"is not what you wrote, save the file as UTF-8"), stacklevel=3)


_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_LATIN = re.compile("[A-Za-z]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def gb18030_advice(path: Path, data: bytes) -> tuple[str, str] | None:
    """(what the file looks like, how to turn it into UTF-8) when `path` (whose bytes, or their beginning, are
    `data`) `looks_like_gb18030`, else None: the end of the one-line error of every reader of text files (labels,
    templates, captions). Bytes that read as Chinese in GB18030 often read as Han text in Big5, EUC-KR or EUC-JP
    as well (Korean and Japanese files too): then the other encodings are named beside it."""
    head = data if len(data) <= _SNIFF_BYTES else data[:data.rfind(b"\n", 0, _SNIFF_BYTES) + 1]
    if not looks_like_gb18030(head):
        return None
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    command = f"iconv -f GB18030 -t UTF-8 {shlex.quote(str(path))} > {shlex.quote(str(converted))}"
    looks = "looks like GBK/GB18030 (Chinese Windows' default)"
    if any(_decodes(head, codec) for codec in ("big5", "euc_kr", "euc_jp", "shift_jis")):
        looks += " or another East Asian encoding (Big5, Shift-JIS, EUC-KR)"
        command += " (-f BIG5, SHIFT_JIS or EUC-KR for Taiwanese, Japanese or Korean text)"
    return looks, f"save it as UTF-8 (Notepad: Save as -> Encoding UTF-8), or convert it: {command}"


def _decodes(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
    except UnicodeDecodeError:
        return False
    return True


_SNIFF_BYTES = 1 << 20  # what `gb18030_advice` reads of a large file (whole lines)


def looks_like_gb18030(data: bytes) -> bool:
    """Whether bytes that are not UTF-8 read as Chinese in GB18030 (GBK's superset, Chinese Windows' default).

    A hint for the error, never a decoding: the bytes must decode as GB18030 without an error or a control
    character, give Han characters that stand apart from Latin letters (at least three in four of them) or
    outnumber them, and the file must not hold UTF-8 Chinese as well (a UTF-8 file with one pasted GBK line is
    not a GBK file). A legacy European file decodes as GBK often ("Straße" in Windows-1252 is "Stra遝"), but each
    accented letter pairs with the letter after it into a Han character inside a Latin word; a Chinese CSV's
    Han characters follow commas and each other, beside ASCII file names and headers ("a.jpg,一只狗").
    """
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        return False
    if _CONTROL.search(text):  # binary, or UTF-16 without its byte-order mark
        return False
    letters = sum(1 for char in text if char.isalpha())
    han = len(_HAN.findall(text))
    # GBK misread as UTF-8 forms a Han character now and then (~1 in 150); a file of UTF-8 Chinese, many
    utf8_han = len(_HAN.findall(data.decode("utf-8", "replace")))
    touching = sum(1 for m in _HAN.finditer(text) if _LATIN.match(text[m.start() - 1:m.start()] or " ")
                   or _LATIN.match(text[m.end():m.end() + 1] or " "))
    return han > 0 and 10 * utf8_han < han and (2 * han >= letters or 4 * touching <= han)


def parse_json_file(text: str, path: str | Path, expected: str) -> Any:
    """`text` (read from `path`) as JSON; broken JSON is one line with the file, line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TextFileError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); "
                            f"expected {expected}") from None
