"""Chinese prompt sets: packaged exactly as Chinese-CLIP publishes them, and picked by the model's language."""

from __future__ import annotations

import pytest

from clipforge.zeroshot import get_templates
from clipforge.zeroshot.captions import caption_table
from clipforge.zeroshot.languages import (
    classnames_for,
    default_template_set,
    is_language_set,
    language_of,
    model_languages,
    set_language,
)
from clipforge.zeroshot.prompts import get_classnames, list_template_sets


def _published(module, name: str) -> list[str]:
    return [f("{}") for f in getattr(module, name)]


def test_imagenet_sets_are_chinese_clips(cn_clip_ref) -> None:
    module = _load_eval(cn_clip_ref, "imagenet_zeroshot_templates")
    assert get_templates("zh-imagenet") == _published(module, "openai_imagenet_template")
    assert classnames_for("imagenet", "zh-imagenet", 1000) == list(module.imagenet_classnames)
    cvinw = _load_eval(cn_clip_ref, "cvinw_zeroshot_templates")
    assert get_templates("zh-cifar10") == get_templates("zh-cifar100") == _published(cvinw, "cifar100_templates")


def _load_eval(cn_clip_ref, name: str):
    import importlib.util

    path = cn_clip_ref.folder / "eval" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"cn_clip_eval_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_set_names_and_languages() -> None:
    assert {"zh-imagenet", "zh-cifar10", "zh-cifar100", "zh-simple"} <= set(list_template_sets())
    assert is_language_set("ZH_CIFAR10") and is_language_set("zh-ImageNet") and not is_language_set("cifar10")
    assert set_language("zh-cifar10") == "zh" and set_language("cifar10") == "en"
    assert get_templates("zh-simple") == ["一张{}的照片"]
    with pytest.raises(ValueError, match="unknown template set 'zh-nothing'"):
        get_templates("zh-nothing")


def test_classnames_follow_the_set() -> None:
    zh = classnames_for("cifar10", "zh-cifar10", 10)
    assert zh[:4] == ["飞机", "汽车", "鸟", "猫"] and classnames_for("cifar10", "cifar10", 10) is None
    assert len(classnames_for("cifar100", "zh-cifar100", 100)) == 100
    assert len(set(classnames_for("cifar100", "zh-cifar100"))) == 100
    with pytest.raises(ValueError, match="no Chinese class names are packaged for dataset 'cars'"):
        classnames_for("cars", "zh-simple")
    with pytest.raises(ValueError, match="10 Chinese class names packaged for 'cifar10', but the dataset has 9"):
        classnames_for("cifar10", "zh-cifar10", 9)


def test_chinese_templates_of_no_set_bring_the_datasets_chinese_names(tmp_path) -> None:
    """`--templates 一张{}的照片` on CIFAR-10 prompted 一张airplane的照片: 6.67% on clipforge-tiny-zh where the
    dataset's Chinese names gave 66.67%. A template, a file or a list written in Chinese now takes them."""
    zh = classnames_for("cifar10", "zh-cifar10", 10)

    def names(spec, dataset="cifar10", count=10, own=None):
        return classnames_for(dataset, spec, count, own, get_templates(spec))

    assert names("一张{}的照片") == zh
    assert names(["一张{}的照片", "{}的图片"]) == zh
    listed = tmp_path / "模板.txt"
    listed.write_text("一张{}的照片\n一幅{}的画\n", encoding="utf-8")
    assert names(str(listed)) == zh
    assert names("a photo of a {}.") is None
    assert names(["一张{}的照片", "a photo of a {}."]) is None  # mixed: as given
    assert names("一张{}的照片", "cars", 196) is None  # none packaged: the names as they are (a set refuses)
    assert names("一张{}的照片", "folder", 2, own=["猫", "狗"]) is None  # the folders' names already


def test_default_set_follows_the_model_language() -> None:
    assert default_template_set("cifar10", ("zh", "en"), "cifar10") == "zh-cifar10"
    assert default_template_set("imagenet", ("zh",), "imagenet") == "zh-imagenet"
    assert default_template_set("folder", ("zh",), "simple") == "zh-simple"
    assert default_template_set("cifar10", ("en", "zh"), "cifar10") == "cifar10"
    assert model_languages("cn-ViT-B-16") == ("zh",) and model_languages("ViT-B/32") == ("en",)
    assert model_languages(type("Loaded", (), {"languages": ["zh", "en"]})()) == ("zh", "en")


def test_bilingual_caption_table() -> None:
    english = get_classnames("cifar10")
    table = caption_table(["cifar10", "zh-cifar10"], "cifar10", english)
    assert len(table) == 18 + 11 and all(len(row) == 10 for row in table)
    assert table[0][3] == "a photo of a cat." and table[18][3] == "一张猫的照片"
    assert caption_table(["a photo of a {}."], "cifar10", english) is None
    assert caption_table("cifar10", "cifar10", english) is None


def test_script_detection() -> None:
    assert language_of("一只猫") == "zh" and language_of("a cat") == "en" and language_of("猫 cat") == "zh"


def test_bilingual_in_memory_batches() -> None:
    """The training fast path takes the bilingual table: caption id = template * classes + class."""
    import torch

    from clipforge.text import tokenize
    from clipforge.train.fastdata import TensorBatches

    english = get_classnames("cifar10")
    table = caption_table(["cifar10", "zh-cifar10"], "cifar10", english)
    images = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    classes = torch.arange(20) % 10
    batches = TensorBatches(images, classes, english, [], 16, 32, templates_per_batch=1, unique_captions=True,
                            captions=table)
    assert batches.num_templates == 29
    assert torch.equal(batches.tokens[18 * 10 + 3], tokenize("一张猫的照片", context_length=16, truncate=True)[0])
    seen = {int(batch.caption_labels[0]) >= 0 for batch in batches.epoch_batches(range(20), 10, epoch=0)}
    assert seen == {True}
