"""UTF-8 typed in a C locale (``LC_ALL=C LANG=C PYTHONUTF8=0``) is UTF-8, not "bytes that are not UTF-8" (audit 65
portability, finding 2, related): Python decodes such a command line as ASCII, so ``--labels 猫,狗`` arrived as
escaped bytes and was refused with "your terminal's ... encoding is not UTF-8", which was false: the bytes were UTF-8
and the locale was the problem. `typed_text` reads those bytes as UTF-8, and `check_argument` returns that text.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clipforge.errors import UsageError
from clipforge.text.typed import check_argument, typed_text, unicode_problem

CAT_DOG = "猫,狗".encode().decode("ascii", "surrogateescape")
"""'猫,狗' as a C locale's Python spells it: "\\udce7\\udc8c\\udcab,\\udce7\\udc8b\\udc97"."""


def test_escaped_bytes_that_are_utf8_read_as_utf8_and_the_rest_stay() -> None:
    assert CAT_DOG == "\udce7\udc8c\udcab,\udce7\udc8b\udc97"
    assert typed_text(CAT_DOG) == "猫,狗"
    assert typed_text("\udce7\udc8c\udcab\udcff.jpg") == "猫\udcff.jpg"  # a stray byte stays escaped
    assert typed_text("caf\udce9") == "caf\udce9"  # Latin-1: not UTF-8, as in a UTF-8 locale
    assert typed_text("a\ud800b") == "a\ud800b"  # no escaped byte: left for unicode_problem
    assert typed_text("猫 cat") == "猫 cat"


def test_a_c_locale_command_line_in_utf8_is_the_text_typed() -> None:
    assert check_argument(CAT_DOG, "--labels") == "猫,狗"
    with pytest.raises(UsageError) as refused:  # what stays escaped after reading the UTF-8 is named, as before
        check_argument("\udce7\udc8c\udcab\udcff", "--labels")
    assert str(refused.value).startswith("--labels: not valid UTF-8 (byte 0xff after '猫'); your terminal's")


def test_bytes_that_are_not_utf8_keep_their_words() -> None:
    assert unicode_problem("caf\udce9", command_line=True) == (
        "not valid UTF-8 (byte 0xe9 after 'caf'); your terminal's (or script's) encoding is not UTF-8 (Latin-1, "
        "Shift-JIS, ...): switch it to UTF-8, or convert the text with `iconv -t UTF-8`")
    assert unicode_problem("\udce7\udc8c\udcab\udcff", command_line=True).startswith(
        "not valid UTF-8 (byte 0xe7 at its start); your terminal's")
    assert unicode_problem("\udce7\udc8c\udcab") is not None  # a request's surrogates are never a locale's


def test_in_a_real_c_locale_the_labels_are_the_text_typed() -> None:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    code = "import sys\nfrom clipforge.text.typed import check_argument\nprint(ascii(check_argument(sys.argv[1], 'x')))"
    done = subprocess.run([sys.executable, "-c", code, "猫,狗"], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (ascii("猫,狗") + "\n").encode()
