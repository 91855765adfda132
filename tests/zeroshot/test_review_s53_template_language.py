"""Which templates of no language set take a dataset's Chinese class names (`classnames_for(..., written=...)`).

Only Chinese ones: a Japanese template holds kanji too (``{}の写真``) and took zh-cifar10's names, prompting
``飞机の写真``; an English template with a Chinese gloss (``a photo of a {}, 照片``) did the same. An empty list,
a mixed list and Korean stay as given.
"""

from __future__ import annotations

import pytest

from clipforge.zeroshot.languages import classnames_for, zh_classnames


@pytest.mark.parametrize(
    "templates",
    [
        ["{}の写真"],
        ["{}のしゃしん", "一张{}的照片"],
        ["a photo of a {}, 照片"],
        ["{} 사진"],
        ["a photo of a {}.", "一张{}的照片"],
        [],
    ],
)
def test_templates_that_are_not_chinese_keep_the_names_as_given(templates: list[str]) -> None:
    assert classnames_for("cifar10", "my-templates.txt", 10, None, templates) is None


@pytest.mark.parametrize("templates", [["一张{}的照片"], ["一张{}的3D渲染图", "CLIP：一张{}的照片"]])
def test_chinese_templates_with_a_latin_word_take_the_chinese_names(templates: list[str]) -> None:
    assert classnames_for("cifar10", "my-templates.txt", 10, None, templates) == zh_classnames("cifar10")
