"""Audit 56, findings 4, 9, 11, 12 and 13: zero-shot templates, Chinese labels, and what the notices say.

4. `tag --labels "猫，狗，…"` on a clipforge-tiny-zh library defaulted to zh-imagenet, whose long templates lose
   the label to the model's 16-token context in 126 of 780 prompts (71 of 100 CIFAR-10 photos tagged right; 82
   with zh-cifar10): an unnamed default now gives way to the largest shipped set that keeps every label, said in
   one line; a named --templates is never replaced (its cut notice names that set).
9. `--templates zh-cifar` dumped 34 names; now "did you mean zh-cifar10?" as a mistyped --model gets.
11. `--labels "猫 狗 鸟"` is one label (100% on every photo) and the notice suggested English labels; now it says
    that commas separate labels and shows the split meant. The language notice called labels "the query".
12. `serve --help` says the web UI follows the browser's language.
13. The default-model notice says what clipforge-tiny is and how to get real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipforge.cli.main import main
from tests.chinese.chinese_files import write_photos

CUT_DEFAULT = ("notice: model clipforge-tiny-zh reads 16 tokens of a text, which cuts the label out of 16 of the 156 "
               "prompts of the default templates zh-imagenet; prompting with zh-cifar10 (11 templates, every label "
               "kept) instead (--templates zh-imagenet to use them anyway)")


@pytest.fixture(scope="module")
def tiny_zh_tokenizer():
    import clipforge
    from clipforge.text.families import tokenizer_of

    return tokenizer_of(clipforge.load_model("clipforge-tiny-zh", "cpu").model)


@pytest.fixture(scope="module")
def zh_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A clipforge-tiny-zh library of two photos, shared: each test tags it anew (a tag run replaces the last)."""
    root = tmp_path_factory.mktemp("zh")
    write_photos(root / "照片", ["a.png", "b.png"])
    lib = str(root / "图库")
    assert main(["index", "add", str(root / "照片"), "--library", lib, "--model", "clipforge-tiny-zh", "-q"]) == 0
    return lib


# -- 4. a default that fits the model's context ----------------------------------------------------------------


def test_default_templates_give_way_to_the_largest_set_that_keeps_every_label(tiny_zh_tokenizer) -> None:
    from clipforge.zeroshot.prompt_fit import default_templates, fitting_set, templates_cut

    assert default_templates("imagenet", ["猫", "狗"], tiny_zh_tokenizer, "clipforge-tiny-zh") == (
        "zh-cifar10", CUT_DEFAULT)
    assert templates_cut("zh-cifar10", ["猫", "狗"], tiny_zh_tokenizer).lost == 0
    # what already fits stays, in the labels' language; English labels fit imagenet's 80 in 16 tokens
    assert default_templates("simple", ["猫", "狗"], tiny_zh_tokenizer, "m") == ("zh-simple", None)
    assert default_templates("imagenet", ["cat", "dog"], tiny_zh_tokenizer, "m") == ("imagenet", None)
    # a label too long for any shipped set: nothing fits, the default stays (its cut notice says what is lost)
    assert fitting_set("zh", ["一只在沙发上睡觉的猫"], tiny_zh_tokenizer) is None
    assert default_templates("imagenet", ["一只在沙发上睡觉的猫", "狗"], tiny_zh_tokenizer, "m") == ("zh-imagenet", None)


def test_tag_takes_a_set_that_fits_unless_one_is_named(zh_library: str, capsys) -> None:
    assert main(["tag", "--labels", "猫，狗", "--library", zh_library, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["templates"] == "zh-cifar10"
    assert CUT_DEFAULT in captured.err.splitlines()
    assert "lose their label" not in captured.err  # the set used keeps them all
    # named: never replaced; the cut notice names the set that fits
    assert main(["tag", "--labels", "猫，狗", "--templates", "zh-imagenet", "--library", zh_library, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["templates"] == "zh-imagenet"
    assert "prompting with" not in captured.err
    assert ("notice: model clipforge-tiny-zh reads 16 tokens of a text: 16 of the 156 prompts lose their label to "
            "that cut (e.g. '一张干净的猫的照片。') and score every label alike; a shorter template set fits "
            "(--templates zh-cifar10)") in captured.err.splitlines()
    assert main(["tag", "--labels", "猫，狗", "--library", zh_library, "-q"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no notices


def test_classify_default_stays_zh_simple_which_fits(tmp_path: Path, capsys) -> None:
    photo = write_photos(tmp_path, ["p.png"])[0]
    assert main(["classify", str(photo), "--labels", "猫,狗", "--model", "clipforge-tiny-zh", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["templates"] == ["一张{}的照片"]
    assert "notice" not in captured.err


# -- 9. a mistyped --templates --------------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "meant"), [("zh-cifar", "zh-cifar10"), ("imagenett", "imagenet"),
                                              ("zhimagnet", "zh-imagenet")])
def test_a_mistyped_template_set_gets_did_you_mean(typed: str, meant: str) -> None:
    from clipforge.zeroshot.prompts import get_templates

    with pytest.raises(ValueError, match=rf"^unknown template set '{typed}' \(did you mean {meant}\?\); known: "):
        get_templates(typed)


def test_a_mistyped_template_set_is_one_line_in_tag(zh_library: str, capsys) -> None:
    assert main(["tag", "--labels", "猫，狗", "--templates", "zh-cifar", "--library", zh_library]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown template set 'zh-cifar' (did you mean zh-cifar10?); known: ")
    assert err.count("\n") == 1


# -- 11. labels separated by spaces, and what the notices call them ------------------------------------------------


def test_label_notices() -> None:
    from clipforge.zeroshot.label_notices import label_notice

    assert label_notice(["猫 狗 鸟"]) == (
        "notice: one label ('猫 狗 鸟'): a softmax over one label is always 100%; labels are separated by commas "
        '(",", "，" or "、"), not spaces: --labels "猫,狗,鸟" gives 3')
    assert label_notice(["猫\u3000狗"], every_photo=True) == (  # an IME's full-width space
        "notice: one label ('猫\\u3000狗'): a softmax over one label is always 100%, so every photo gets it; labels "
        'are separated by commas (",", "，" or "、"), not spaces: --labels "猫,狗" gives 2')
    assert label_notice(["猫"]).endswith('give the labels it competes with, e.g. --labels "猫,狗,汽车"')
    assert label_notice(["cat"]).endswith('give the labels it competes with, e.g. --labels "cat,dog,car"')
    assert label_notice(["猫 狗", "鸟"]) == (
        "notice: label '猫 狗' has spaces between Chinese words; labels are separated by commas "
        '(",", "，" or "、"), not spaces: --labels "猫,狗,鸟" gives 3')
    assert label_notice(["猫 狗"], softmax=False).startswith("notice: label '猫 狗' has spaces")  # SigLIP: no 100%
    assert label_notice(["golden retriever", "猫"]) is None and label_notice(["iPhone 手机", "猫"]) is None


def test_classify_says_how_labels_are_separated(tmp_path: Path, capsys) -> None:
    photo = write_photos(tmp_path, ["p.png"])[0]
    assert main(["classify", str(photo), "--labels", "猫 狗 鸟", "--model", "clipforge-tiny-zh"]) == 0
    err = capsys.readouterr().err
    assert ('notice: one label (\'猫 狗 鸟\'): a softmax over one label is always 100%; labels are separated by '
            'commas (",", "，" or "、"), not spaces: --labels "猫,狗,鸟" gives 3') in err.splitlines()
    assert "cat,dog" not in err
    assert main(["classify", str(photo), "--labels", "猫 狗 鸟", "--model", "clipforge-tiny-zh", "-q"]) == 0
    assert capsys.readouterr().err == ""  # --quiet hides notices, this one too


def test_tag_calls_the_labels_labels(tmp_path: Path, capsys) -> None:
    write_photos(tmp_path / "photos", ["a.png"])
    lib = str(tmp_path / "lib")
    assert main(["index", "add", str(tmp_path / "photos"), "--library", lib, "--model", "clipforge-tiny", "-q"]) == 0
    capsys.readouterr()
    assert main(["tag", "--labels", "猫 狗 鸟", "--library", lib]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert ("notice: the labels '猫 狗 鸟' are written in zh but model clipforge-tiny was trained for en only; its "
            "scores for them are not meaningful (use a zh model, e.g. clipforge-tiny-zh offline or cn-ViT-B-16)") \
        in lines
    assert ('notice: one label (\'猫 狗 鸟\'): a softmax over one label is always 100%, so every photo gets it; '
            'labels are separated by commas (",", "，" or "、"), not spaces: --labels "猫,狗,鸟" gives 3') in lines


# -- 12, 13. what the web UI speaks; what the default model is ----------------------------------------------------


def test_serve_help_says_the_ui_follows_the_browser_language(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "its words follow the browser's language: Chinese (zh-CN / zh-TW) for a Chinese browser, else English" \
        in text


def test_the_default_model_notice_says_what_the_model_is(monkeypatch) -> None:
    from clipforge import api

    monkeypatch.setattr("clipforge.weights.is_cached", lambda name, root=None: False)
    _, notice = api.default_model_spec()
    assert notice is not None
    assert "'clipforge-tiny', a tiny demo model trained on 32x32 CIFAR-10 images: results on real photos are rough" \
        in notice
    assert "--model ViT-B/32 downloads the real weights" in notice
