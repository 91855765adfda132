"""Which script a text is written in, and the one-line notice when the model was not trained for it (audit 63 i18n).

Before: `language_of` knew two answers, ``zh`` (any CJK ideograph) and ``en`` (everything else), so Korean, Japanese
kana, Arabic, Hindi, Russian and emoji labels on the English-only clipforge-tiny got no notice at all, and a list
with one ideograph among Korean, Arabic and Russian words was "written in zh" with the advice to use a Chinese model
(#2). `classify` and `similarity` pass a `LoadedModel`, whose tokenizer wrapper hid Chinese-CLIP's `unknown_fraction`,
so their [UNK] notice never came (#3). Japanese labels with kanji took the Chinese template "一张{}的照片" (#4).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.zeroshot.languages import language_of, query_notice, templates_for_labels

SUGGESTION = "(use a multilingual model, e.g. ViT-B-16-SigLIP-i18n-256:webli)"


@pytest.mark.parametrize(("text", "tag"), [
    ("一只猫", "zh"), ("a cat", "en"), ("猫 cat", "zh"),  # tests/chinese pins these three
    ("고양이, 개", "ko"), ("ねこ, いぬ", "ja"), ("三毛猫の子猫", "ja"), ("{}の写真 {}のイラスト", "ja"),
    ("قطة، كلب", "ar"), ("बिल्ली", "hi"), ("кошка, собака", "ru"), ("γάτα", "el"), ("חתול", "he"),
    ("แมวน่ารัก", "th"), ("café crème", "en"), ("ｃａｔ", "en"), ("😺, 🐶", "emoji"), ("123 !?", "en"),
    ("猫 кошка собака лиса", "ru"),  # one ideograph among Russian words is Russian, not zh
    ("a photo of a cat on the grass, 草", "en"),
    ("猫,犬,고양이,قطة,बिल्ली,кошка,😺", "mixed"),  # no script holds half of it
])
def test_language_of_names_the_main_script(text: str, tag: str) -> None:
    assert language_of(text) == tag


def test_every_script_the_model_was_not_trained_for_gets_a_notice_naming_it() -> None:
    for text, script in (("고양이, 개", "Hangul"), ("ねこ, いぬ", "Japanese"), ("قطة, كلب", "Arabic"),
                         ("बिल्ली, कुत्ता", "Devanagari"), ("кошка, собака", "Cyrillic"), ("γάτα, σκύλος", "Greek"),
                         ("חתול, כלב", "Hebrew"), ("แมว, หมา", "Thai")):
        assert query_notice(text, "clipforge-tiny", "labels") == (
            f"notice: the labels {text!r} are written in {script} script but model clipforge-tiny was trained for "
            f"en only; its scores for them are not meaningful {SUGGESTION}")
    assert query_notice("고양이", "clipforge-tiny") == (
        "notice: the query '고양이' is written in Hangul script but model clipforge-tiny was trained for en only; "
        f"its scores for this query are not meaningful {SUGGESTION}")


def test_the_chinese_notice_keeps_its_words() -> None:
    assert query_notice("猫, 狗", "clipforge-tiny", "labels") == (
        "notice: the labels '猫, 狗' are written in zh but model clipforge-tiny was trained for en only; its scores "
        "for them are not meaningful (use a zh model, e.g. clipforge-tiny-zh offline or cn-ViT-B-16)")


def test_mixed_text_names_each_script_and_suggests_no_chinese_model() -> None:
    notice = query_notice("猫,犬,고양이,قطة,बिल्ली,кошка,😺", "clipforge-tiny", "labels")
    assert notice == ("notice: the labels '猫,犬,고양이,قطة,बिल्ली,кошка,😺' are written in Han, Hangul, Arabic, "
                      "Devanagari and Cyrillic script but model clipforge-tiny was trained for en only; its scores "
                      f"for them are not meaningful {SUGGESTION}")
    # Korean with one ideograph on a Chinese model: the Hangul is what it cannot read
    assert query_notice("고양이 사진 猫", "clipforge-tiny-zh") == (
        "notice: the query '고양이 사진 猫' is written in Hangul script but model clipforge-tiny-zh was trained for "
        f"zh, en only; its scores for this query are not meaningful {SUGGESTION}")


def test_emoji_are_not_a_language() -> None:
    assert query_notice("😺, 🐶", "clipforge-tiny", "labels") == (
        "notice: the labels '😺, 🐶' are emoji, not words; model clipforge-tiny was trained for en text only, so "
        "its scores for them are not meaningful (write them as words)")
    assert query_notice("a cat 😺🐱\u200d👤", "clipforge-tiny") is None  # words with emoji beside them read


def test_scripts_a_model_reads_stay_quiet() -> None:
    assert query_notice("a cat on the grass, 草", "clipforge-tiny") is None  # mostly English: no zh notice
    assert query_notice("café crème, ｃａｔ", "clipforge-tiny") is None
    for text in ("고양이", "ねこ", "кошка", "😺", "猫"):
        assert query_notice(text, "xlm-roberta-base-ViT-B-32") is None, text  # multilingual
        assert query_notice(text, "test-xlmr-tiny") is None, text
    assert query_notice("一只猫", "clipforge-tiny-zh") is None
    assert query_notice("ねこ", type("M", (), {"languages": ("ja",), "name": "m-ja"})()) is None
    assert query_notice("собака", type("M", (), {"languages": ("uk", "en"), "name": "m-uk"})()) is None


def test_classify_on_the_cli_says_it_for_korean_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from clipforge.cli.main import main

    Image.new("RGB", (32, 32), (200, 120, 40)).save(tmp_path / "p.png")
    assert main(["classify", str(tmp_path / "p.png"), "--labels", "고양이,개", "--model", "clipforge-tiny",
                 "--device", "cpu", "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("notice: ") == 1 and ("notice: the labels '고양이, 개' are written in Hangul script but model "
                                           "clipforge-tiny was trained for en only") in err


def test_japanese_labels_keep_the_english_default_template() -> None:
    for labels in (["三毛猫の子猫", "柴犬の写真"], ["고양이", "개"], ["猫 cat dog", "犬"]):
        assert templates_for_labels("simple", labels) == "simple", labels
        assert templates_for_labels("imagenet", labels) == "imagenet", labels
        assert templates_for_labels(["a photo of a {}."], labels) == ["a photo of a {}."], labels
    assert templates_for_labels("simple", ["猫", "狗"]) == "zh-simple"  # Chinese still takes the Chinese twin
    assert templates_for_labels("imagenet", ["猫", "狗"]) == "zh-imagenet"


# -- #3: Chinese-CLIP's [UNK] notice through a LoadedModel (classify, similarity) ---------------------------------
@pytest.fixture()
def tiny_cn(monkeypatch: pytest.MonkeyPatch) -> str:
    """A Chinese-CLIP architecture small enough for a test (as tests/weights/test_s56_cn_arch_path.py registers)."""
    from clipforge.models import chinese_configs

    monkeypatch.setitem(chinese_configs.CN_TEXT_TOWERS, "test-bert-tiny", {
        "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128})
    monkeypatch.setitem(chinese_configs.CHINESE_CLIP_CONFIGS, "cn-test-tiny", {
        "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 64, "vision_patch_size": 16,
        "vision_head_width": 32, "text": "test-bert-tiny"})
    return "random:cn-test-tiny"


UNK = "notice: 25% of the {what} '猫😺, 狗' is outside the model's vocabulary ([UNK]); that part cannot be {done}"


def test_a_loaded_chinese_clip_gives_the_unk_notice(tiny_cn: str) -> None:
    from clipforge.api import load_model

    loaded = load_model(tiny_cn, "cpu")
    assert loaded.tokenizer.unknown_fraction("猫😺, 狗") == 0.25  # the wrapper shows the WordPiece's method
    assert query_notice("猫😺, 狗", loaded) == UNK.format(what="query", done="searched")
    assert query_notice("猫😺, 狗", loaded, "labels") == UNK.format(what="labels", done="read")
    assert query_notice("猫, 狗", loaded) is None


def test_classify_and_similarity_give_the_unk_notice(tiny_cn: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from clipforge.cli.main import main

    photo = str(tmp_path / "p.png")
    Image.new("RGB", (32, 32), (200, 120, 40)).save(photo)
    assert main(["classify", photo, "--labels", "猫😺,狗", "--model", tiny_cn, "--device", "cpu", "--json"]) == 0
    assert UNK.format(what="labels", done="read") in capsys.readouterr().err
    assert main(["similarity", photo, "--text", "猫😺", "--text", "狗", "--model", tiny_cn, "--device", "cpu",
                 "--json"]) == 0
    assert capsys.readouterr().err == ("notice: 33% of the query '猫😺 狗' is outside the model's vocabulary ([UNK]); "
                                       "that part cannot be searched\n")  # the texts joined: 猫 [UNK] 狗
