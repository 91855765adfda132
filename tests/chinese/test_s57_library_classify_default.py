"""`Library.classify` (the Python API; `clipforge tag` runs it) fits its default templates to the model's context.

The fallback to a set that keeps every label lived in `clipforge tag` alone: `Library.classify("猫, 狗, ...")` on
clipforge-tiny-zh (16 tokens) prompted with ``zh-imagenet``, whose prompts lose the label in 126 of 780 for the
ten CIFAR-10 labels, and said nothing. Both stores take one rule (`tagging.tag_templates`); named templates are
never replaced, and their cut prompts are said in the report's `notices`."""

from __future__ import annotations

import pytest

from clipforge.library import Library
from tests.chinese.chinese_files import write_photos

CIFAR10_ZH = "飞机，汽车，鸟，猫，鹿，狗，青蛙，马，船，卡车"


def _open(tmp_path, store: str):
    if store == "milvus-lite":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        from clipforge.library.milvus_library import MilvusLibrary

        return MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "lib", "clipforge-tiny-zh")
    return Library(tmp_path / "lib", "clipforge-tiny-zh", create=True)


@pytest.mark.parametrize("store", ["embedded", "milvus-lite"])
def test_the_default_gives_way_to_a_set_keeping_every_label_and_says_so(tmp_path, store) -> None:
    write_photos(tmp_path / "照片", ["a.png", "b.png"])
    with _open(tmp_path, store) as library:
        library.add(tmp_path / "照片", workers=0, progress=False)
        report = library.classify(CIFAR10_ZH, progress=False)
        assert report.templates == "zh-cifar10" and report.images == 2
        assert len(report.notices) == 1 and report.notices[0].startswith(
            "notice: model clipforge-tiny-zh reads 16 tokens of a text, which cuts the label out of 126 of the 780 "
            "prompts of the default templates zh-imagenet; prompting with zh-cifar10"), report.notices
        named = library.classify(CIFAR10_ZH, templates="imagenet", progress=False)  # named: kept, cut prompts said
        assert named.templates == "zh-imagenet"
        assert len(named.notices) == 1 and "lose their label to that cut" in named.notices[0]
        assert library.classify(CIFAR10_ZH, templates="zh-simple", progress=False).notices == []
