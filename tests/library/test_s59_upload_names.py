"""Uploaded file names keep their Chinese punctuation (audit 59, Chinese finding 9): `上传 测试（一）🐸.jpg` was
stored as `上传 测试_一.jpg` while ASCII () were kept. Printable letters, digits, marks, punctuation and symbols
beyond ASCII are kept; what `clean_upload_name` refused before (separators and their look-alikes, controls,
format characters, ASCII quotes and shell characters, a leading dot) is still refused.
"""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from clipforge.library import Library
from clipforge.library.media import clean_upload_name


@pytest.mark.parametrize(("raw", "clean"), [
    ("上传 测试（一）🐸.jpg", "上传 测试（一）🐸"),
    ("【最终版】《三体》、，。！？：.png", "【最终版】《三体》、，。！？："),
    ("“引号”「括号」『书名』.jpg", "“引号”「括号」『书名』"),
    ("旅行・東京〜大阪.jpg", "旅行・東京〜大阪"),
    ("€5 ©2024 ½.png", "€5 ©2024 ½"),
    ("a\uff0fb\uff3cc\u2215d\u2571e.png", "a_b_c_d_e"),  # full-width and other slashes: not a path, not even seen as one
    ("a＜b＞c｜d.png", "a_b_c_d"),  # maths signs that mimic what Windows forbids
    ("..／..／etc⼃passwd.jpg", "etc_passwd"),  # review: KANGXI RADICAL SLASH, drawn as a slash
    ("a\u0338b\U0001F67Cc\u2E4Ad.png", "a_b_c_d"),  # review: combining long solidus, heavy and dotted solidus
    ("photo\u202egnp.exe", "photo_gnp"),  # bidi override
    ("家\u200d庭.jpg", "家_庭"),  # zero-width joiner: unseen in a name
    ("a\u200d\U0001F468.png", "a_\U0001F468"),  # ...also before an emoji that follows no symbol
    ("x\u200d.png", "x"),
    # audit 63 (i18n #10): inside an emoji sequence a ZWJ is seen (one glyph): kept, not "_" splitting 👨‍👩‍👧 in three
    ("cafe\u0301 \U0001F468\u200d\U0001F469\u200d\U0001F467.png", "caf\u00e9 \U0001F468\u200d\U0001F469\u200d\U0001F467"),
    ("\U0001F3F3\ufe0f\u200d\U0001F308.png", "\U0001F3F3\ufe0f\u200d\U0001F308"),  # after a variation selector
    ("\U0001F44D\U0001F3FD\u200d\U0001F468.png", "\U0001F44D\U0001F3FD\u200d\U0001F468"),  # after a skin tone
    ("^\u200d\u00a9.png", "\u00a9"),  # review 63: ^ is a symbol (Sk) but no emoji: its joiner is "_", stripped
    ("x" * 113 + "\U0001F468\u200d\U0001F469.png", "x" * 113 + "\U0001F468"),  # the cut at 120 bytes: no joiner left
    ("\u3000全角空格\u3000.png", "全角空格"),  # only the ASCII space is kept
    ("x%0d%0aSet-Cookie: a=b.png", "x_0d_0aSet-Cookie_ a_b"),
    ("'quote\".png", "quote"),
    ("．hidden.png", "．hidden"),  # a full-width full stop is not a dot: no hidden file
    ("../../etc/passwd\x00\n<script>.png", "passwd___script"),
])
def test_clean_upload_name_keeps_unicode_punctuation(raw, clean) -> None:
    assert clean_upload_name(raw) == clean


def test_an_upload_keeps_its_full_width_name(tmp_path, tiny_encoder) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 200, 3)).save(buffer, format="JPEG")
    with Library(tmp_path / "lib", tiny_encoder) as library:
        record = library.add_bytes(buffer.getvalue(), filename="上传 测试（一）🐸.jpg")
    assert os.path.basename(record.path) == "上传 测试（一）🐸.jpg"
    assert os.path.realpath(record.path) == record.path
